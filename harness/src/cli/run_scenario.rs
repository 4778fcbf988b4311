//! `shakedown scenario`: run a scenario's jobs; `scenario new`: the next branch's file.

use super::*;

pub(super) async fn run_scenario(root: &Path, a: ScenarioArgs) -> Result<ExitKind, CliError> {
    let name = a
        .scenario
        .clone()
        .ok_or_else(|| CliError::Usage("a scenario name is required".into()))?;
    let (mut s, catalog) = load_scenario(root, &name)?;
    // Command-line overrides first, then the same validation a scenario file gets: the
    // in-cluster rules hold for `--conformance-runner in-cluster` too.
    if let Some(m) = a.conformance_mode {
        s.scenario.conformance.mode = Some(m.into());
    }
    if let Some(r) = a.conformance_runner {
        s.scenario.conformance.runner = Some(r.into());
    }
    if let Some(i) = &a.conformance_image {
        s.scenario.conformance.image = Some(i.clone());
        s.scenario.conformance.runner = Some(crate::scenario::ConformanceRunner::InCluster);
    }
    if let Some(b) = &a.e2e_binaries {
        // Relative to where the user is, as any command-line path.
        s.scenario.conformance.e2e_binaries = Some(std::path::absolute(b).unwrap_or(b.clone()));
    }
    if a.provider.as_deref() == Some("existing") {
        if a.kubeconfig.is_none() {
            return Err(CliError::Usage(
                "--provider existing tests a cluster someone else made: give its --kubeconfig FILE"
                    .into(),
            ));
        }
        as_existing(&mut s.scenario, a.cni.as_deref());
    } else if a.kubeconfig.is_some() {
        return Err(CliError::Usage(
            "--kubeconfig is for --provider existing (every other provider makes its own cluster)"
                .into(),
        ));
    }
    let s = scenario::recheck(s, &catalog, scenario::today()).map_err(|e| {
        eprintln!("the scenario with the command line's overrides does not validate:");
        CliError::Config(e)
    })?;
    let rerun = match &a.rerun_failed {
        Some(dir) => Some(crate::conformance::rerun::from_artifacts(dir)?),
        None => None,
    };
    // A re-run plans only the earlier run's jobs that left something to do.
    let mut skip_jobs = a.skip_jobs.clone();
    if let Some(r) = &rerun {
        let all = matrix::expand(&s);
        if let Some(unknown) = r.jobs.keys().find(|k| !all.iter().any(|j| &j.name == *k)) {
            return Err(CliError::Usage(format!(
                "--rerun-failed: run {} has job {unknown}, which scenario {} does not",
                r.from_run,
                s.name()
            )));
        }
        if r.jobs.is_empty() {
            println!(
                "nothing to re-run: run {} has no failed job and no spec without a result",
                r.from_run
            );
            return Ok(ExitKind::Passed);
        }
        for (job, j) in &r.jobs {
            println!("re-run of run {}: {job}: {}", r.from_run, j.why);
        }
        skip_jobs.extend(
            all.into_iter()
                .map(|j| j.name)
                .filter(|n| !r.jobs.contains_key(n)),
        );
    }
    let mut p = plan_jobs(
        root,
        &s,
        a.provider.as_deref(),
        a.cni.as_deref(),
        a.topology.as_deref(),
        &skip_jobs,
    )?;
    if let Some(r) = rerun.as_ref().filter(|r| r.version != p.version) {
        return Err(CliError::Usage(format!(
            "--rerun-failed: run {} tested Kubernetes {}, this scenario tests {}; a re-run must test the same version",
            r.from_run, r.version, p.version
        )));
    }
    if let Some(d) = a.deadline {
        p.run_deadline = Some(d);
    }
    let run_id = paths::new_run_id();
    let artifacts = a
        .artifacts
        .clone()
        .unwrap_or_else(|| PathBuf::from("artifacts").join(&run_id));
    let artifacts = if artifacts.is_absolute() {
        artifacts
    } else {
        std::env::current_dir()
            .map(|d| d.join(&artifacts))
            .unwrap_or(artifacts)
    };
    std::fs::create_dir_all(&artifacts).map_err(|e| CliError::Infra {
        what: format!("create artifacts folder {}", artifacts.display()),
        source: Box::new(e),
    })?;

    let history_file = a
        .history
        .clone()
        .unwrap_or_else(|| history::default_path(Some(&artifacts)).into());
    let mut recorder = reporter::history::HistoryRecorder::new(history_file.clone(), a.trigger);
    if let Some(spec) = &s.scenario.ci.notify {
        let env = |k: &str| std::env::var(k).ok();
        let n = Notifier::from_spec(
            spec,
            artifacts.join("notifications"),
            history::notify::run_url_from_env(env),
            env,
        );
        recorder = recorder.with_notifier(n, artifacts.clone());
    }

    // Each spec's duration orders this run's specs, longest first.
    let (spec_durations, warning) = history::expected_spec_durations(&s, &history_file);
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }

    let stop = Stop::default();
    let signals = stop.on_signals();
    let reporters: Vec<Box<dyn Reporter>> = vec![
        Box::new(reporter::progress::Progress::auto()),
        Box::new(reporter::progress::BuildLog::new(&artifacts)),
        Box::new(reporter::junit::Junit::new(&artifacts)),
        Box::new(reporter::testgrid::Testgrid::new(&artifacts)),
        Box::new(reporter::json::JsonSummary::new(&artifacts)),
        Box::new(reporter::html::Html::new(&artifacts)),
        Box::new(recorder),
    ];
    let settings = RunSettings {
        run_id,
        root: root.to_path_buf(),
        artifacts: artifacts.clone(),
        keep_cluster: a.keep_cluster,
        kubernetes_binaries: a.kubernetes_binaries.clone(),
        node_image: a.node_image.clone(),
        cache_dir: paths::cache_dir(),
        conformance_shard: a.conformance_shard,
        kubeconfig: a
            .kubeconfig
            .as_ref()
            .map(|k| std::path::absolute(k).unwrap_or(k.clone())),
        release_url: a.release_url.clone(),
        registry_mirrors: a.registry_mirrors.clone(),
        spec_durations,
        rerun,
    };
    let summary = crate::run::Run::new(p, Arc::new(s), Arc::new(catalog), settings)
        .dry_run(a.dry_run)
        .parallel(a.parallel)
        .stop(stop)
        .reporters(reporters)
        .execute()
        .await;
    signals.abort();
    for e in &summary.reporter_errors {
        eprintln!("warning: {e}");
    }
    println!(
        "{}: {:?} (exit {})",
        summary.scenario, summary.exit, summary.exit_code
    );
    for l in summary.coverage_lines() {
        println!("  {l}");
    }
    if let Some(d) = &summary.conformance_disabled {
        println!("{d}");
    }
    println!("artifacts: {}", artifacts.display());
    println!(
        "history: {} ({} run)",
        history_file.display(),
        if summary.dry_run {
            "recorded as a dry"
        } else {
            a.trigger.as_str()
        }
    );
    Ok(summary.exit)
}

pub(super) fn new_scenario(root: &Path, branch: &str, from: &str) -> Result<ExitKind, CliError> {
    let (src, catalog) = load_scenario(root, from)?;
    let target = root.join("scenarios").join(format!("{branch}.yaml"));
    let derived = scenario::new::derive(&src, branch, &catalog)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if target.exists() {
        return Err(CliError::Usage(format!(
            "{} already exists; edit it, or remove it first",
            target.display()
        )));
    }
    let cmd = format!("shakedown scenario new {branch} --from {from}");
    let text = scenario::new::render(&derived, &cmd, &shown(root, &src.path)).map_err(|e| {
        CliError::Infra {
            what: format!("encode the new scenario {}", target.display()),
            source: Box::new(e),
        }
    })?;
    // The new file must validate before it exists.
    scenario::load_str(&target, &text, &catalog, scenario::today())?;
    std::fs::write(&target, &text).map_err(|e| CliError::Infra {
        what: format!("write {}", target.display()),
        source: Box::new(e),
    })?;
    println!("created {}", shown(root, &target));
    for n in &derived.notes {
        println!("  {n}");
    }
    println!("next: review it, then run `shakedown ci generate` to add its CI jobs");
    Ok(ExitKind::Passed)
}

/// Any branch's scenario, run against a cluster someone else made, as hydrophone and
/// sonobuoy run: one job on the `existing` provider (the CNI the cluster already runs), no
/// step that makes a cluster (init, join, cni) and none that breaks one on purpose (node
/// loss, reboots, upgrades): it is not ours. `cluster-up` attaches, `cluster-down` detaches.
fn as_existing(s: &mut crate::scenario::Scenario, cni: Option<&str>) {
    use crate::scenario::{ActionKind, ProviderKind};
    s.providers = vec![ProviderKind::Existing];
    s.topologies.truncate(1);
    let keep = cni
        .map(String::from)
        .or_else(|| s.cni.first().cloned())
        .unwrap_or_default();
    s.cni.retain(|c| *c == keep);
    s.steps.retain(|st| {
        !matches!(
            st.action,
            ActionKind::KubeadmInit
                | ActionKind::KubeadmJoin
                | ActionKind::Cni
                | ActionKind::NodeLoss
                | ActionKind::NodeReboot
                | ActionKind::ControlPlaneLoss
                | ActionKind::EtcdMemberLoss
                | ActionKind::Upgrade
        )
    });
}
