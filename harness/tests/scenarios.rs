//! One trial per matrix job of every scenario in `scenarios/`, through libtest-mimic:
//!
//!   cargo test --test scenarios -- --list
//!   cargo test --test scenarios -- dry-run::release-1.20/docker/bridge
//!
//! `dry-run::<job>` runs the whole engine with actions that only say what they would do, and
//! checks every artifact it writes.
//!
//! `cluster::<job>` runs the job for real: docker node containers, kubeadm, the CNI, smoke
//! checks and a conformance shard, and checks the JUnit it writes. Jobs that cannot run on a
//! machine without a registry or network are ignored with the reason printed:
//! weave and calico pods (their images cannot be obtained), release binaries that would need
//! a download (1.6, master), and providers other than docker.
//! `cluster-offline::<job>` runs the weave and calico jobs anyway and asserts the honest
//! outcome here: the cni step fails within seconds naming the missing image.
//! `in-cluster::release-1.20/docker/bridge` runs conformance the sonobuoy/hydrophone way: the
//! conformance image (built here, from e2e.test packed into a test tarball first) as a Pod,
//! results read back through the pod log.
//! `regression::kubeadm-1.6.0-no-cni` never configures a CNI and asserts the run fails at
//! the readiness step within its deadline, naming NetworkPluginNotReady.
//!
//! `ha::release-1.20/docker/bridge` and `upgrade::release-1.20/docker/bridge` read one run of
//! `fixtures/scenarios/cluster/ha.yaml` (an HA cluster upgraded one hop, then losing a control
//! plane); `upgrade::broken-hop` expects a hop missing its kube-proxy image to be stopped by
//! its gate; `skew::release-1.20/docker/bridge` reads the `release-mirror::` run, whose worker
//! runs one version behind its control plane.
//! `external-etcd::release-1.20/docker/bridge` puts etcd on three nodes of its own.
//! `fake-kind::bring-up` runs the kind provider against a recording fake `kind`.
//!
//! Cluster trials run one at a time; artifacts stay in `artifacts/trials/`.

mod common;
#[path = "scenarios/fake_kind.rs"]
mod fake_kind;
#[path = "scenarios/rerun.rs"]
mod rerun;
#[path = "scenarios/soak.rs"]
mod soak;
#[path = "scenarios/standins.rs"]
mod standins;

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use shakedown::engine::event::StepOutcome;
use shakedown::engine::Stop;
use shakedown::run::Run;
use shakedown::{matrix, scenario};
use std::path::PathBuf;
use std::sync::Arc;

/// Ctrl-C or SIGTERM during a cluster trial stops its run the way it stops a scenario run:
/// the running step is terminated, cleanup steps still run, nothing is left behind.
static STOP: std::sync::OnceLock<Stop> = std::sync::OnceLock::new();
static RUNNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn handle_signals() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let Ok(mut signals) = shakedown::engine::StopSignals::new() else {
                return;
            };
            loop {
                let name = signals.next().await;
                if RUNNING.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                    remove_kept();
                    std::process::exit(130);
                }
                eprintln!("{name}: stopping the cluster trial; its cleanup steps still run");
                STOP.get_or_init(Stop::default)
                    .stop(format!("interrupted by {name}"), true);
            }
        });
    });
}

fn main() {
    handle_signals();
    let args = Arguments::from_args();
    let catalog = common::catalog();
    let mut trials = Vec::new();
    let docker = docker_answers();
    let mut skipped = Vec::new();
    for file in scenario::files_in(&common::root().join("scenarios")).expect("read scenarios/") {
        let s =
            scenario::load(&file, &catalog, scenario::today()).unwrap_or_else(|e| panic!("{e}"));
        for job in matrix::expand(&s) {
            let (f, job_name) = (file.clone(), job.name.clone());
            trials.push(
                Trial::test(format!("dry-run::{}", job.name), move || {
                    dry_run(f, job_name)
                })
                .with_kind("dry-run"),
            );
            let why = docker.clone().err().or_else(|| not_runnable_here(&s, &job));
            let offline = catalog
                .get(&job.cni)
                .is_some_and(|v| v.offline_limitation.is_some());
            // What an offline cell proves (the CNI's manifest dry-run by a real API server,
            // then a fast failure naming the missing images) does not depend on the
            // provider, so it runs on docker's cells only; podman's bring-up is proven by
            // its own `cluster::` cell. This keeps `.ci/run` within its budget.
            if offline && job.provider != scenario::ProviderKind::Docker {
                continue;
            }
            let name = if offline {
                format!("cluster-offline::{}", job.name)
            } else {
                format!("cluster::{}", job.name)
            };
            if let Some(w) = &why {
                skipped.push(format!("{name}: {w}"));
            }
            let (f, job_name) = (file.clone(), job.name.clone());
            let docker_gone = docker.is_err();
            trials.push(
                Trial::ignorable_test(name, move || match why {
                    Some(w) if docker_gone => skip_or_fail(w),
                    Some(w) => Ok(Completion::ignored_with(w)),
                    None if offline => cluster_offline(f, job_name).map(|()| Completion::Completed),
                    None => cluster(f, job_name).map(|()| Completion::Completed),
                })
                .with_kind("cluster"),
            );
        }
    }
    // Trials that need docker but no particular scenario job.
    let docker_trials: [(&str, TrialFn); 23] = [
        ("soak::release-1.20/docker/bridge", soak::short_soak),
        ("soak::leak-is-named", soak::leak_is_named),
        // Judges the storage step of the main job's run, which cluster:: makes or reuses.
        ("storage::release-1.20/docker/bridge", storage),
        ("cluster::release-1.20-dockershim/docker/bridge", dockershim),
        ("e2e-images::release-1.20/docker/bridge", e2e_images),
        ("ha::release-1.20/docker/bridge", ha),
        ("external-etcd::release-1.20/docker/bridge", external_etcd),
        ("upgrade::release-1.20/docker/bridge", upgrade),
        ("upgrade::broken-hop", upgrade_broken_hop),
        ("skew::release-1.20/docker/bridge", skew),
        (
            "release-mirror::release-1.20/docker/bridge",
            standins::release_mirror,
        ),
        ("release-mirror::bad-checksum", standins::bad_checksum),
        ("release-mirror::unknown-marker", standins::unknown_marker),
        ("registry::release-1.20/docker/bridge", standins::registry),
        // Adjacent: existing:: attaches to the cluster in-cluster:: kept.
        (IN_CLUSTER_TRIAL, in_cluster),
        ("existing::release-1.20", existing_cluster),
        ("regression::kubeadm-1.6.0-no-cni", no_cni_regression),
        ("interrupt::bench-bring-up", bench_interrupted),
        ("fake-kind::bring-up", fake_kind::bring_up),
        // Adjacent: the report test renders the re-run trial's two runs.
        ("rerun::release-1.20/docker/bridge", rerun::rerun),
        ("report::chromium", rerun::report),
        // Adjacent: both judge the one run of the mixed VM cluster.
        ("vm::release-1.20/mixed/bridge", vm_mixed),
        ("vm::node-reboot", vm_node_reboot),
    ];
    for (name, f) in docker_trials {
        let why = docker.clone().err().or_else(|| {
            if name.starts_with("report::") {
                return rerun::no_browser();
            }
            name.starts_with("vm::")
                .then(|| {
                    shakedown::provider::unavailable_here(shakedown::scenario::ProviderKind::Vm)
                })
                .flatten()
        });
        if let Some(w) = &why {
            skipped.push(format!("{name}: {w}"));
        }
        trials.push(
            Trial::ignorable_test(name, move || match why {
                Some(w) => skip_or_fail(w),
                None => f().map(|()| Completion::Completed),
            })
            .with_kind("cluster"),
        );
    }
    if !args.list && !skipped.is_empty() {
        eprintln!("cluster trials that will be skipped, and why:");
        for s in &skipped {
            eprintln!("  {s}");
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    remove_kept();
    conclusion.exit();
}

type TrialFn = fn() -> Result<(), Failed>;

/// `cluster::release-1.20-dockershim/docker/bridge`: the docker runtime (kubelet's
/// dockershim, what 1.6-1.9 can only use), checked as every cluster job is: node checks,
/// smoke and a conformance shard.
fn dockershim() -> Result<(), Failed> {
    cluster(
        common::root().join("fixtures/scenarios/cluster/release-1.20-dockershim.yaml"),
        "release-1.20-dockershim/docker/bridge".into(),
    )
}

/// `e2e-images::release-1.20/docker/bridge`: one conformance spec for each e2e image built
/// here that a v1.20 conformance spec runs (`fixtures/scenarios/cluster/e2e-images.yaml`).
/// The images are built from Debian packages and the source tree, loaded into the node,
/// and every selected spec passes; none is left unsupported for a missing image.
/// jessie-dnsutils is built and loaded too, though only the DNS specs (which also need
/// cluster DNS) use it.
fn e2e_images() -> Result<(), Failed> {
    let job = "e2e-images/docker/bridge";
    let dir = trial_dir("e2e-images");
    let file = common::root().join("fixtures/scenarios/cluster/e2e-images.yaml");
    let summary = real_run(&file, job, &dir, None, None)?;
    let junit = dir.join(format!("junit_{}.xml", summary.jobs[0].context));
    let suite = &common::read_junit(&junit)[0];
    let built = suite.property("conformance.e2e-images").unwrap_or_default();
    eprintln!("  e2e images loaded: {built}");
    for image in [
        "httpd:2.4.38-alpine",
        "httpd:2.4.39-alpine",
        "nginx:1.14-alpine",
        "nautilus:1.0",
        "nonroot:1.0",
        "nonewprivs:1.0",
        "sample-apiserver:1.17",
        "etcd:3.4.13-0",
        "jessie-dnsutils:1.0",
    ] {
        check(
            built.split(' ').any(|b| b.ends_with(&format!("/{image}"))),
            || format!("{image} not among the loaded e2e images: {built:?}"),
        )?;
    }
    let count = |k: &str| suite.property(&format!("conformance.{k}")).unwrap_or("?");
    eprintln!(
        "  conformance: selected {}, unsupported {}, passed {}, failed {}",
        count("selected"),
        count("unsupported"),
        count("passed"),
        count("failed")
    );
    check(
        (count("selected"), count("unsupported"), count("passed")) == ("6", "0", "6"),
        || "want 6 selected, 0 unsupported, 6 passed".into(),
    )?;
    for spec in [
        "RollingUpdateDeployment should delete old pods",
        "canary updates and phased rolling updates",
        "Pods should be updated",
        "Update Demo should create and stop a replication controller",
        "AllowPrivilegeEscalation should not allow privilege escalation when false",
        "Should be able to support the 1.17 Sample API Server using the current Aggregator",
    ] {
        let c = suite.cases.iter().find(|c| c.name.contains(spec));
        check(c.is_some_and(|c| c.result == "passed"), || {
            format!("spec {spec:?}: {:?}", c.map(|c| (&c.result, &c.text)))
        })?;
    }
    check(summary.exit_code == 0, || {
        format!("run failed with exit {}", summary.exit_code)
    })
}

/// `ha::release-1.20/docker/bridge`: three control planes behind haproxy and a worker.
/// The HA gate's testcases pass (stale watches, when found, only after the scenario's
/// remedy), smoke passes through the load balancer, and stopping a control plane leaves
/// the API unavailable no longer than the scenario allows; the figures are printed.
fn ha() -> Result<(), Failed> {
    let (summary, dir) = ha_run()?;
    let job = &summary.jobs[0];
    let suite = &common::read_junit(&dir.join(format!("junit_{}.xml", job.context)))[0];
    cases_are(
        suite,
        "passed",
        [
            "init",
            "join",
            "join/ha/load-balancer-sees-every-api-server",
            "join/ha/etcd-members-healthy",
            "etcd-backup",
            "cni",
            "smoke/nodes-ready",
            "smoke/pod-to-pod-across-nodes",
            "smoke/service-clusterip",
            "control-plane-loss",
        ]
        .map(String::from),
    )?;
    let act = suite.case("join/ha/controllers-act-on-new-objects");
    if act.result == "skipped" {
        // Found stale watches: then only the remedy's re-check may make the gate pass.
        let again = suite.case("join/ha/controllers-act-after-api-server-restart");
        check(again.result == "passed", || {
            format!("after the remedy: {} {}", again.result, again.text)
        })?;
        eprintln!("  HA gate: {}", act.message);
    } else {
        check(act.result == "passed", || {
            format!("controllers-act: {} {}", act.result, act.text)
        })?;
    }
    check(summary.exit_code == 0, || {
        format!("expected exit 0, got {}", summary.exit_code)
    })?;
    // haproxy's own log is exported beside the nodes'.
    let haproxy = dir.join("jobs/docker-bridge/logs/load-balancer/haproxy.log");
    check(haproxy.is_file(), || {
        format!("{} was not exported", haproxy.display())
    })?;
    // The backup's figures and the restore drill's key counts.
    let log = std::fs::read_to_string(dir.join("jobs/docker-bridge/05-etcd-backup.log"))?;
    for what in ["snapshot saved in", "restore drill in"] {
        let line = log
            .lines()
            .find(|l| l.contains(what))
            .ok_or_else(|| format!("the etcd-backup log has no `{what}` line"))?;
        eprintln!("  {line}");
    }
    // The disruption figures, as the step measured them.
    let log = std::fs::read_to_string(dir.join("jobs/docker-bridge/09-control-plane-loss.log"))?;
    let figures_line = log
        .lines()
        .find(|l| l.contains("longest unavailability"))
        .ok_or("the control-plane-loss log has no unavailability figure")?;
    eprintln!("  {figures_line}");
    // Probing every 100 ms over a window of at least 40 s gives hundreds of probes, and the
    // step saw them answered.
    let (probes, failed, _) = figures(figures_line)?;
    check(probes >= 100.0, || {
        format!("only {probes} probes: {figures_line}")
    })?;
    check(failed < probes, || {
        format!("every probe failed: {figures_line}")
    })?;
    check(figures_line.contains("answering at the end: true"), || {
        figures_line.to_string()
    })?;
    Ok(())
}

/// `external-etcd::release-1.20/docker/bridge`: two control planes and a worker use a
/// three-member etcd on nodes of its own, made with `kubeadm init phase` (TLS throughout).
/// The HA gate counts the external members; each API server names all three and no
/// control plane runs an etcd; the backup and its drill ran on the first etcd node; losing
/// the last member leaves a quorum of two and the API within `disruption.api_max`.
fn external_etcd() -> Result<(), Failed> {
    let (summary, dir, suite) = fixture_trial(
        "external-etcd.yaml",
        "external-etcd/docker/bridge",
        "external-etcd",
    )?;
    let suite = &suite;
    cases_are(
        suite,
        "passed",
        [
            "up",
            "etcd",
            "init",
            "join",
            "join/ha/load-balancer-sees-every-api-server",
            "join/ha/etcd-members-healthy",
            "etcd-backup",
            "cni",
            "smoke/nodes-ready",
            "smoke/pod-to-pod-across-nodes",
            "smoke/service-clusterip",
            "etcd-member-loss",
        ]
        .map(String::from),
    )?;
    check(summary.exit_code == 0, || {
        format!("expected exit 0, got {}", summary.exit_code)
    })?;
    let jobdir = dir.join("jobs/docker-bridge");
    // The API through the load balancer while the last member stopped, and the quorum left.
    let loss = std::fs::read_to_string(jobdir.join("09-etcd-member-loss.log"))?;
    for what in ["longest unavailability", "member(s) healthy"] {
        let line = loss
            .lines()
            .find(|l| l.contains(what))
            .ok_or_else(|| format!("the etcd-member-loss log has no `{what}` line"))?;
        eprintln!("  {line}");
    }
    check(loss.contains("2 member(s) healthy, 1 not"), || {
        "etcd did not report two healthy members and one lost".into()
    })?;
    let etcd_log = std::fs::read_to_string(jobdir.join("03-etcd.log"))?;
    let healthy = etcd_log
        .lines()
        .find(|l| l.contains("every member started and healthy"))
        .ok_or("the etcd-up log has no health line")?;
    eprintln!("  {healthy}");
    let members = healthy.matches("-etcd").count();
    check(members == 3, || {
        format!("{members} members named: {healthy}")
    })?;
    // The exported static pod manifests: each control plane's API server names the three
    // members over TLS, and none runs an etcd of its own.
    let nodes = jobdir.join("logs/nodes");
    let mut cps = 0;
    let mut etcd_manifests = 0;
    for entry in std::fs::read_dir(&nodes)? {
        let node = entry?.path();
        let name = node
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let manifests = node.join("manifests");
        if name.contains("-cp") {
            cps += 1;
            check(!manifests.join("etcd.yaml").exists(), || {
                format!("{name} runs a stacked etcd")
            })?;
            let api = std::fs::read_to_string(manifests.join("kube-apiserver.yaml"))?;
            let servers = api
                .lines()
                .find_map(|l| l.trim().strip_prefix("- --etcd-servers="))
                .ok_or_else(|| format!("{name}'s API server names no etcd servers"))?;
            eprintln!("  {name}: --etcd-servers={servers}");
            let urls: Vec<&str> = servers.split(',').collect();
            check(
                urls.len() == 3 && urls.iter().all(|u| u.starts_with("https://")),
                || format!("{name}: --etcd-servers={servers}"),
            )?;
        } else if name.contains("-etcd") && manifests.join("etcd.yaml").is_file() {
            etcd_manifests += 1;
        }
    }
    check(cps == 2 && etcd_manifests == 3, || {
        format!("{cps} control planes and {etcd_manifests} etcd manifests exported")
    })?;
    let backup = std::fs::read_to_string(jobdir.join("06-etcd-backup.log"))?;
    let saved = backup
        .lines()
        .find(|l| l.contains("snapshot saved in"))
        .ok_or("the etcd-backup log has no snapshot line")?;
    eprintln!("  {saved}");
    check(saved.contains("-etcd1 only"), || saved.to_string())?;
    Ok(())
}

/// The one run of `fixtures/scenarios/cluster/ha.yaml` that the `ha::` and `upgrade::`
/// trials both read: an HA cluster, upgraded one hop, then losing a control plane. Made by
/// whichever trial comes first.
fn ha_run() -> Result<&'static (shakedown::engine::RunSummary, PathBuf), Failed> {
    static RUN: SharedRun = std::sync::OnceLock::new();
    shared_run(&RUN, "HA", || {
        let dir = trial_dir("ha-release-1.20");
        let file = common::root().join("fixtures/scenarios/cluster/ha.yaml");
        real_run(&file, "ha/docker/bridge", &dir, None, None).map(|s| (s, dir))
    })
}

/// One run several trials judge, made by whichever trial comes first.
type SharedRun = std::sync::OnceLock<Result<(shakedown::engine::RunSummary, PathBuf), String>>;

/// The run in `cell`, made by `run` the first time.
fn shared_run(
    cell: &'static SharedRun,
    what: &str,
    run: impl FnOnce() -> Result<(shakedown::engine::RunSummary, PathBuf), Failed>,
) -> Result<&'static (shakedown::engine::RunSummary, PathBuf), Failed> {
    cell.get_or_init(|| run().map_err(|e| format!("the shared {what} run failed: {e:?}")))
        .as_ref()
        .map_err(|e| e.clone().into())
}

/// The `N probe(s), F failed, longest unavailability X.Ys` figures of a disruption line.
fn figures(line: &str) -> Result<(f64, f64, f64), Failed> {
    let number_before = |what: &str| -> Option<f64> {
        let i = line.find(what)?;
        line[..i]
            .split_whitespace()
            .last()?
            .trim_end_matches('s')
            .parse()
            .ok()
    };
    let n = number_before(" probe(s)").ok_or("no probe count")?;
    let failed = number_before(" failed").ok_or("no failed count")?;
    let longest = line
        .split("longest unavailability ")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|x| x.parse().ok())
        .ok_or("no longest unavailability")?;
    Ok((n, failed, longest))
}

const HOP: &str = "upgrade-v1.20.3-shakedown.1";

/// `upgrade::release-1.20/docker/bridge`: the HA cluster goes from v1.20.2 to
/// v1.20.3-shakedown.1 in one hop. Every part of the hop is its own passed testcase (the
/// backup and its drill, staging, plan, apply, each node, each gate), the API servers
/// report the new version, and the API and Service disruption stayed within the
/// scenario's thresholds; the figures are printed.
fn upgrade() -> Result<(), Failed> {
    let (summary, dir) = ha_run()?;
    let job = &summary.jobs[0];
    let suite = &common::read_junit(&dir.join(format!("junit_{}.xml", job.context)))[0];
    let parts = [
        "etcd-backup",
        "stage",
        "kubeadm-upgrade-plan",
        "kubeadm-upgrade-apply",
        "gate/static-pods-at-target",
        "gate/nodes-ready-at-target",
        "gate/kube-system-ready",
        "gate/etcd-healthy",
        "gate/smoke",
        "disruption/workload-ready",
        "disruption/api",
        "disruption/service",
    ];
    let mut names: Vec<String> = parts.iter().map(|p| format!("{HOP}/{p}")).collect();
    names.push(HOP.to_string());
    cases_are(suite, "passed", names)?;
    // Each node, one testcase each: three control planes and the worker.
    let nodes: Vec<&common::Case> = suite
        .cases
        .iter()
        .filter(|c| c.name.contains(&format!("{HOP}/node/")))
        .collect();
    check(nodes.len() == 4, || {
        format!("{} node testcases, want 4", nodes.len())
    })?;
    for c in &nodes {
        check(c.result == "passed", || {
            format!("{}: {} {}", c.name, c.result, c.text)
        })?;
    }
    let log = std::fs::read_to_string(dir.join(format!("jobs/docker-bridge/08-{HOP}.log")))?;
    check(
        log.contains("every API server reports v1.20.3-shakedown.1 when asked directly"),
        || "no API server was seen reporting the new version".to_string(),
    )?;
    for what in ["API", "Service"] {
        let line = log
            .lines()
            .find(|l| {
                l.contains("disruption v1.20.2 → v1.20.3-shakedown.1")
                    && l.contains(&format!(": {what} "))
            })
            .ok_or_else(|| format!("the upgrade log has no {what} disruption line"))?;
        eprintln!("  {line}");
        let (n, failed, _) = figures(line)?;
        check(n >= 30.0, || format!("only {n} probes: {line}"))?;
        check(failed < n, || format!("every probe failed: {line}"))?;
        check(line.contains("answering at the end: true"), || {
            line.to_string()
        })?;
    }
    let apply = suite.case(&format!("{HOP}/kubeadm-upgrade-apply"));
    eprintln!("  kubeadm upgrade apply: {:?}", apply.classname);
    Ok(())
}

/// `upgrade::broken-hop`: a hop whose kube-proxy image is missing from the nodes is stopped
/// by its gate within its deadline, naming the pod; the disruption figures up to that
/// point are written; the run exits 1 (the release failed, not the machine).
fn upgrade_broken_hop() -> Result<(), Failed> {
    let dir = trial_dir("upgrade-broken");
    let file = common::root().join("fixtures/scenarios/cluster/upgrade-broken.yaml");
    let summary = real_run(&file, "upgrade-broken/docker/bridge", &dir, None, None)?;
    check(summary.exit_code == 1, || {
        format!("expected exit 1, got {}", summary.exit_code)
    })?;
    let job = &summary.jobs[0];
    let suite = &common::read_junit(&dir.join(format!("junit_{}.xml", job.context)))[0];
    cases_are(
        suite,
        "passed",
        [
            "etcd-backup",
            "stage",
            "kubeadm-upgrade-plan",
            "kubeadm-upgrade-apply",
            "gate/static-pods-at-target",
            "gate/nodes-ready-at-target",
        ]
        .map(|p| format!("{HOP}/{p}")),
    )?;
    let gate = suite.case(&format!("{HOP}/gate/kube-system-ready"));
    check(gate.result == "failure" || gate.result == "failed", || {
        format!("kube-system-ready: {} {}", gate.result, gate.text)
    })?;
    check(
        gate.text.contains("kube-proxy") || gate.message.contains("kube-proxy"),
        || {
            format!(
                "the gate's failure does not name kube-proxy: {} {}",
                gate.message, gate.text
            )
        },
    )?;
    eprintln!(
        "  gate: {}",
        gate.message.lines().next().unwrap_or_default()
    );
    cases_are(
        suite,
        "skipped",
        ["gate/etcd-healthy", "gate/smoke"].map(|later| format!("{HOP}/{later}")),
    )?;
    // Not the deadline: the gate itself stopped the hop.
    let step = suite.case(HOP);
    check(
        !step.text.contains("deadline") && !step.message.contains("deadline"),
        || format!("the hop ran into its deadline: {}", step.message),
    )?;
    for p in ["disruption/api", "disruption/service"] {
        let c = suite.case(&format!("{HOP}/{p}"));
        check(c.result != "skipped", || {
            format!("{p} was not written: {}", c.text)
        })?;
    }
    let log = std::fs::read_to_string(dir.join(format!("jobs/docker-bridge/06-{HOP}.log")))?;
    let line = log
        .lines()
        .find(|l| l.contains(": API ") && l.contains("longest unavailability"))
        .ok_or("no API disruption figures for the broken hop")?;
    eprintln!("  {line}");
    Ok(())
}

/// `skew::release-1.20/docker/bridge`: reads the release-mirror run, whose control plane
/// runs v1.20.3-shakedown.1 and whose worker runs v1.20.2, one patch behind, as the skew
/// policy allows (a kubelet may be older than the API server, never newer; the pairing is
/// checked when the scenario loads, and `fixtures/scenarios/bad/skew-kubelet-newer.yaml` is
/// refused). Smoke passed across the two versions, and the API saw each kubelet at its own.
fn skew() -> Result<(), Failed> {
    let run = standins::mirror_run()?;
    cases_are(
        &run.suite,
        "passed",
        [
            "up",
            "init",
            "join",
            "cni",
            "smoke/nodes-ready",
            "smoke/pod-to-pod-across-nodes",
            "smoke/service-clusterip",
        ]
        .map(String::from),
    )?;
    let kubelets = kubelet_versions(&run.dir.join("jobs/docker-bridge"))?;
    eprintln!("  kubelets (control plane?, version): {kubelets:?}");
    check(
        kubelets
            == [
                (false, "v1.20.2".to_string()),
                (true, "v1.20.3-shakedown.1".to_string()),
            ],
        || format!("kubelet versions {kubelets:?}"),
    )?;
    Ok(())
}

/// Runs `fixtures/scenarios/cluster/<fixture>`'s job into `artifacts/trials/<trial>`: the run's
/// summary, its artifacts folder and its JUnit suite.
fn fixture_trial(
    fixture: &str,
    job: &str,
    trial: &str,
) -> Result<(shakedown::engine::RunSummary, PathBuf, common::Suite), Failed> {
    let dir = trial_dir(trial);
    let file = common::root()
        .join("fixtures/scenarios/cluster")
        .join(fixture);
    let summary = real_run(&file, job, &dir, None, None)?;
    let junit = dir.join(format!("junit_{}.xml", summary.jobs[0].context));
    let suite = common::read_junit(&junit).remove(0);
    Ok((summary, dir, suite))
}

/// Each node's kubelet version as the API reported it in the exported `nodes.yaml`: (is a
/// control plane, version), sorted.
fn kubelet_versions(job_dir: &std::path::Path) -> Result<Vec<(bool, String)>, Failed> {
    let nodes: Vec<k8s_openapi::api::core::v1::Node> = serde_yaml::from_str(
        &std::fs::read_to_string(job_dir.join("logs/cluster/nodes.yaml"))?,
    )?;
    let mut v: Vec<(bool, String)> = nodes
        .iter()
        .map(|n| {
            let cp = n
                .metadata
                .name
                .as_deref()
                .unwrap_or_default()
                .contains("-cp");
            let version = n
                .status
                .as_ref()
                .and_then(|s| s.node_info.as_ref())
                .map(|i| i.kubelet_version.clone())
                .unwrap_or_default();
            (cp, version)
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Each named testcase (matched by suffix) has this result; the failure names the case and
/// what it said.
fn cases_are(
    suite: &common::Suite,
    result: &str,
    names: impl IntoIterator<Item = String>,
) -> Result<(), Failed> {
    for name in names {
        let c = suite.case(&name);
        check(c.result == result, || {
            format!(
                "{name}: {} (want {result}) {} {}",
                c.result, c.message, c.text
            )
        })?;
    }
    Ok(())
}

/// The step of a job's results with this name.
fn step_named<'a>(
    steps: &'a [shakedown::engine::event::StepResult],
    name: &str,
) -> Result<&'a shakedown::engine::event::StepResult, Failed> {
    steps
        .iter()
        .find(|s| s.step == name)
        .ok_or_else(|| format!("no {name} step").into())
}

/// Without a docker daemon a cluster trial cannot run. Locally it is ignored with the
/// reason; under `CI=true` it fails, so CI can never go green with no cluster coverage.
fn skip_or_fail(why: String) -> Result<Completion, Failed> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        Err(format!("CI=true and this cluster trial cannot run: {why}").into())
    } else {
        Ok(Completion::ignored_with(why))
    }
}

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err(what().into())
    }
}

fn dry_run(file: PathBuf, job_name: String) -> Result<(), Failed> {
    let rt = tokio::runtime::Runtime::new()?;
    let dir = tempfile::tempdir()?;
    let catalog = common::catalog();
    let s = scenario::load(&file, &catalog, scenario::today()).map_err(|e| e.to_string())?;
    let jobs: Vec<_> = matrix::expand(&s)
        .into_iter()
        .filter(|j| j.name == job_name)
        .collect();
    let job = jobs[0].clone();
    // Run just this job, through the same path a real run takes.
    let one = dir.path().join(file.file_name().unwrap());
    let text = std::fs::read_to_string(&file)?;
    std::fs::write(&one, text)?;
    // A spec duration table the scenario names sits beside it, at the same relative path.
    if let Some(d) = &s.scenario.conformance.durations {
        let to = dir.path().join(d);
        std::fs::create_dir_all(to.parent().unwrap_or(dir.path()))?;
        std::fs::copy(
            file.parent().unwrap_or(std::path::Path::new(".")).join(d),
            to,
        )?;
    }
    let summary = rt.block_on(async {
        let s = scenario::load(&one, &catalog, scenario::today()).unwrap();
        let p = shakedown::plan::build(&s, vec![job.clone()], None);
        let settings = shakedown::actions::RunSettings {
            run_id: "dry".into(),
            root: common::root(),
            artifacts: dir.path().join("artifacts"),
            cache_dir: dir.path().join("cache"),
            ..Default::default()
        };
        Run::new(p, Arc::new(s), Arc::new(common::catalog()), settings)
            .dry_run(true)
            .reporters(common::file_reporters(&dir.path().join("artifacts")))
            .execute()
            .await
    });
    let art = dir.path().join("artifacts");
    check(summary.exit_code == 0, || {
        format!("dry run exit {}", summary.exit_code)
    })?;
    let j = &summary.jobs[0];
    for st in &j.steps {
        let ok = match &st.outcome {
            StepOutcome::DryRun { would } => !would.is_empty(),
            StepOutcome::Skipped { reason } => reason.starts_with("conformance:"),
            _ => false,
        };
        check(ok, || {
            format!("step {} did not dry-run: {:?}", st.step, st.outcome)
        })?;
        let log = art.join(st.log.as_ref().ok_or("no step log")?);
        let text = std::fs::read_to_string(&log)?;
        check(text.contains("would: "), || {
            format!("{} lacks the would-lines", log.display())
        })?;
    }
    let junit = art.join(format!("junit_{}.xml", job.context()));
    let suites = common::read_junit(&junit);
    check(
        suites.len() == 1 && suites[0].tests == j.steps.len(),
        || format!("{} does not hold one case per step", junit.display()),
    )?;
    check(suites[0].property("dry-run") == Some("true"), || {
        "dry-run property missing".into()
    })?;
    // Nothing ran, so nothing passed.
    for c in &suites[0].cases {
        check(c.result == "skipped", || {
            format!("dry-run case {} is {}, not skipped", c.name, c.result)
        })?;
    }
    check(
        suites[0]
            .cases
            .iter()
            .any(|c| c.text.starts_with("dry run: not executed")),
        || "no dry-run case says it was not executed".into(),
    )?;
    for f in [
        "started.json",
        "finished.json",
        "summary.json",
        "build-log.txt",
    ] {
        check(art.join(f).is_file(), || format!("{f} missing"))?;
    }
    let cov = summary.coverage_lines().join("\n");
    check(cov.contains("init: DRY-RUN"), || {
        format!("coverage does not say dry run: {cov}")
    })?;
    Ok(())
}

/// Ok when a docker daemon answers; otherwise the reason cluster trials are skipped.
fn docker_answers() -> Result<(), String> {
    let out = std::process::Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "no docker daemon answers (`docker info`: {}); run `cargo run -- host setup` first",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or("failed")
        )),
        Err(e) => Err(format!(
            "no docker client ({e}); run `cargo run -- host setup` first"
        )),
    }
}

/// Why this job cannot run for real on this machine, if it cannot.
fn not_runnable_here(s: &scenario::LoadedScenario, job: &matrix::Job) -> Option<String> {
    if let Some(w) = shakedown::provider::unavailable_here(job.provider) {
        return Some(w);
    }
    match s.scenario.kubernetes.source {
        scenario::SourceKind::DebianSource | scenario::SourceKind::Binaries => None,
        scenario::SourceKind::Release => Some(format!(
            "Kubernetes {} comes from the release bucket, which this machine cannot reach (tests never contact dl.k8s.io); `release-mirror::` trials prove `source: release` against a bucket on 127.0.0.1",
            s.version_label()
        )),
    }
}

/// One real cluster at a time: the machine has two cores.
static CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn trial_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::root().join("artifacts"));
    let d = base.join("trials").join(name.replace('/', "-"));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn real_run(
    file: &std::path::Path,
    job_name: &str,
    artifacts: &std::path::Path,
    shard: Option<(u32, u32)>,
    e2e_binaries: Option<PathBuf>,
) -> Result<shakedown::engine::RunSummary, Failed> {
    real_run_with(
        file,
        job_name,
        artifacts,
        Tweaks {
            shard,
            e2e_binaries,
            ..Default::default()
        },
    )
}

/// What a trial changes about a run.
#[derive(Default)]
struct Tweaks {
    shard: Option<(u32, u32)>,
    e2e_binaries: Option<PathBuf>,
    keep_cluster: bool,
    kubeconfig: Option<PathBuf>,
    /// The release bucket (default: 127.0.0.1:1, so nothing can reach dl.k8s.io).
    release_url: Option<String>,
    registry_mirrors: Vec<shakedown::release::mirror::Mirror>,
    /// Another cache folder than the user's.
    cache_dir: Option<PathBuf>,
    /// Every topology without workers: for a trial whose checks need only the API server.
    control_plane_only: bool,
    /// Another `soak.duration` than the file's.
    soak_duration: Option<std::time::Duration>,
    /// Steps of the file left out of this run.
    without_steps: &'static [&'static str],
}

fn real_run_with(
    file: &std::path::Path,
    job_name: &str,
    artifacts: &std::path::Path,
    t: Tweaks,
) -> Result<shakedown::engine::RunSummary, Failed> {
    let Tweaks {
        shard,
        e2e_binaries,
        keep_cluster,
        kubeconfig,
        release_url,
        registry_mirrors,
        cache_dir,
        control_plane_only,
        soak_duration,
        without_steps,
    } = t;
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Runtime::new()?;
    let catalog = common::catalog();
    let mut s = scenario::load(file, &catalog, scenario::today()).map_err(|e| e.to_string())?;
    if e2e_binaries.is_some() {
        s.scenario.conformance.e2e_binaries = e2e_binaries;
    }
    if let Some(d) = soak_duration {
        s.scenario.soak.duration = d;
    }
    s.scenario
        .steps
        .retain(|st| !without_steps.contains(&st.name.as_str()));
    if control_plane_only {
        for t in &mut s.scenario.topologies {
            t.workers = scenario::WorkersSpec::Count(0);
        }
    }
    let jobs: Vec<_> = matrix::expand(&s)
        .into_iter()
        .filter(|j| j.name == job_name)
        .collect();
    // As the CLI plans: a VM job gets the accelerator a probe boot found.
    let accel = shakedown::images::vm::plan_accelerator(
        &common::root(),
        &cache_dir
            .clone()
            .unwrap_or_else(shakedown::paths::cache_dir),
        &s,
        &jobs,
    )
    .map_err(|e| shakedown::error::chain(&e))?;
    let p = shakedown::plan::build(&s, jobs, accel);
    let settings = shakedown::actions::RunSettings {
        run_id: shakedown::paths::new_run_id(),
        root: common::root(),
        artifacts: artifacts.to_path_buf(),
        cache_dir: cache_dir.unwrap_or_else(shakedown::paths::cache_dir),
        conformance_shard: shard,
        keep_cluster,
        kubeconfig,
        release_url: Some(
            shakedown::release::bucket::Bucket::new(
                release_url.as_deref().unwrap_or(common::NO_RELEASE_URL),
            )
            .map_err(|e| e.to_string())?,
        ),
        registry_mirrors,
        ..Default::default()
    };
    RUNNING.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let summary = rt.block_on(
        Run::new(p, Arc::new(s), Arc::new(catalog), settings)
            .stop(STOP.get_or_init(Stop::default).clone())
            .reporters(common::file_reporters(artifacts))
            .execute(),
    );
    RUNNING.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    eprintln!(
        "{job_name}: {:?} in {:.0}s; artifacts in {}",
        summary.exit,
        summary.duration.as_secs_f64(),
        artifacts.display()
    );
    for st in &summary.jobs[0].steps {
        eprintln!(
            "  {:<12} {:<8} {:>6.1}s",
            st.step,
            st.outcome.label(),
            st.duration.as_secs_f64()
        );
    }
    let run_id = summary.run_id.clone();
    if keep_cluster {
        return Ok(summary);
    }
    let left = common::labelled(&run_id);
    check(left.is_empty(), || {
        format!("run {run_id} left behind: {}", left.join(", "))
    })?;
    Ok(summary)
}

/// The conformance shard CI runs for one job: `SHAKEDOWN_CONFORMANCE_SHARD` (K/N or `all`);
/// unless it is set, the three runtimes run three disjoint thirty-seconds: podman 1/32,
/// docker 3/32, dockershim 5/32 (a spec is in K/32 when its hash is K-1 modulo 32).
/// Together they cover 3/32 of the selected specs, each on one runtime: the CI budget (60
/// minutes) holds the HA, upgrade, external-etcd and fault trials only so.
/// `SHAKEDOWN_CONFORMANCE_SHARD=all` runs every spec.
fn ci_shard_for(job: &str) -> Option<(u32, u32)> {
    let default = if job.contains("/podman/") {
        "1/32"
    } else if job.contains("dockershim") {
        "5/32"
    } else {
        "3/32"
    };
    let v = std::env::var("SHAKEDOWN_CONFORMANCE_SHARD").unwrap_or_else(|_| default.into());
    if v == "all" {
        return None;
    }
    let (k, n) = v.split_once('/')?;
    Some((k.parse().ok()?, n.parse().ok()?))
}

/// The steps CI leaves out of a cluster cell's run. The storage tier and node loss run on
/// the main (docker) job, judged by `storage::`; on podman the tier took 124 s of a 248 s
/// trial, so the podman cell leaves both out to keep `.ci/run` within its budget. The podman cell still
/// proves bring-up, node checks, CNI, smoke and a conformance shard on that runtime;
/// `SHAKEDOWN_ALL_STEPS=1` runs every step of every cell.
fn steps_left_out(job: &str) -> &'static [&'static str] {
    if job.contains("/podman/") && std::env::var_os("SHAKEDOWN_ALL_STEPS").is_none() {
        &["storage", "node-loss"]
    } else {
        &[]
    }
}

/// The main job's run: `cluster::` and `storage::` judge the same one.
const MAIN_JOB: &str = "release-1.20/docker/bridge";

fn main_run() -> Result<&'static (shakedown::engine::RunSummary, PathBuf), Failed> {
    static RUN: SharedRun = std::sync::OnceLock::new();
    shared_run(&RUN, MAIN_JOB, || {
        let file = common::root().join("scenarios/release-1.20.yaml");
        let dir = trial_dir(MAIN_JOB);
        real_run(&file, MAIN_JOB, &dir, ci_shard_for(MAIN_JOB), None).map(|s| (s, dir))
    })
}

/// `storage::release-1.20/docker/bridge`: the storage step of the main job's run passed
/// each of its checks, each a testcase with its figures.
fn storage() -> Result<(), Failed> {
    let (summary, dir) = main_run()?;
    let junit = dir.join(format!("junit_{}.xml", summary.jobs[0].context));
    let suite = &common::read_junit(&junit)[0];
    for c in shakedown::storage::CHECKS {
        let case = suite.case(&format!("storage/{c}"));
        eprintln!(
            "  storage/{c}: {} {}",
            case.result,
            suite
                .property(&format!("storage.{c}"))
                .unwrap_or(&case.message)
        );
    }
    cases_are(
        suite,
        "passed",
        shakedown::storage::CHECKS.map(|c| format!("storage/{c}")),
    )?;
    // The node-loss step, last of the run's tests.
    let loss = format!("node-loss/{}", shakedown::storage::NODE_LOSS);
    eprintln!(
        "  {loss}: {} {}",
        suite.case(&loss).result,
        suite
            .property(&format!("node-loss.{}", shakedown::storage::NODE_LOSS))
            .unwrap_or(&suite.case(&loss).message)
    );
    cases_are(suite, "passed", [loss])
}

fn cluster(file: PathBuf, job_name: String) -> Result<(), Failed> {
    let owned;
    let (summary, dir) = if job_name == MAIN_JOB {
        let (s, d) = main_run()?;
        (s, d.clone())
    } else {
        let dir = trial_dir(&job_name);
        owned = real_run_with(
            &file,
            &job_name,
            &dir,
            Tweaks {
                shard: ci_shard_for(&job_name),
                without_steps: steps_left_out(&job_name),
                ..Default::default()
            },
        )?;
        (&owned, dir)
    };
    let job = &summary.jobs[0];
    let junit = dir.join(format!("junit_{}.xml", job.context));
    let suite = &common::read_junit(&junit)[0];
    let dns = suite.case("smoke/dns-kubernetes-default");
    check(
        dns.result == "skipped" && dns.text.contains("no DNS addon"),
        || format!("dns check: {} {}", dns.result, dns.text),
    )?;
    for node_check in ["kernel", "cgroups", "runtime", "swap"] {
        let n = suite
            .cases
            .iter()
            .filter(|c| c.name.ends_with(&format!("/{node_check}")) && c.result == "passed")
            .count();
        check(n == 2, || {
            format!("node check {node_check} passed on {n} of 2 nodes")
        })?;
    }
    // The storage tier runs where the scenario has the step (release-1.20, not the
    // dockershim fixture).
    let steps = [
        "init",
        "join",
        "nodes",
        "cni",
        "smoke",
        "storage",
        "node-loss",
    ]
    .into_iter()
    .filter(|n| !matches!(*n, "storage" | "node-loss") || job.steps.iter().any(|s| s.step == *n))
    .map(String::from);
    cases_are(suite, "passed", steps)?;
    cases_are(
        suite,
        "passed",
        [
            "nodes-ready",
            "pod-on-every-node",
            "pod-to-pod-across-nodes",
            "service-clusterip",
            "pods-in-their-namespace",
        ]
        .map(|name| format!("smoke/{name}")),
    )?;
    let counts: Vec<String> = [
        "selected",
        "unsupported",
        "outside-shard",
        "passed",
        "failed",
        "flaky",
    ]
    .iter()
    .map(|k| {
        format!(
            "{k} {}",
            suite.property(&format!("conformance.{k}")).unwrap_or("?")
        )
    })
    .collect();
    eprintln!("  conformance: {}", counts.join(", "));
    let count = |k: &str| -> Result<usize, Failed> {
        Ok(suite
            .property(&format!("conformance.{k}"))
            .ok_or_else(|| format!("no conformance.{k} property"))?
            .parse()?)
    };
    check(count("passed")? > 0, || "no conformance spec passed".into())?;
    check(count("failed")? == 0, || {
        format!(
            "{} conformance spec(s) failed",
            count("failed").unwrap_or(0)
        )
    })?;
    check(count("not-run")? == 0, || {
        format!(
            "{} conformance spec(s) have no result",
            count("not-run").unwrap_or(0)
        )
    })?;
    // Nothing secret was uploaded with the artifacts.
    let found = common::secrets_in(&dir);
    check(found.is_empty(), || {
        format!("secrets in the artifacts:\n{}", found.join("\n"))
    })?;
    check(summary.exit_code == 0, || {
        format!(
            "run failed with exit {}: {}",
            summary.exit_code,
            summary.coverage_lines().join("; ")
        )
    })
}

/// `cluster-offline::`: a CNI variant whose images cannot be obtained here. Its manifest is
/// dry-run by the real API server, and the cni step must fail fast naming the missing image
/// and the preload command. None of that needs a worker, so the trial brings up the control
/// plane alone (a join saved per trial; the bridge trials join workers on both providers).
fn cluster_offline(file: PathBuf, job_name: String) -> Result<(), Failed> {
    let dir = trial_dir(&job_name);
    let summary = real_run_with(
        &file,
        &job_name,
        &dir,
        Tweaks {
            shard: Some((1, 1000)),
            control_plane_only: true,
            ..Default::default()
        },
    )?;
    let cni = step_named(&summary.jobs[0].steps, "cni")?;
    // Before the image check stops it, the real API server dry-runs every manifest object.
    let prop = |k: &str| cni.property(k);
    let accepted: usize = prop("cni.dry-run-accepted")
        .ok_or("no server-side dry run ran")?
        .parse()?;
    let refused: usize = prop("cni.dry-run-refused")
        .ok_or("no server-side dry run ran")?
        .parse()?;
    eprintln!(
        "  server-side dry run: {accepted} accepted, {refused} refused, {} not checkable",
        prop("cni.dry-run-unchecked").unwrap_or_default()
    );
    check(accepted > 0 && refused == 0, || {
        format!("dry run: {accepted} accepted, {refused} refused")
    })?;
    match &cni.outcome {
        StepOutcome::Failed { message, .. } => {
            check(
                message.contains("is not on node")
                    && message.contains("ctr -n k8s.io images import"),
                || {
                    format!("cni failed, but without naming the missing image and the preload command: {message}")
                },
            )?;
        }
        other => {
            return Err(format!("cni should fail fast without its images, got {other:?}").into())
        }
    }
    check(cni.duration < std::time::Duration::from_secs(30), || {
        format!("cni took {:?} to fail", cni.duration)
    })?;
    check(summary.exit_code == 3, || {
        format!(
            "expected the infrastructure exit code 3, got {}",
            summary.exit_code
        )
    })
}

fn no_cni_regression() -> Result<(), Failed> {
    let file = common::root().join("fixtures/scenarios/cluster/no-cni.yaml");
    let dir = trial_dir("regression-no-cni");
    let summary = real_run(&file, "no-cni/docker/none", &dir, None, None)?;
    let steps = &summary.jobs[0].steps;
    let cni = step_named(steps, "cni")?;
    match &cni.outcome {
        StepOutcome::Failed {
            kind,
            message,
            diagnosis,
            ..
        } => {
            check(
                *kind == shakedown::engine::event::FailureKind::Deadline,
                || format!("cni failed as {kind:?}, not at its deadline"),
            )?;
            check(message.contains("condition 3/3"), || {
                format!("the failure does not name the readiness condition: {message}")
            })?;
            let d = diagnosis.as_deref().unwrap_or_default();
            check(d.contains("NetworkPluginNotReady"), || {
                format!("the diagnosis does not name NetworkPluginNotReady: {d}")
            })?;
            check(d.contains("kubelet journal on"), || {
                format!("no kubelet journal excerpt: {d}")
            })?;
        }
        other => return Err(format!("cni should fail without a network, got {other:?}").into()),
    }
    check(
        cni.duration < std::time::Duration::from_secs(45 + 5 + 25),
        || format!("cni took {:?}: the deadline did not hold", cni.duration),
    )?;
    let smoke = step_named(steps, "smoke")?;
    check(
        matches!(&smoke.outcome, StepOutcome::Skipped { reason } if reason == "skipped: step cni failed"),
        || format!("{:?}", smoke.outcome),
    )?;
    check(summary.exit_code == 1, || {
        format!(
            "expected the test-failure exit code 1, got {}",
            summary.exit_code
        )
    })
}

const IN_CLUSTER_TRIAL: &str = "in-cluster::release-1.20/docker/bridge";
/// CI's slice of the in-cluster run: about a dozen lite specs, in one pod.
const IN_CLUSTER_SHARD: (u32, u32) = (1, 40);

/// The folder `shakedown image build` reports for the release-1.20 binaries (cached: the
/// cluster trials build them anyway).
fn built_binaries() -> Result<PathBuf, Failed> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shakedown"))
        .args(["image", "build", "--kubernetes", "v1.20.2"])
        .current_dir(common::root())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    check(out.status.success(), || {
        format!(
            "shakedown image build failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    text.lines()
        .find_map(|l| l.strip_prefix("binaries:"))
        .map(|d| PathBuf::from(d.trim()))
        .ok_or_else(|| format!("no `binaries:` line in: {text}").into())
}

/// A test tarball in the release's layout (kubernetes/test/bin/{e2e.test,ginkgo}).
fn pack_test_tarball(bin: &std::path::Path, at: &std::path::Path) -> Result<(), Failed> {
    let gz = flate2::write::GzEncoder::new(std::fs::File::create(at)?, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for b in ["e2e.test", "ginkgo"] {
        tar.append_path_with_name(bin.join(b), format!("kubernetes/test/bin/{b}"))?;
    }
    tar.into_inner()?.finish()?;
    Ok(())
}

/// Clusters a trial kept for another to attach to; removed at the latest when the trials end.
static KEPT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// `shakedown gc --run ID` for every kept cluster left.
fn remove_kept() {
    let kept = std::mem::take(&mut *KEPT.lock().unwrap_or_else(|e| e.into_inner()));
    for id in kept {
        let _ = std::process::Command::new(env!("CARGO_BIN_EXE_shakedown"))
            .args(["gc", "--run", &id])
            .output();
    }
}

/// The one run of `fixtures/scenarios/cluster/vm-mixed.yaml` (release-1.20: a container
/// control plane, a VM worker): `vm::release-1.20/mixed/bridge` judges the bring-up and
/// smoke, `vm::node-reboot` the reboot and the smoke after it.
fn vm_run() -> Result<&'static (shakedown::engine::RunSummary, PathBuf), Failed> {
    static RUN: SharedRun = std::sync::OnceLock::new();
    shared_run(&RUN, "VM", || {
        let dir = trial_dir("vm-mixed");
        let file = common::root().join("fixtures/scenarios/cluster/vm-mixed.yaml");
        real_run(&file, "vm-mixed/vm/bridge/mixed", &dir, None, None).map(|s| (s, dir))
    })
}

/// The seconds each named step of a job took, as `name Ns` pairs, for the trial's output.
fn step_times(job: &shakedown::engine::JobSummary, names: &[&str]) -> String {
    names
        .iter()
        .filter_map(|n| job.steps.iter().find(|s| s.step == *n))
        .map(|s| format!("{} {:.1}s", s.step, s.duration.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `vm::release-1.20/mixed/bridge`: the worker is a qemu VM (Debian's cloud kernel, the node
/// image's root filesystem) on the container control plane's bridge. It joins, the bridge
/// CNI routes between them, and smoke passes, pod-to-pod between the VM and the container
/// included. The JUnit properties say which accelerator ran it.
fn vm_mixed() -> Result<(), Failed> {
    let (summary, dir) = vm_run()?;
    let job = &summary.jobs[0];
    eprintln!(
        "  vm mixed: {}",
        step_times(
            job,
            &["build", "up", "init", "join", "nodes", "cni", "smoke"]
        )
    );
    let suite = &common::read_junit(&dir.join(format!("junit_{}.xml", job.context)))[0];
    cases_are(
        suite,
        "passed",
        [
            "up",
            "init",
            "join",
            "nodes",
            "cni",
            "smoke/nodes-ready",
            "smoke/pod-on-every-node",
            "smoke/pod-to-pod-across-nodes",
            "smoke/service-clusterip",
        ]
        .map(String::from),
    )?;
    let accel = suite.property("vm-accelerator").unwrap_or_default();
    check(accel == "tcg" || accel == "kvm", || {
        format!("vm-accelerator property {accel:?}")
    })?;
    let topology = suite.property("topology").unwrap_or_default();
    check(topology.contains("0cp+1w as VMs"), || {
        format!("topology property {topology:?}")
    })?;
    // The worker really is a VM: its kernel is the cloud kernel, not this machine's.
    let up = std::fs::read_to_string(dir.join(format!("jobs/{}/03-up.log", job.context)))?;
    check(up.contains("answered ssh"), || {
        "no VM answered ssh in the up log".into()
    })?;
    Ok(())
}

/// `vm::node-reboot`: the VM worker reboots for real (a new kernel boot id), is Ready again
/// by a status its new kubelet posted, runs its pinned pod in a new container, and smoke
/// passes again across the VM and the container.
fn vm_node_reboot() -> Result<(), Failed> {
    let (summary, dir) = vm_run()?;
    let job = &summary.jobs[0];
    let suite = &common::read_junit(&dir.join(format!("junit_{}.xml", job.context)))[0];
    cases_are(
        suite,
        "passed",
        [
            "reboot",
            "smoke-after-reboot/nodes-ready",
            "smoke-after-reboot/pod-to-pod-across-nodes",
            "smoke-after-reboot/service-clusterip",
        ]
        .map(String::from),
    )?;
    let reboot = step_named(&job.steps, "reboot")?;
    let prop = |k: &str| reboot.property(k).unwrap_or_default();
    eprintln!(
        "  vm reboot of {}: booted again after {}s, Ready after {}s, pod running after {}s",
        prop("reboot.node"),
        prop("reboot.boot_seconds"),
        prop("reboot.ready_seconds"),
        prop("reboot.pod_seconds"),
    );
    check(prop("reboot.node").ends_with("-vw1"), || {
        format!("rebooted {:?}, not the VM worker", prop("reboot.node"))
    })?;
    Ok(())
}

/// The one run of `fixtures/scenarios/cluster/release-1.20-in-cluster.yaml`, its cluster
/// kept: `in-cluster::` judges the run, then `existing::` tests the same cluster as someone
/// else's (one bring-up for both). Run once, by whichever trial comes first.
fn in_cluster_run() -> Result<&'static (shakedown::engine::RunSummary, PathBuf), Failed> {
    static RUN: SharedRun = std::sync::OnceLock::new();
    shared_run(&RUN, "in-cluster", || {
        let run = || -> Result<(shakedown::engine::RunSummary, PathBuf), Failed> {
            let file =
                common::root().join("fixtures/scenarios/cluster/release-1.20-in-cluster.yaml");
            let job_name = "release-1.20-in-cluster/docker/bridge";
            let dir = trial_dir(job_name);
            std::fs::create_dir_all(&dir)?;
            let tarball = dir.join("kubernetes-test-linux-amd64.tar.gz");
            pack_test_tarball(&built_binaries()?, &tarball)?;
            let summary = real_run_with(
                &file,
                job_name,
                &dir,
                Tweaks {
                    shard: Some(IN_CLUSTER_SHARD),
                    e2e_binaries: Some(tarball.clone()),
                    keep_cluster: true,
                    ..Default::default()
                },
            );
            // Its content is in the cache now; it would only bloat the artifacts.
            let _ = std::fs::remove_file(&tarball);
            let summary = summary?;
            KEPT.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(summary.run_id.clone());
            Ok((summary, dir))
        };
        run()
    })
}

fn in_cluster() -> Result<(), Failed> {
    let (summary, dir) = in_cluster_run()?;
    let job = &summary.jobs[0];
    let conf = step_named(&job.steps, "conformance")?;
    let prop = |k: &str| conf.property(k).unwrap_or_default();
    eprintln!(
        "  in-cluster conformance: selected {}, unsupported {}, outside shard {}, passed {}, failed {}, not run {}",
        prop("conformance.selected"),
        prop("conformance.unsupported"),
        prop("conformance.outside-shard"),
        prop("conformance.passed"),
        prop("conformance.failed"),
        prop("conformance.not-run"),
    );
    check(prop("conformance.runner") == "in-cluster", || {
        format!("runner {:?}", prop("conformance.runner"))
    })?;
    check(
        prop("conformance.e2e-source").contains("test tarball"),
        || format!("e2e.test came from {:?}", prop("conformance.e2e-source")),
    )?;
    let selected: usize = prop("conformance.selected").parse()?;
    check(selected > 200, || {
        format!("the in-cluster dry run listed only {selected} specs")
    })?;
    let passed: usize = prop("conformance.passed").parse()?;
    check(passed > 0, || "no spec passed in-cluster".into())?;
    // Every passed spec is a testcase of its own.
    let junit = dir.join(format!("junit_{}.xml", job.context));
    let suite = &common::read_junit(&junit)[0];
    let spec_cases = suite
        .cases
        .iter()
        .filter(|c| c.name.contains(" conformance/") && c.result == "passed")
        .count();
    check(spec_cases == passed, || {
        format!("{spec_cases} passed spec testcases, {passed} passed")
    })?;
    // What the pod printed is kept: ginkgo's own summary is in the pod's e2e.log.
    let pod_dir = dir.join(format!(
        "jobs/{}/conformance/in-cluster/e2e-conformance",
        job.context
    ));
    let log = std::fs::read_to_string(pod_dir.join("e2e.log"))?;
    check(log.contains(&format!("Ran {passed} of")), || {
        format!(
            "ginkgo's summary in {} does not say it ran {passed} specs",
            pod_dir.display()
        )
    })?;
    check(pod_dir.join("junit_01.xml").is_file(), || {
        "junit_01.xml was not handed back".into()
    })?;
    check(summary.exit_code == 0, || {
        format!(
            "run failed with exit {}: {}",
            summary.exit_code,
            summary.coverage_lines().join("; ")
        )
    })
}

/// Ctrl-C during `shakedown bench bring-up`: exit 130 and the bench's nodes are removed.
fn bench_interrupted() -> Result<(), Failed> {
    use nix::sys::signal::{kill, Signal};
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let before = common::docker_lines(&[
        "ps",
        "-a",
        "--filter",
        "label=io.shakedown.managed=true",
        "--format",
        "{{.Label \"io.shakedown.run\"}}",
    ]);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_shakedown"))
        .arg("--root")
        .arg(common::root())
        .args(["bench", "bring-up", "--runs", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut run_id = String::new();
    let seen = common::wait_for(
        "the bench's nodes",
        std::time::Duration::from_secs(600),
        || {
            let now = common::docker_lines(&[
                "ps",
                "--filter",
                "label=io.shakedown.managed=true",
                "--format",
                "{{.Label \"io.shakedown.run\"}}",
            ]);
            match now.into_iter().find(|r| !before.contains(r)) {
                Some(r) => {
                    run_id = r;
                    true
                }
                None => false,
            }
        },
    );
    kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGINT,
    )?;
    let t = std::time::Instant::now();
    let out = child.wait_with_output()?;
    seen?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    check(out.status.code() == Some(130), || {
        format!("bench exited {:?}: {text}", out.status.code())
    })?;
    let left = common::labelled(&run_id);
    eprintln!(
        "  bench run {run_id} stopped {:.1}s after SIGINT; left {left:?}",
        t.elapsed().as_secs_f64()
    );
    check(left.is_empty(), || {
        format!("the interrupted bench left {left:?}")
    })
}

/// A cluster the harness brought up and kept (the in-cluster run's), tested as someone
/// else's: smoke and a conformance shard through `--provider existing`. Afterwards it is
/// still there, untouched, and the trial removes it.
fn existing_cluster() -> Result<(), Failed> {
    let root = common::root();
    let dir = trial_dir("existing-release-1.20");
    let (kept, _) = in_cluster_run()?;
    let run_id = kept.run_id.clone();
    // Removed whatever happens below.
    struct Gc(String);
    impl Drop for Gc {
        fn drop(&mut self) {
            KEPT.lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|id| *id != self.0);
            let _ = std::process::Command::new(env!("CARGO_BIN_EXE_shakedown"))
                .args(["gc", "--run", &self.0])
                .output();
        }
    }
    let _gc = Gc(run_id.clone());
    check(kept.exit_code == 0, || {
        format!(
            "the cluster to keep did not come up: {}",
            kept.coverage_lines().join("; ")
        )
    })?;
    let kubeconfig = shakedown::paths::work_dir(&run_id).join("docker-bridge-admin.conf");
    check(kubeconfig.is_file(), || {
        format!(
            "the kept cluster's kubeconfig {} is missing",
            kubeconfig.display()
        )
    })?;
    let state = || {
        common::docker_lines(&[
            "ps",
            "--filter",
            &format!("label=io.shakedown.run={run_id}"),
            "--format",
            "{{.ID}} {{.Names}} {{.Status}}",
        ])
        .into_iter()
        .map(|l| l.split(" Up ").next().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
    };
    let before = state();
    check(before.len() == 2, || format!("kept nodes: {before:?}"))?;

    let summary = real_run_with(
        &root.join("fixtures/scenarios/cluster/existing.yaml"),
        "existing/existing/bridge",
        &dir.join("existing"),
        Tweaks {
            shard: Some((1, 40)),
            kubeconfig: Some(kubeconfig.clone()),
            ..Default::default()
        },
    )?;
    let job = &summary.jobs[0];
    let suite = &common::read_junit(&dir.join(format!("existing/junit_{}.xml", job.context)))[0];
    cases_are(
        suite,
        "passed",
        ["attach", "smoke", "conformance", "detach"].map(String::from),
    )?;
    let skipped = suite
        .cases
        .iter()
        .filter(|c| c.name.ends_with("/node-checks") && c.result == "skipped")
        .count();
    check(skipped == 2, || {
        format!("node checks skipped on {skipped} of 2 nodes")
    })?;
    let passed: usize = suite
        .property("conformance.passed")
        .unwrap_or("0")
        .parse()?;
    let failed: usize = suite
        .property("conformance.failed")
        .unwrap_or("1")
        .parse()?;
    let not_run: usize = suite
        .property("conformance.not-run")
        .unwrap_or("1")
        .parse()?;
    eprintln!("  existing: conformance passed {passed}, failed {failed}, not run {not_run}");
    check(passed > 0 && failed == 0 && not_run == 0, || {
        format!("conformance: {passed} passed, {failed} failed, {not_run} not run")
    })?;
    check(summary.exit_code == 0, || {
        format!(
            "exit {}: {}",
            summary.exit_code,
            summary.coverage_lines().join("; ")
        )
    })?;
    // Untouched: the same containers, still up, and the kubeconfig still there.
    let after = state();
    check(after == before, || {
        format!("the cluster changed: {before:?} -> {after:?}")
    })?;
    check(kubeconfig.is_file(), || {
        "the existing provider removed the kubeconfig".into()
    })?;
    let found = common::secrets_in(&dir.join("existing"));
    check(found.is_empty(), || {
        format!("secrets in the artifacts: {found:?}")
    })?;
    drop(_gc);
    let left = common::labelled(&run_id);
    check(left.is_empty(), || format!("gc left {left:?}"))
}
