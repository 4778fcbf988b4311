//! `upgrade`: one hop of the scenario's upgrade chain (`upgrade.through`), planned as its
//! own step with its own deadline. A hop backs etcd up and drills the restore, stages the
//! target's binaries and images on every node, runs `kubeadm upgrade plan` and `apply` on
//! the first control plane and `upgrade node` on the others one at a time, then drains,
//! swaps kubelet and kubectl, restarts and uncordons each node (workers
//! `max_unavailable` at a time). Gates follow: static pods on the target's images, every
//! node Ready at the target kubelet version, kube-system Ready, etcd healthy, the smoke
//! tier. Throughout, the API is probed through its endpoint every second, and a Service
//! in front of a Deployment with a PodDisruptionBudget is probed every second from a pod;
//! the hop reports the longest unavailability of each against `disruption`.

use super::cluster::{client_config, client_of, cluster};
use super::{ha, Action, JobStateExt, StepContext, StepError};
use crate::engine::event::{StepOutcome, SubTest};
use crate::images::KubeArtifacts;
use crate::process::{Cmd, Runner};
use crate::provider::{Cluster, NodeInfo};
use crate::readiness::{annotated_leader, leader_renewed_since, lease_leader, Leader};
use crate::release::skew;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub struct Upgrade;

/// The workload probed across hops, made by the first hop.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Where the prober pod runs.
    pub prober_node: String,
}

const APP: &str = "shakedown-upgrade";
const PROBER: &str = "shakedown-upgrade-prober";
const REPLICAS: u32 = 3;
/// Where each node keeps the binaries of another version: `/opt/shakedown/<version>/`.
pub const STAGED: &str = "/opt/shakedown";
const API_PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long a node may take to come back Ready at the target after its kubelet restarts.
const NODE_BACK_WITHIN: Duration = Duration::from_secs(180);
/// How long a drain waits for the controllers to have a leader again (a failover takes
/// the lease duration, 15 s by default, plus the new leader's start).
const LEADERS_BACK_WITHIN: Duration = Duration::from_secs(90);
/// The components whose leaders a drain needs: the endpoints, ReplicaSet and disruption
/// controllers (kube-controller-manager) and the scheduler that places the replacements.
const LEADER_ELECTED: &[&str] = &["kube-controller-manager", "kube-scheduler"];
const CONTROL_PLANE_COMPONENTS: [&str; 3] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// One hop: where it starts and where it goes.
struct Hop {
    from: String,
    to: String,
    art: KubeArtifacts,
    omit: Vec<String>,
    max_unavailable: usize,
    last: bool,
}

pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// `kubeadm upgrade` flags a target needs: pre-releases are refused without them.
pub fn prerelease_flags(to: &str) -> Vec<String> {
    match skew::parse(to) {
        Ok(v) if v.pre.is_empty() => vec![],
        Ok(v) if v.pre.as_str().starts_with("rc") => {
            vec!["--allow-release-candidate-upgrades".into()]
        }
        Ok(_) => vec!["--allow-experimental-upgrades".into()],
        Err(_) => vec![],
    }
}

/// `kubeadm upgrade <verb...> <to>` with the flags a pre-release needs; preflight errors are
/// ignored as `init` skips its preflight (no cri-tools here).
pub fn kubeadm_upgrade(verb: &[&str], to: &str) -> Vec<String> {
    let mut a: Vec<String> = ["kubeadm", "upgrade"]
        .iter()
        .chain(verb)
        .map(|s| s.to_string())
        .collect();
    a.push(to.to_string());
    a.extend(prerelease_flags(to));
    a.push("--ignore-preflight-errors=all".into());
    a
}

/// The `kubeadm upgrade` command a node other than the first control plane runs, for the
/// target's kubeadm: `upgrade node` from 1.15; before, workers ran `upgrade node config`
/// (1.11-1.14) or nothing but the kubelet swap (1.8-1.10), and further control planes had
/// no command; kubeadm had no upgrade before 1.8. `None`: no kubeadm command.
pub fn upgrade_node_args(to: &str, control_plane: bool) -> Result<Option<Vec<String>>, String> {
    let v = skew::parse(to)?;
    match v.minor {
        m if m >= 15 => Ok(Some(vec![
            "upgrade".into(),
            "node".into(),
            "--ignore-preflight-errors=all".into(),
        ])),
        m if m >= 8 && control_plane => Err(format!(
            "failed to upgrade a further control plane with kubeadm {to}: `kubeadm upgrade node` came in 1.15"
        )),
        m if m >= 11 => Ok(Some(vec![
            "upgrade".into(),
            "node".into(),
            "config".into(),
            format!("--kubelet-version={to}"),
        ])),
        m if m >= 8 => Ok(None),
        _ => Err(format!(
            "failed to upgrade with kubeadm {to}: `kubeadm upgrade` came in 1.8"
        )),
    }
}

/// The drain flag for pods with emptyDir volumes: renamed in kubectl 1.20.
pub fn drain_args(node: &str, kubectl_minor: u64) -> Vec<String> {
    vec![
        "drain".into(),
        node.into(),
        "--ignore-daemonsets".into(),
        if kubectl_minor >= 20 {
            "--delete-emptydir-data".into()
        } else {
            "--delete-local-data".into()
        },
        "--timeout=150s".into(),
    ]
}

/// The prober's log: `<epoch ms> ok|fail` per probe, in order; other lines are ignored.
pub fn parse_probe_log(log: &str) -> Vec<(i64, bool)> {
    log.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let at = it.next()?.parse().ok()?;
            match it.next()? {
                "ok" => Some((at, true)),
                "fail" => Some((at, false)),
                _ => None,
            }
        })
        .collect()
}

/// What the probes between `from_ms` and `to_ms` saw: (probes, longest unavailability,
/// failed, answering at the end). The outage arithmetic is the control-plane-loss one.
pub fn window(samples: &[(i64, bool)], from_ms: i64, to_ms: i64) -> (usize, Duration, usize, bool) {
    let base = Instant::now();
    let at = |ms: i64| base + Duration::from_millis((ms - from_ms).max(0) as u64);
    let inside: Vec<(Instant, bool)> = samples
        .iter()
        .filter(|(t, _)| *t >= from_ms && *t <= to_ms)
        .map(|(t, ok)| (at(*t), *ok))
        .collect();
    let (longest, failed, answering) = ha::longest_outage(&inside, at(to_ms));
    (inside.len(), longest, failed, answering)
}

/// Ok when nothing was found wrong; otherwise every finding.
fn none_wrong(wrong: Vec<String>) -> Result<(), String> {
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("; "))
    }
}

/// Each control plane's static pods run the target's image and are Ready.
pub fn static_pods_at(pods: &[Pod], control_planes: &[String], tag: &str) -> Result<(), String> {
    let mut wrong = Vec::new();
    for cp in control_planes {
        for comp in CONTROL_PLANE_COMPONENTS {
            let name = format!("{comp}-{cp}");
            let Some(p) = pods
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(name.as_str()))
            else {
                wrong.push(format!("{name}: no such pod"));
                continue;
            };
            let image = p
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            if !image.ends_with(&format!(":{tag}")) {
                wrong.push(format!("{name} runs {image}, not tag {tag}"));
            } else if let Err(e) = crate::readiness::pod_ready(p) {
                wrong.push(e);
            }
        }
    }
    none_wrong(wrong)
}

/// Every node Ready, its kubelet reporting `version`.
pub fn nodes_at(nodes: &[Node], want: &[String], version: &str) -> Result<(), String> {
    crate::readiness::nodes_registered(want, nodes)?;
    let mut wrong = Vec::new();
    for n in nodes {
        let name = n.metadata.name.clone().unwrap_or_default();
        let kubelet = n
            .status
            .as_ref()
            .and_then(|s| s.node_info.as_ref())
            .map(|i| i.kubelet_version.clone())
            .unwrap_or_default();
        if kubelet != version {
            wrong.push(format!("{name}: kubelet {kubelet}, want {version}"));
        } else if let Err(e) = crate::readiness::node_ready(n) {
            wrong.push(e);
        }
    }
    none_wrong(wrong)
}

/// Every kube-system pod Running and Ready (or finished).
/// Every DaemonSet rolled out to its latest spec (see [`crate::readiness::daemonset_rolled_out`]).
pub fn daemonsets_rolled_out(
    daemonsets: &[k8s_openapi::api::apps::v1::DaemonSet],
) -> Result<(), String> {
    let bad: Vec<String> = daemonsets
        .iter()
        .filter_map(|d| crate::readiness::daemonset_rolled_out(d).err())
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("; "))
    }
}

pub fn system_pods_ready(pods: &[Pod]) -> Result<usize, String> {
    let bad: Vec<String> = pods
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Succeeded"))
        .filter_map(|p| crate::readiness::pod_ready(p).err())
        .collect();
    if bad.is_empty() {
        Ok(pods.len())
    } else {
        Err(bad.join("; "))
    }
}

/// The Deployment, its Service and, with `pdb_api`, a PodDisruptionBudget (one pod may be
/// down at a time). It tolerates the control-plane taints, so every node can hold it.
pub fn workload_yaml(image: &str, pull: &str, pdb_api: Option<&str>, run_id: &str) -> String {
    let pdb = pdb_api.map_or_else(String::new, |api| {
        format!(
            r#"---
apiVersion: {api}
kind: PodDisruptionBudget
metadata: {{name: {APP}, namespace: default, labels: {{io.shakedown.run: "{run_id}"}}}}
spec:
  maxUnavailable: 1
  selector: {{matchLabels: {{app: {APP}}}}}
"#
        )
    });
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {APP}, namespace: default, labels: {{app: {APP}, io.shakedown.run: "{run_id}"}}}}
spec:
  replicas: {REPLICAS}
  selector: {{matchLabels: {{app: {APP}}}}}
  template:
    metadata: {{labels: {{app: {APP}}}}}
    spec:
      # The control-plane taints only: a pod tolerating every taint would tolerate
      # node.kubernetes.io/unschedulable too and come back to the node being drained.
      tolerations:
      - {{key: node-role.kubernetes.io/master, operator: Exists, effect: NoSchedule}}
      - {{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}}
      # A well-behaved backend: it keeps serving for 5 s after it is told to stop, while
      # the endpoints controller and every kube-proxy drop it. Without that, each drain
      # measures how fast a deleted pod leaves iptables, not what the upgrade did.
      terminationGracePeriodSeconds: 10
      containers:
      - name: netexec
        image: {image}
        imagePullPolicy: {pull}
        args: [netexec, --http-port=8080]
        readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}
        lifecycle: {{preStop: {{exec: {{command: [sleep, "5"]}}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: {APP}, namespace: default, labels: {{io.shakedown.run: "{run_id}"}}}}
spec:
  selector: {{app: {APP}}}
  ports: [{{port: 80, targetPort: 8080}}]
{pdb}"#
    )
}

/// A DaemonSet pinned to one node (drains leave DaemonSet pods alone), probing the
/// Service's ClusterIP every second with a fresh connection and logging each result.
pub fn prober_yaml(image: &str, pull: &str, node: &str, ip: &str, run_id: &str) -> String {
    let script = format!(
        "while :; do if curl -s -m 1 -o /dev/null http://{ip}/; then r=ok; else r=fail; fi; echo \"$(date +%s%3N) $r\"; sleep 1; done"
    );
    format!(
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: {PROBER}, namespace: default, labels: {{io.shakedown.run: "{run_id}"}}}}
spec:
  selector: {{matchLabels: {{app: {PROBER}}}}}
  template:
    metadata: {{labels: {{app: {PROBER}}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      tolerations: [{{operator: Exists}}]
      containers:
      - name: probe
        image: {image}
        imagePullPolicy: {pull}
        command: [sh, -c, {script:?}]
"#
    )
}

fn sub(name: &str, t: Instant, outcome: StepOutcome) -> SubTest {
    SubTest {
        name: name.to_string(),
        outcome,
        duration: t.elapsed(),
        flaky: None,
    }
}

/// A part of the hop that did not run, and why.
fn not_run(name: &str, why: &str) -> SubTest {
    sub(
        name,
        Instant::now(),
        StepOutcome::Skipped {
            reason: format!("not run: {why}"),
        },
    )
}

fn outcome(r: &Result<impl Sized, String>) -> StepOutcome {
    match r {
        Ok(_) => StepOutcome::Passed,
        Err(e) => StepOutcome::test_failure(e.clone()),
    }
}

/// kubectl with the admin kubeconfig, on the first control plane.
fn kubectl<S: AsRef<str>>(c: &Cluster, args: &[S]) -> Cmd {
    let mut a = vec![
        "kubectl".to_string(),
        "--kubeconfig=/etc/kubernetes/admin.conf".into(),
    ];
    a.extend(args.iter().map(|s| s.as_ref().to_string()));
    c.exec(&c.first_control_plane().name, &a)
}

fn chain(e: &crate::process::CommandError) -> String {
    crate::error::chain(e)
}

/// Copies kubeadm, kubelet and kubectl of `bin_dir` into `/opt/shakedown/<version>/` on
/// the node; nothing is installed yet.
pub async fn stage_binaries(
    r: &Runner,
    c: &Cluster,
    node: &str,
    bin_dir: &std::path::Path,
    version: &str,
) -> Result<(), String> {
    let dir = format!("{STAGED}/{version}");
    r.run(c.exec(node, &["mkdir", "-p", &dir]))
        .await
        .map_err(|e| chain(&e))?;
    for b in crate::images::NODE_BINARIES {
        r.run(c.copy_to(node, &bin_dir.join(b), &format!("{dir}/{b}")))
            .await
            .map_err(|e| chain(&e))?;
    }
    Ok(())
}

/// Installs staged binaries over the node's own (`install` replaces the file, so a
/// running kubelet keeps its old inode).
pub fn install_cmd(c: &Cluster, node: &str, version: &str, binaries: &[&str]) -> Cmd {
    let script = binaries
        .iter()
        .map(|b| format!("install -m 0755 {STAGED}/{version}/{b} /usr/bin/{b}"))
        .collect::<Vec<_>>()
        .join(" && ");
    c.exec(node, &["sh", "-c", &script])
}

/// Waits for the node to be Ready with its kubelet at `version` (bounded).
async fn wait_node_at(
    cx: &StepContext<'_>,
    kube: &kube::Client,
    node: &str,
    version: &str,
) -> Result<(), String> {
    let nodes: kube::Api<Node> = kube::Api::all(kube.clone());
    let t = Instant::now();
    let every = Duration::from_secs(2);
    let mut last = String::from("not checked yet");
    while t.elapsed() < NODE_BACK_WITHIN {
        match nodes.get(node).await {
            Ok(n) => match nodes_at(std::slice::from_ref(&n), &[node.to_string()], version) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            },
            Err(e) => last = format!("failed to read node {node}: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = cx.cancel.cancelled() => return Err(format!("stopped: {last}")),
        }
    }
    Err(format!("after {NODE_BACK_WITHIN:?}: {last}"))
}

/// The leader of `component` as the API records it: its Lease, or before Leases the
/// annotation on its Endpoints.
async fn leader_of(kube: &kube::Client, component: &str) -> Result<Option<Leader>, String> {
    let leases: kube::Api<Lease> = kube::Api::namespaced(kube.clone(), "kube-system");
    match leases.get_opt(component).await {
        Ok(Some(l)) => return Ok(lease_leader(&l)),
        Ok(None) => {}
        // A cluster without the Lease API answers 404 for the resource as a whole.
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(format!("failed to read the {component} lease: {e}")),
    }
    let eps: kube::Api<Endpoints> = kube::Api::namespaced(kube.clone(), "kube-system");
    eps.get_opt(component)
        .await
        .map(|e| e.and_then(|e| annotated_leader(&e.metadata)))
        .map_err(|e| format!("failed to read the {component} endpoints: {e}"))
}

/// Waits until the controller-manager and the scheduler each have a leader renewing its
/// lease. The upgrade restarts them: a drain while the restarted leader's lease runs out
/// evicts pods that nothing removes from the Service's endpoints or replaces, and
/// measured here that cost the Service 9 s. Returns how long it waited.
async fn wait_leaders(cx: &StepContext<'_>, kube: &kube::Client) -> Result<Duration, String> {
    let t = Instant::now();
    // The first look may show a stopped leader's record: each must change from it.
    let mut first: Option<Vec<Option<Leader>>> = None;
    let mut last = String::from("not checked yet");
    while t.elapsed() < LEADERS_BACK_WITHIN {
        let mut now = Vec::new();
        for c in LEADER_ELECTED {
            match leader_of(kube, c).await {
                Ok(l) => now.push(l),
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
        if now.len() == LEADER_ELECTED.len() {
            match &first {
                None => {
                    last = "first look".into();
                    first = Some(now);
                }
                Some(f) => {
                    let wrong: Vec<String> = LEADER_ELECTED
                        .iter()
                        .zip(now.iter().zip(f))
                        .filter_map(|(c, (n, f))| {
                            leader_renewed_since(c, n.as_ref(), f.as_ref()).err()
                        })
                        .collect();
                    if wrong.is_empty() {
                        return Ok(t.elapsed());
                    }
                    last = wrong.join("; ");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = cx.cancel.cancelled() => return Err(format!("stopped: {last}")),
        }
    }
    Err(format!(
        "no working leader within {LEADERS_BACK_WITHIN:?}: {last}"
    ))
}

/// One node: (kubeadm upgrade node,) drain once the controllers have leaders, install
/// kubelet and kubectl, restart kubelet, wait for it Ready at the target, uncordon.
async fn upgrade_node(
    cx: &StepContext<'_>,
    c: &Cluster,
    kube: &kube::Client,
    h: &Hop,
    n: &NodeInfo,
    kubeadm_node: bool,
) -> Result<(), String> {
    let r = cx.runner();
    let fail = |what: &str, e: crate::process::CommandError| {
        format!("{}: failed to {what}: {}", n.name, chain(&e))
    };
    let args = if kubeadm_node {
        upgrade_node_args(&h.to, n.role == crate::provider::Role::ControlPlane)
            .map_err(|e| format!("{}: {e}", n.name))?
    } else {
        None
    };
    if let Some(args) = args {
        r.run(install_cmd(c, &n.name, &h.to, &["kubeadm"]))
            .await
            .map_err(|e| fail("install kubeadm", e))?;
        let mut a = vec!["kubeadm".to_string()];
        a.extend(args);
        r.run(c.exec(&n.name, &a))
            .await
            .map_err(|e| fail("run kubeadm upgrade node", e))?;
    }
    let waited = wait_leaders(cx, kube)
        .await
        .map_err(|e| format!("{}: not drained: {e}", n.name))?;
    if waited > Duration::from_secs(3) {
        cx.note(format!(
            "{}: waited {:.1}s before the drain until {} renewed their leader leases",
            n.name,
            waited.as_secs_f64(),
            LEADER_ELECTED.join(" and ")
        ));
    }
    let minor = skew::parse(&h.from).map(|v| v.minor).unwrap_or(20);
    r.run(kubectl(c, &drain_args(&n.name, minor)))
        .await
        .map_err(|e| fail("drain", e))?;
    r.run(install_cmd(c, &n.name, &h.to, &["kubelet", "kubectl"]))
        .await
        .map_err(|e| fail("install kubelet and kubectl", e))?;
    r.run(c.exec(
        &n.name,
        &[
            "sh",
            "-c",
            "systemctl daemon-reload && systemctl restart kubelet",
        ],
    ))
    .await
    .map_err(|e| fail("restart kubelet", e))?;
    wait_node_at(cx, kube, &n.name, &h.art.raw_version).await?;
    r.run(kubectl(c, &["uncordon", &n.name]))
        .await
        .map_err(|e| fail("uncordon", e))?;
    cx.note(format!(
        "{}: drained, kubelet {} running, uncordoned",
        n.name, h.art.raw_version
    ));
    Ok(())
}

/// Writes `yaml` to the first control plane, applies it, and waits for `what` to roll out
/// (bounded: 3 minutes).
async fn apply_and_wait(
    r: &Runner,
    c: &Cluster,
    name: &str,
    yaml: &str,
    what: &str,
) -> Result<(), String> {
    let cp = c.first_control_plane().name.clone();
    let path = format!("/etc/shakedown/{name}.yaml");
    r.run(c.write_file(&cp, &path, yaml))
        .await
        .map_err(|e| chain(&e))?;
    r.run(kubectl(c, &["apply", "-f", &path]))
        .await
        .map_err(|e| chain(&e))?;
    r.run(kubectl(c, &["rollout", "status", what, "--timeout=180s"]))
        .await
        .map_err(|e| chain(&e))
        .map(drop)
}

/// Makes the probed workload and its prober, and waits for both.
pub(super) async fn make_workload(cx: &StepContext<'_>, c: &Cluster) -> Result<Workload, String> {
    let art = cx
        .job()
        .artifacts
        .clone()
        .ok_or("failed to find the cluster's build")?;
    let r = cx.runner();
    let pull = art.image_set.pull_policy();
    // With one node a drain could never evict past a budget (the evicted pods have nowhere
    // to go): no budget then, and the Service is expected to go down while it drains.
    let pdb_api = (c.nodes.len() > 1).then_some(if art.version.minor >= 21 {
        "policy/v1"
    } else {
        "policy/v1beta1"
    });
    let run_id = &cx.run.settings.run_id;
    apply_and_wait(
        &r,
        c,
        "upgrade-workload",
        &workload_yaml(&art.image_set.agnhost, pull, pdb_api, run_id),
        &format!("deployment/{APP}"),
    )
    .await
    .map_err(|e| format!("the probed Deployment did not become available: {e}"))?;
    let ip = r
        .output(kubectl(
            c,
            &["get", "service", APP, "-o", "jsonpath={.spec.clusterIP}"],
        ))
        .await
        .map_err(|e| chain(&e))?;
    let prober_node = c
        .workers()
        .last()
        .unwrap_or_else(|| c.first_control_plane())
        .name
        .clone();
    apply_and_wait(
        &r,
        c,
        "upgrade-prober",
        &prober_yaml(
            &art.image_set.agnhost,
            pull,
            &prober_node,
            ip.trim(),
            run_id,
        ),
        &format!("daemonset/{PROBER}"),
    )
    .await
    .map_err(|e| format!("the prober did not start: {e}"))?;
    cx.note(format!(
        "workload: Deployment {APP} ({REPLICAS} replicas, {}) behind ClusterIP {}, probed every second from a pod on {prober_node}",
        if pdb_api.is_some() { "PodDisruptionBudget maxUnavailable 1" } else { "no PodDisruptionBudget: one node cannot be drained past one" },
        ip.trim()
    ));
    Ok(Workload { prober_node })
}

/// Removes the probed workload and its prober (best effort).
pub(super) async fn remove_workload(cx: &StepContext<'_>, c: &Cluster) {
    let _ = cx
        .runner()
        .run(kubectl(
            c,
            &[
                "delete",
                "deployment,service,poddisruptionbudget,daemonset",
                "-n",
                "default",
                APP,
                PROBER,
                "--ignore-not-found",
            ],
        ))
        .await;
}

/// The prober's log so far (bounded: 10 s).
pub(super) async fn prober_log(kube: &kube::Client) -> Result<String, String> {
    let pods: kube::Api<Pod> = kube::Api::namespaced(kube.clone(), "default");
    let work = async {
        let list = pods
            .list(&kube::api::ListParams::default().labels(&format!("app={PROBER}")))
            .await
            .map_err(|e| format!("failed to find the prober pod: {e}"))?;
        let name = list
            .items
            .first()
            .and_then(|p| p.metadata.name.clone())
            .ok_or("failed to find the prober pod: none is running")?;
        pods.logs(&name, &kube::api::LogParams::default())
            .await
            .map_err(|e| format!("failed to read the log of pod {name}: {e}"))
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| "failed to read the prober's log within 10s".to_string())?
}

/// Container restarts of the probed workload's pods, as they are now.
async fn workload_restarts(kube: &kube::Client) -> Option<i64> {
    let pods: kube::Api<Pod> = kube::Api::namespaced(kube.clone(), "default");
    let list = tokio::time::timeout(
        Duration::from_secs(10),
        pods.list(&kube::api::ListParams::default().labels(&format!("app={APP}"))),
    )
    .await
    .ok()?
    .ok()?;
    Some(
        list.items
            .iter()
            .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
            .flatten()
            .map(|s| i64::from(s.restart_count))
            .sum(),
    )
}

/// The hop's work, in order; each part its own testcase. Stops at the first failure, and
/// records what did not run as skipped.
async fn walk(
    cx: &StepContext<'_>,
    c: &Cluster,
    kube: &kube::Client,
    h: &Hop,
    subs: &mut Vec<SubTest>,
) -> Result<(), StepError> {
    let r = cx.runner();
    let cp1 = c.first_control_plane().clone();
    let later_cps: Vec<NodeInfo> = c.control_planes().skip(1).cloned().collect();
    let workers: Vec<NodeInfo> = c.workers().cloned().collect();
    let all = all_names(&cp1, &later_cps, &workers);
    let stopped = |subs: &mut Vec<SubTest>, failed: &str| {
        for p in pending_left(subs, failed, &all) {
            subs.push(not_run(&p, &format!("{failed} failed")));
        }
    };
    macro_rules! check {
        ($name:expr, $t:expr, $res:expr) => {{
            let name: String = $name;
            let res: Result<(), String> = $res;
            subs.push(sub(&name, $t, outcome(&res)));
            if let Err(e) = res {
                stopped(subs, &name);
                return Err(StepError::new(format!(
                    "failed the upgrade hop {} → {} at {name}: {e}",
                    h.from, h.to
                )));
            }
        }};
    }

    // 1. Backup first, and prove it restores.
    let t = Instant::now();
    let backup = super::etcd::backup_and_drill(cx, c)
        .await
        .map_err(|e| e.to_string());
    check!("etcd-backup".into(), t, backup);

    // 2. The target's binaries and images on every node, nothing installed yet.
    let t = Instant::now();
    let staged = async {
        let jobs = c.nodes.iter().map(|n| {
            let r = r.clone();
            async move {
                stage_binaries(&r, c, &n.name, &h.art.bin_dir, &h.to).await?;
                if let Some(tar) = &h.art.image_set.preload {
                    r.run(c.load_image(&n.name, tar, h.art.runtime))
                        .await
                        .map_err(|e| chain(&e))?;
                }
                for omit in &h.omit {
                    let image = format!(
                        "{}/{omit}:{}",
                        h.art.image_set.repository,
                        crate::release::era::image_tag(&h.art.raw_version)
                    );
                    r.run(c.exec(&n.name, &["ctr", "-n", "k8s.io", "images", "rm", &image]))
                        .await
                        .map_err(|e| chain(&e))?;
                }
                Ok::<(), String>(())
            }
        });
        futures::future::try_join_all(jobs).await.map(drop)
    }
    .await;
    if staged.is_ok() && !h.omit.is_empty() {
        cx.note(format!(
            "fault injection (upgrade.omit_images): {} of {} removed from every node",
            h.omit.join(", "),
            h.to
        ));
    }
    check!("stage".into(), t, staged);

    // 3. The first control plane: plan, apply, then its kubelet.
    let t = Instant::now();
    let plan = async {
        r.run(install_cmd(c, &cp1.name, &h.to, &["kubeadm"]))
            .await
            .map_err(|e| chain(&e))?;
        let out = r
            .output(c.exec(&cp1.name, &kubeadm_upgrade(&["plan"], &h.to)))
            .await
            .map_err(|e| chain(&e))?;
        let wanted = out.lines().filter(|l| l.contains(&h.to)).count();
        cx.note(format!(
            "kubeadm upgrade plan: {wanted} line(s) name {}",
            h.to
        ));
        if wanted == 0 {
            return Err(format!(
                "kubeadm upgrade plan {} does not name the target in its plan",
                h.to
            ));
        }
        Ok(())
    }
    .await;
    check!("kubeadm-upgrade-plan".into(), t, plan);
    let t = Instant::now();
    let apply = r
        .run(c.exec(&cp1.name, &kubeadm_upgrade(&["apply", "--yes"], &h.to)))
        .await
        .map(drop)
        .map_err(|e| chain(&e));
    check!("kubeadm-upgrade-apply".into(), t, apply);
    let t = Instant::now();
    let res = upgrade_node(cx, c, kube, h, &cp1, false).await;
    check!(format!("node/{}", cp1.name), t, res);

    // 4. The other control planes, one at a time.
    for n in &later_cps {
        let t = Instant::now();
        let res = upgrade_node(cx, c, kube, h, n, true).await;
        check!(format!("node/{}", n.name), t, res);
    }

    // 5. Workers, max_unavailable at a time.
    for batch in workers.chunks(h.max_unavailable.max(1)) {
        let t = Instant::now();
        let results =
            futures::future::join_all(batch.iter().map(|n| upgrade_node(cx, c, kube, h, n, true)))
                .await;
        let mut first_err = None;
        for (n, res) in batch.iter().zip(results) {
            subs.push(sub(&format!("node/{}", n.name), t, outcome(&res)));
            if let (Err(e), None) = (res, &first_err) {
                first_err = Some((n.name.clone(), e));
            }
        }
        if let Some((name, e)) = first_err {
            stopped(subs, &format!("node/{name}"));
            return Err(StepError::new(format!(
                "failed the upgrade hop {} → {} at node/{name}: {e}",
                h.from, h.to
            )));
        }
    }

    // 6. Gates: nothing goes on blindly.
    let tag = crate::release::era::image_tag(&h.art.raw_version);
    let cps: Vec<String> = c.control_planes().map(|n| n.name.clone()).collect();
    let pods: kube::Api<Pod> = kube::Api::namespaced(kube.clone(), "kube-system");
    let t = Instant::now();
    let res = gate_poll(cx, || async {
        let list = pods
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        static_pods_at(&list.items, &cps, &tag)
    })
    .await;
    let res = match res {
        Ok(()) => api_server_versions(cx, c, &h.art.raw_version).await,
        e => e,
    };
    check!("gate/static-pods-at-target".into(), t, res);
    let t = Instant::now();
    let all = c.node_names();
    let nodes: kube::Api<Node> = kube::Api::all(kube.clone());
    let res = gate_poll(cx, || async {
        let list = nodes
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        nodes_at(&list.items, &all, &h.art.raw_version)
    })
    .await;
    check!("gate/nodes-ready-at-target".into(), t, res);
    let t = Instant::now();
    // An image no node has and none can pull does not come: give up on it after 20 s.
    let stuck_since = std::sync::Mutex::new(None::<Instant>);
    let daemonsets: kube::Api<k8s_openapi::api::apps::v1::DaemonSet> =
        kube::Api::namespaced(kube.clone(), "kube-system");
    let res = gate_poll(cx, || async {
        let list = pods
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        // The DaemonSets first: right after `upgrade apply` the old kube-proxy pods are
        // still there and Ready, until the controller acts on the new spec.
        let ds = daemonsets
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let ready = daemonsets_rolled_out(&ds.items)
            .and_then(|()| system_pods_ready(&list.items).map(drop));
        let mut since = stuck_since.lock().unwrap_or_else(|e| e.into_inner());
        match (&ready, image_pull_stuck(&list.items)) {
            (Err(e), Some(stuck)) => {
                let first = *since.get_or_insert_with(Instant::now);
                if first.elapsed() >= IMAGE_STUCK_FOR {
                    return Err(GateStop::Final(format!(
                        "{stuck} for {:.0}s (no node has the image and none can pull it); {e}",
                        first.elapsed().as_secs_f64()
                    )));
                }
            }
            _ => *since = None,
        }
        ready.map_err(GateStop::Again)
    })
    .await;
    check!("gate/kube-system-ready".into(), t, res);
    let t = Instant::now();
    let res = ha::wait_etcd_healthy(cx, c).await.map(|members| {
        cx.note(format!("etcd members healthy: {}", members.join(", ")));
    });
    check!("gate/etcd-healthy".into(), t, res);
    let t = Instant::now();
    let res = super::smoke::run_checks(cx, c).await;
    let smoke_res = match &res {
        Ok(results) => {
            let failed: Vec<&str> = results
                .iter()
                .filter(|r| matches!(r.outcome, StepOutcome::Failed { .. }))
                .map(|r| r.name.as_str())
                .collect();
            if failed.is_empty() {
                Ok(())
            } else {
                Err(format!("smoke checks failed: {}", failed.join(", ")))
            }
        }
        Err(e) => Err(e.to_string()),
    };
    if let Ok(results) = res {
        for s in results {
            subs.push(SubTest {
                name: format!("gate/smoke/{}", s.name),
                ..s
            });
        }
    }
    check!("gate/smoke".into(), t, smoke_res);
    Ok(())
}

fn all_names(cp1: &NodeInfo, later: &[NodeInfo], workers: &[NodeInfo]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "etcd-backup".into(),
        "stage".into(),
        "kubeadm-upgrade-plan".into(),
        "kubeadm-upgrade-apply".into(),
    ];
    for n in std::iter::once(cp1).chain(later).chain(workers) {
        v.push(format!("node/{}", n.name));
    }
    for g in [
        "gate/static-pods-at-target",
        "gate/nodes-ready-at-target",
        "gate/kube-system-ready",
        "gate/etcd-healthy",
        "gate/smoke",
    ] {
        v.push(g.into());
    }
    v
}

/// The parts not recorded yet (nor `failed`), in order.
fn pending_left(subs: &[SubTest], failed: &str, all: &[String]) -> Vec<String> {
    all.iter()
        .filter(|n| n.as_str() != failed && !subs.iter().any(|s| &s.name == *n))
        .cloned()
        .collect()
}

/// Why a gate check did not pass: not yet, or not ever.
enum GateStop {
    Again(String),
    Final(String),
}

impl From<String> for GateStop {
    fn from(e: String) -> GateStop {
        GateStop::Again(e)
    }
}

/// How long a pod may wait on an image pull error before the gate gives up on it.
const IMAGE_STUCK_FOR: Duration = Duration::from_secs(20);

/// The first container that waits on an image it cannot get, with its reason.
pub fn image_pull_stuck(pods: &[Pod]) -> Option<String> {
    pods.iter().find_map(|p| {
        let status = p.status.as_ref()?;
        status.container_statuses.iter().flatten().find_map(|cs| {
            let w = cs.state.as_ref()?.waiting.as_ref()?;
            let reason = w.reason.as_deref()?;
            matches!(
                reason,
                "ErrImagePull" | "ImagePullBackOff" | "ErrImageNeverPull" | "InvalidImageName"
            )
            .then(|| {
                format!(
                    "pod {}/{} container {} waits: {reason} ({})",
                    p.metadata.namespace.as_deref().unwrap_or_default(),
                    p.metadata.name.as_deref().unwrap_or_default(),
                    cs.name,
                    cs.image
                )
            })
        })
    })
}

/// A gate check, polled every 2 s for up to 3 minutes (and never past the step), unless it
/// says it will never pass.
async fn gate_poll<F, Fut, E>(cx: &StepContext<'_>, mut check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: Into<GateStop>,
{
    let limit = Duration::from_secs(180);
    let t = Instant::now();
    let mut waited_on = None;
    let mut beat = crate::readiness::Heartbeat::new();
    loop {
        let last = match check().await.map_err(Into::into) {
            Ok(()) => {
                if let Some(w) = waited_on.filter(|_| t.elapsed() > Duration::from_secs(10)) {
                    cx.note(format!(
                        "waited {:.0}s, last for: {w}",
                        t.elapsed().as_secs_f64()
                    ));
                }
                return Ok(());
            }
            Err(GateStop::Final(e)) => return Err(e),
            Err(GateStop::Again(e)) => e,
        };
        if let Some(line) = beat.due(&last) {
            cx.note(line);
        }
        waited_on = Some(last.clone());
        if t.elapsed() > limit {
            return Err(format!("after {limit:?}: {last}"));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = cx.cancel.cancelled() => return Err(format!("stopped: {last}")),
        }
    }
}

/// Each API server, asked directly (not through the load balancer), reports the target's
/// version: the running binary is the new one, not only the manifest.
async fn api_server_versions(cx: &StepContext<'_>, c: &Cluster, want: &str) -> Result<(), String> {
    let r = cx.runner();
    let mut wrong = Vec::new();
    for cp in c.control_planes() {
        let out = r
            .output(c.exec(
                &cp.name,
                &[
                    "kubectl",
                    "--kubeconfig=/etc/kubernetes/admin.conf",
                    &format!("--server=https://{}:6443", cp.ip),
                    "version",
                    "-o",
                    "json",
                ],
            ))
            .await
            .map_err(|e| chain(&e))?;
        let v: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| format!("failed to parse `kubectl version` from {}: {e}", cp.name))?;
        let got = v["serverVersion"]["gitVersion"]
            .as_str()
            .unwrap_or_default();
        if got != want {
            wrong.push(format!(
                "the API server of {} reports {got}, want {want}",
                cp.name
            ));
        }
    }
    if wrong.is_empty() {
        cx.note(format!(
            "every API server reports {want} when asked directly"
        ));
        Ok(())
    } else {
        Err(wrong.join("; "))
    }
}

#[async_trait::async_trait]
impl Action for Upgrade {
    fn describe(&self, cx: &StepContext<'_>) -> Vec<String> {
        let s = &cx.run.scenario.scenario;
        let (Some(u), Some(k)) = (&s.upgrade, cx.step.hop) else {
            return vec!["fail: no upgrade hop is planned for this step".into()];
        };
        let to = u.through.get(k).cloned().unwrap_or_default();
        let d = &s.disruption;
        vec![
            format!("hop {} of {} to {to}: save and restore-drill an etcd snapshot", k + 1, u.through.len()),
            format!("copy {to}'s kubeadm, kubelet and kubectl into {STAGED}/{to}/ on every node and load its images{}", if u.omit_images.is_empty() { String::new() } else { format!(" without {} (fault injection)", u.omit_images.join(", ")) }),
            format!("kubeadm upgrade plan, then upgrade apply {to} on the first control plane; upgrade node on the others one at a time"),
            format!("drain, install kubelet and kubectl, restart kubelet, wait Ready at {to}, uncordon: control planes one at a time, workers {} at a time", u.max_unavailable),
            "gates: static pods on the target images and each API server reporting it; every node Ready at the target kubelet; kube-system Ready; etcd healthy; smoke".into(),
            format!("probe the API every second and a Service (Deployment of {REPLICAS}, PodDisruptionBudget) every second from a pod; fail if unavailable longer than {:?} (API) or {:?} (Service)", d.api_max, d.service_max),
        ]
    }

    async fn run(&self, cx: &mut StepContext<'_>) -> Result<(), StepError> {
        let s = cx.run.scenario.clone();
        let u = s.scenario.upgrade.as_ref().ok_or_else(|| {
            StepError::new("failed to upgrade: the scenario has no `upgrade:` block")
        })?;
        let k = cx
            .step
            .hop
            .ok_or_else(|| StepError::new("failed to upgrade: no hop is planned for this step"))?;
        let to = u.through[k].clone();
        let art = cx.job().other_builds.get(&to).cloned().ok_or_else(|| {
            StepError::infra(format!(
                "failed to find the build of {to}: the image-build step builds every hop"
            ))
        })?;
        let from = if k == 0 {
            cx.job()
                .artifacts
                .as_ref()
                .map(|a| a.raw_version.clone())
                .unwrap_or_default()
        } else {
            let prev = &u.through[k - 1];
            cx.job()
                .other_builds
                .get(prev)
                .map(|a| a.raw_version.clone())
                .unwrap_or_else(|| prev.clone())
        };
        // Markers are resolved only now: check the hop as load time checks fixed versions.
        skew::check_hop(&from, &art.raw_version).map_err(|e| {
            StepError::new(format!(
                "failed to plan the upgrade hop {from} → {}: {e}",
                art.raw_version
            ))
        })?;
        let hop = Hop {
            to: art.raw_version.clone(),
            from,
            art,
            omit: u.omit_images.clone(),
            max_unavailable: u.max_unavailable as usize,
            last: k + 1 == u.through.len(),
        };
        let workload = cx.job().upgrade_workload.clone();
        let (subs, result, workload) = {
            let c = cluster(cx)?;
            run_hop(cx, c, &hop, workload).await
        };
        cx.subtests = subs;
        cx.property("upgrade.from", &hop.from);
        cx.property("upgrade.to", &hop.to);
        cx.job_mut().upgrade_workload = workload;
        result
    }
}

/// The hop with its probes around it; the disruption figures are written however the hop
/// ended.
async fn run_hop(
    cx: &StepContext<'_>,
    c: &Cluster,
    h: &Hop,
    workload: Option<Workload>,
) -> (Vec<SubTest>, Result<(), StepError>, Option<Workload>) {
    let mut subs = Vec::new();
    // Before the hop could start: every part of it, and its figures, recorded as not run.
    let not_started = |mut subs: Vec<SubTest>, why: &str| {
        let cp1 = c.first_control_plane().clone();
        let later: Vec<NodeInfo> = c.control_planes().skip(1).cloned().collect();
        let workers: Vec<NodeInfo> = c.workers().cloned().collect();
        let mut names = all_names(&cp1, &later, &workers);
        names.extend([
            "disruption/api".to_string(),
            "disruption/service".to_string(),
        ]);
        for n in names {
            subs.push(not_run(&n, why));
        }
        subs
    };
    // One read of the kubeconfig: the probes need the config, everything else a client.
    let connected = match client_config(c).await {
        Ok(cfg) => client_of(cfg.clone()).map(|k| (k, cfg)),
        Err(e) => Err(e),
    };
    let (kube, cfg) = match connected {
        Ok(x) => x,
        Err(e) => {
            return (
                not_started(subs, "no client for the cluster"),
                Err(e),
                workload,
            )
        }
    };
    let workload = match workload {
        Some(w) => w,
        None => {
            let t = Instant::now();
            match make_workload(cx, c).await {
                Ok(w) => {
                    subs.push(sub("disruption/workload-ready", t, StepOutcome::Passed));
                    w
                }
                Err(e) => {
                    subs.push(sub(
                        "disruption/workload-ready",
                        t,
                        StepOutcome::test_failure(e.clone()),
                    ));
                    return (
                        not_started(subs, "the probed workload did not come up"),
                        Err(StepError::new(format!(
                            "failed to make the workload probed during the upgrade: {e}"
                        ))),
                        None,
                    );
                }
            }
        }
    };
    let started_ms = now_ms();
    let started = Instant::now();
    let done = tokio_util::sync::CancellationToken::new();
    let probing = ha::probe_until(&cfg, API_PROBE_EVERY, &done, &cx.cancel);
    let work = async {
        let r = walk(cx, c, &kube, h, &mut subs).await;
        done.cancel();
        r
    };
    let (result, api) = tokio::join!(work, probing);
    let end = Instant::now();
    let end_ms = now_ms();

    // The figures, whatever happened.
    let d = &cx.run.scenario.scenario.disruption;
    let (api_window, failed, answering) = ha::longest_outage_window(&api, end);
    let longest = api_window.map_or(Duration::ZERO, |(a, b)| b.duration_since(a));
    // When, from the hop's start: the window a failure names.
    let when = api_window.map_or_else(String::new, |(a, b)| {
        format!(
            " from {:.1}s to {:.1}s into the hop",
            a.duration_since(started).as_secs_f64(),
            b.duration_since(started).as_secs_f64()
        )
    });
    cx.note(format!(
        "disruption {} → {}: API {} probe(s), {failed} failed, longest unavailability {:.1}s{when} (allowed {:?}), answering at the end: {answering}",
        h.from, h.to, api.len(), longest.as_secs_f64(), d.api_max
    ));
    cx.property("upgrade.api.probes", api.len());
    cx.property("upgrade.api.failed", failed);
    cx.property(
        "upgrade.api.longest_seconds",
        format!("{:.1}", longest.as_secs_f64()),
    );
    let api_verdict = if !answering {
        Err(format!(
            "the API was not answering at the end of the hop to {}",
            h.to
        ))
    } else if longest > d.api_max {
        Err(format!(
            "the API was unavailable for {:.1}s{when} during the hop {} → {}, more than the allowed {:?}",
            longest.as_secs_f64(),
            h.from,
            h.to,
            d.api_max
        ))
    } else {
        Ok(())
    };
    subs.push(SubTest {
        name: "disruption/api".into(),
        outcome: outcome(&api_verdict),
        duration: end.duration_since(started),
        flaky: None,
    });
    // Err((true, why)): the figure could not be measured, an infrastructure failure.
    let svc_verdict: Result<(), (bool, String)> = match prober_log(&kube).await {
        Ok(log) => {
            let samples = parse_probe_log(&log);
            let (n, longest, failed, answering) = window(&samples, started_ms, end_ms);
            // The pods there now: those a drain replaced took their counts with them.
            let restarts = workload_restarts(&kube)
                .await
                .map_or_else(|| "unknown".to_string(), |r| r.to_string());
            cx.note(format!(
                "disruption {} → {}: Service {} probe(s) from {}, {failed} failed, longest unavailability {:.1}s (allowed {:?}), answering at the end: {answering}; container restarts of the workload's pods at the end: {restarts}",
                h.from, h.to, n, workload.prober_node, longest.as_secs_f64(), d.service_max
            ));
            cx.property("upgrade.service.probes", n);
            cx.property("upgrade.service.failed", failed);
            cx.property(
                "upgrade.service.longest_seconds",
                format!("{:.1}", longest.as_secs_f64()),
            );
            cx.property("upgrade.workload.restarts", &restarts);
            if n == 0 {
                Err((
                    true,
                    "the prober recorded no probe during the hop".to_string(),
                ))
            } else if !answering {
                Err((
                    false,
                    format!(
                        "the Service was not answering at the end of the hop to {}",
                        h.to
                    ),
                ))
            } else if longest > d.service_max {
                Err((
                    false,
                    format!(
                        "the Service was unavailable for {:.1}s during the hop {} → {}, more than the allowed {:?}",
                        longest.as_secs_f64(),
                        h.from,
                        h.to,
                        d.service_max
                    ),
                ))
            } else {
                Ok(())
            }
        }
        Err(e) => Err((true, e)),
    };
    subs.push(SubTest {
        name: "disruption/service".into(),
        outcome: match &svc_verdict {
            Ok(()) => StepOutcome::Passed,
            Err((false, e)) => StepOutcome::test_failure(e.clone()),
            Err((true, e)) => StepOutcome::Skipped {
                reason: format!("not measured: {e}"),
            },
        },
        duration: end.duration_since(started),
        flaky: None,
    });
    if h.last || result.is_err() {
        // The chain is done with them (a failed hop ends it).
        remove_workload(cx, c).await;
    }
    let result = result.and_then(|()| {
        api_verdict.map_err(|e| StepError::new(format!("failed the disruption threshold: {e}")))?;
        svc_verdict.map_err(|(infra, e)| {
            if infra {
                StepError::infra(format!("failed to measure the Service's disruption: {e}"))
            } else {
                StepError::new(format!("failed the disruption threshold: {e}"))
            }
        })
    });
    (subs, result, Some(workload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prereleases_need_their_flag() {
        assert!(prerelease_flags("v1.20.3").is_empty());
        assert_eq!(
            prerelease_flags("v1.21.0-rc.0"),
            ["--allow-release-candidate-upgrades"]
        );
        assert_eq!(
            prerelease_flags("v1.20.3-shakedown.1"),
            ["--allow-experimental-upgrades"]
        );
    }

    #[test]
    fn apply_names_the_target_and_the_flag_it_needs() {
        assert_eq!(
            kubeadm_upgrade(&["apply", "--yes"], "v1.20.3-shakedown.1").join(" "),
            "kubeadm upgrade apply --yes v1.20.3-shakedown.1 --allow-experimental-upgrades --ignore-preflight-errors=all"
        );
    }

    #[test]
    fn node_upgrades_follow_kubeadms_history() {
        assert_eq!(
            upgrade_node_args("v1.20.3", true).unwrap().unwrap()[..2],
            ["upgrade", "node"]
        );
        assert!(upgrade_node_args("v1.12.10", false)
            .unwrap()
            .unwrap()
            .contains(&"config".to_string()));
        // 1.8-1.10: workers only swap their kubelet.
        assert_eq!(upgrade_node_args("v1.10.13", false).unwrap(), None);
        assert!(upgrade_node_args("v1.12.10", true)
            .unwrap_err()
            .contains("1.15"));
        assert!(upgrade_node_args("v1.7.0", false)
            .unwrap_err()
            .contains("1.8"));
        assert!(drain_args("w1", 20).contains(&"--delete-emptydir-data".to_string()));
        assert!(drain_args("w1", 19).contains(&"--delete-local-data".to_string()));
    }

    #[test]
    fn the_service_window_counts_only_its_own_probes() {
        let log = "1000 ok\n2000 ok\n3000 fail\n4000 fail\n5000 ok\nnoise\n6000 fail\n7000 ok\n";
        let s = parse_probe_log(log);
        assert_eq!(s.len(), 7);
        // The whole log: the longest gap is 2000 → 5000.
        let (n, longest, failed, answering) = window(&s, 0, 8000);
        assert_eq!(
            (n, longest, failed, answering),
            (7, Duration::from_secs(3), 3, true)
        );
        // A window ending while down runs to its end and is not answering.
        let (n, longest, failed, answering) = window(&s, 1500, 4500);
        assert_eq!((n, failed, answering), (3, 2, false));
        assert_eq!(longest, Duration::from_millis(2500));
    }

    #[test]
    fn gates_read_versions_and_readiness() {
        let pods: Vec<Pod> = serde_yaml::from_str(
            r#"
- metadata: {name: kube-apiserver-cp1}
  spec: {containers: [{name: a, image: "shakedown.local/kube-apiserver:v1.20.3-shakedown.1"}]}
  status: {phase: Running, conditions: [{type: Ready, status: "True"}]}
- metadata: {name: kube-controller-manager-cp1}
  spec: {containers: [{name: a, image: "shakedown.local/kube-controller-manager:v1.20.2"}]}
  status: {phase: Running, conditions: [{type: Ready, status: "True"}]}
"#,
        )
        .unwrap();
        let e = static_pods_at(&pods, &["cp1".into()], "v1.20.3-shakedown.1").unwrap_err();
        assert!(
            e.contains(
                "kube-controller-manager-cp1 runs shakedown.local/kube-controller-manager:v1.20.2"
            ),
            "{e}"
        );
        assert!(e.contains("kube-scheduler-cp1: no such pod"), "{e}");
        assert!(!e.contains("kube-apiserver-cp1"), "{e}");

        let nodes: Vec<Node> = serde_yaml::from_str(
            r#"
- metadata: {name: cp1}
  status: {conditions: [{type: Ready, status: "True"}], nodeInfo: {kubeletVersion: v1.20.3-shakedown.1, architecture: "", bootID: "", containerRuntimeVersion: "", kernelVersion: "", kubeProxyVersion: "", machineID: "", operatingSystem: "", osImage: "", systemUUID: ""}}
- metadata: {name: w1}
  status: {conditions: [{type: Ready, status: "True"}], nodeInfo: {kubeletVersion: v1.20.2, architecture: "", bootID: "", containerRuntimeVersion: "", kernelVersion: "", kubeProxyVersion: "", machineID: "", operatingSystem: "", osImage: "", systemUUID: ""}}
"#,
        )
        .unwrap();
        let e = nodes_at(&nodes, &["cp1".into(), "w1".into()], "v1.20.3-shakedown.1").unwrap_err();
        assert_eq!(e, "w1: kubelet v1.20.2, want v1.20.3-shakedown.1");
        assert!(nodes_at(&nodes[..1], &["cp1".into()], "v1.20.3-shakedown.1").is_ok());
    }

    #[test]
    fn an_image_nobody_has_is_named() {
        let pods: Vec<Pod> = serde_yaml::from_str(
            r#"
- metadata: {name: kube-proxy-x, namespace: kube-system}
  status:
    phase: Pending
    containerStatuses:
    - {name: kube-proxy, image: "shakedown.local/kube-proxy:v1.20.3-shakedown.1", imageID: "", ready: false, restartCount: 0, state: {waiting: {reason: ImagePullBackOff}}}
- metadata: {name: etcd-cp1, namespace: kube-system}
  status: {phase: Running, containerStatuses: [{name: etcd, image: e, imageID: "", ready: true, restartCount: 0, state: {running: {}}}]}
"#,
        )
        .unwrap();
        assert_eq!(
            image_pull_stuck(&pods).unwrap(),
            "pod kube-system/kube-proxy-x container kube-proxy waits: ImagePullBackOff (shakedown.local/kube-proxy:v1.20.3-shakedown.1)"
        );
        assert!(image_pull_stuck(&pods[1..]).is_none());
    }

    #[test]
    fn the_workload_survives_drains_and_the_prober_stays_put() {
        assert!(!workload_yaml("img", "Never", None, "r1").contains("PodDisruptionBudget"));
        let w = workload_yaml("img", "Never", Some("policy/v1beta1"), "r1");
        assert!(w.contains("maxUnavailable: 1"));
        assert!(
            w.contains("key: node-role.kubernetes.io/master")
                && !w.contains("[{operator: Exists}]")
        );
        assert!(w.contains("apiVersion: policy/v1beta1"));
        let p = prober_yaml("img", "Never", "w1", "10.96.0.7", "r1");
        assert!(p.contains("kind: DaemonSet") && p.contains("kubernetes.io/hostname: w1"));
        assert!(p.contains("http://10.96.0.7/"));
        // Both parse as YAML documents.
        for doc in w.split("---\n").chain([p.as_str()]) {
            let v: serde_yaml::Value = serde_yaml::from_str(doc).unwrap();
            assert!(v["kind"].is_string());
        }
    }
}
