//! Readiness as small condition functions over API objects, each unit-tested against inline
//! YAML. A condition returns `Ok` when met, or `Err` with the reason a person needs: which
//! object, which condition, what it said.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::wait::await_condition;
use kube::Api;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("<unnamed>")
}

/// `Ready=True`; otherwise `node cp1 NotReady: <reason>: <message>`.
pub fn node_ready(node: &Node) -> Result<(), String> {
    let name = name_of(&node.metadata);
    let cond = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    match cond {
        None => Err(format!("node {name} has no Ready condition yet")),
        Some(c) if c.status == "True" => Ok(()),
        Some(c) => Err(format!(
            "node {name} NotReady: {}: {}",
            c.reason.as_deref().unwrap_or("no reason"),
            c.message.as_deref().unwrap_or("no message")
        )),
    }
}

/// Every expected node name is registered.
pub fn nodes_registered(expected: &[String], nodes: &[Node]) -> Result<(), String> {
    let have: Vec<&str> = nodes.iter().map(|n| name_of(&n.metadata)).collect();
    let missing: Vec<&str> = expected
        .iter()
        .map(String::as_str)
        .filter(|e| !have.contains(e))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "not registered yet: {} (registered: {})",
            missing.join(", "),
            if have.is_empty() {
                "none".into()
            } else {
                have.join(", ")
            }
        ))
    }
}

/// Whether every container of a Running pod is ready in fact though the pod's Ready
/// condition lags: each is ready, or started, running and without a readiness probe, which
/// is all that Ready means for such a container. kubelet 1.18-1.20 reports a container with
/// a startup probe and no readiness probe Ready only at the pod's next periodic sync, up to
/// a minute after the probe passed (kubernetes/kubernetes#95140); kubeadm 1.20 gives
/// kube-controller-manager and kube-scheduler exactly that. `started` exists from 1.16;
/// without it nothing is inferred.
fn started_without_readiness_probe(pod: &Pod) -> bool {
    let (Some(spec), Some(status)) = (&pod.spec, &pod.status) else {
        return false;
    };
    // Only the lag itself: kubelet said ContainersNotReady, no readiness gate decides, the
    // pod is not being deleted. A pod marked not ready for another reason (its node lost,
    // a gate unmet) is not second-guessed.
    let lagging = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.reason.as_deref() == Some("ContainersNotReady"));
    if !lagging
        || pod.metadata.deletion_timestamp.is_some()
        || spec.readiness_gates.as_ref().is_some_and(|g| !g.is_empty())
    {
        return false;
    }
    let statuses = status.container_statuses.as_deref().unwrap_or_default();
    !statuses.is_empty()
        && spec.containers.len() == statuses.len()
        && statuses.iter().all(|cs| {
            let running = cs.state.as_ref().is_some_and(|s| s.running.is_some());
            let probed = spec
                .containers
                .iter()
                .find(|c| c.name == cs.name)
                .is_none_or(|c| c.readiness_probe.is_some());
            cs.ready || (running && cs.started == Some(true) && !probed)
        })
}

/// Running with every container ready (or Succeeded for run-to-completion pods). A
/// container without a readiness probe is ready once started, even while kubelet has not
/// yet said so in the pod's Ready condition (see [`started_without_readiness_probe`]).
pub fn pod_ready(pod: &Pod) -> Result<(), String> {
    let name = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        name_of(&pod.metadata)
    );
    let Some(status) = &pod.status else {
        return Err(format!("pod {name} has no status yet"));
    };
    let phase = status.phase.as_deref().unwrap_or("Unknown");
    if phase == "Succeeded" {
        return Ok(());
    }
    // A waiting container says most: ErrImagePull, CrashLoopBackOff, ...
    for cs in status.container_statuses.iter().flatten() {
        if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            return Err(format!(
                "pod {name} container {} waiting: {}{}",
                cs.name,
                w.reason.as_deref().unwrap_or("unknown"),
                w.message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ));
        }
    }
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready");
    match ready {
        Some(c) if c.status == "True" && phase == "Running" => Ok(()),
        Some(_) if phase == "Running" && started_without_readiness_probe(pod) => Ok(()),
        Some(c) => Err(format!(
            "pod {name} {phase}, Ready={}{}",
            c.status,
            c.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )),
        None => {
            let sched = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "PodScheduled" && c.status != "True");
            match sched {
                Some(c) => Err(format!(
                    "pod {name} not scheduled: {}",
                    c.message.as_deref().unwrap_or("no message")
                )),
                None => Err(format!("pod {name} {phase}")),
            }
        }
    }
}

/// Every scheduled pod of the DaemonSet is updated and ready, and the controller has seen
/// the DaemonSet's latest spec: until then its counts describe the previous one (right
/// after `kubeadm upgrade apply` changes kube-proxy's image, the old pods still count as
/// updated and ready).
pub fn daemonset_rolled_out(ds: &DaemonSet) -> Result<(), String> {
    let name = name_of(&ds.metadata);
    let Some(s) = &ds.status else {
        return Err(format!("daemonset {name} has no status yet"));
    };
    let generation = ds.metadata.generation.unwrap_or(0);
    let observed = s.observed_generation.unwrap_or(0);
    if observed < generation {
        return Err(format!(
            "daemonset {name}: the controller has not seen generation {generation} yet (it saw {observed})"
        ));
    }
    let want = s.desired_number_scheduled;
    let ready = s.number_ready;
    let updated = s.updated_number_scheduled.unwrap_or(0);
    if want > 0 && ready == want && updated == want {
        Ok(())
    } else {
        Err(format!(
            "daemonset {name}: {ready}/{want} ready, {updated}/{want} updated"
        ))
    }
}

/// Waits for a single object's condition, bounded by a timeout and the step's cancellation.
pub async fn wait_for<K, C>(
    api: Api<K>,
    name: &str,
    cond: C,
    limit: Duration,
    cancel: &CancellationToken,
) -> Result<Option<K>, String>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    C: kube::runtime::wait::Condition<K>,
{
    tokio::select! {
        r = tokio::time::timeout(limit, await_condition(api, name, cond)) => match r {
            Ok(Ok(obj)) => Ok(obj),
            Ok(Err(e)) => Err(format!("failed to watch {name}: {e}")),
            Err(_) => Err(format!("{name} did not get there within {limit:?}")),
        },
        _ = cancel.cancelled() => Err(format!("stopped while waiting for {name}")),
    }
}

/// A pod whose containers have all ended, for `wait_for`.
pub fn pod_finished(p: Option<&Pod>) -> bool {
    matches!(
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// A Service's Endpoints list at least one ready address, for `wait_for`: until then
/// kube-proxy rejects connections to the ClusterIP ("has no endpoints").
pub fn endpoints_serving(e: Option<&k8s_openapi::api::core::v1::Endpoints>) -> bool {
    e.and_then(|e| e.subsets.as_ref()).is_some_and(|subsets| {
        subsets
            .iter()
            .any(|s| s.addresses.as_ref().is_some_and(|a| !a.is_empty()))
    })
}

/// Who holds a control-plane component's leader election, and when it last renewed: a
/// `coordination.k8s.io` Lease (1.14 and later) or, before Leases, the
/// `control-plane.alpha.kubernetes.io/leader` annotation on the component's Endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub holder: String,
    pub renewed: k8s_openapi::chrono::DateTime<k8s_openapi::chrono::Utc>,
}

/// The leader a Lease names, if it names one with a renew time.
pub fn lease_leader(lease: &k8s_openapi::api::coordination::v1::Lease) -> Option<Leader> {
    let spec = lease.spec.as_ref()?;
    Some(Leader {
        holder: spec.holder_identity.clone().filter(|h| !h.is_empty())?,
        renewed: spec.renew_time.as_ref()?.0,
    })
}

/// The leader the pre-Lease annotation names (`{"holderIdentity": ..., "renewTime": ...}`).
pub fn annotated_leader(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<Leader> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Record {
        holder_identity: String,
        renew_time: String,
    }
    let raw = meta
        .annotations
        .as_ref()?
        .get("control-plane.alpha.kubernetes.io/leader")?;
    let r: Record = serde_json::from_str(raw).ok()?;
    Some(Leader {
        holder: Some(r.holder_identity).filter(|h| !h.is_empty())?,
        renewed: k8s_openapi::chrono::DateTime::parse_from_rfc3339(&r.renew_time)
            .ok()?
            .with_timezone(&k8s_openapi::chrono::Utc),
    })
}

/// A component has a working leader when its record changed since it was `first` read: a
/// leader renews every couple of seconds, while a stopped one leaves its record as it was
/// until another takes over (1.20's controller-manager does not give the lease up when it
/// stops: measured here, 17-20 s without a leader after `kubeadm upgrade node` restarted
/// it). Comparing records, not clocks, keeps a node's clock out of it.
pub fn leader_renewed_since(
    component: &str,
    now: Option<&Leader>,
    first: Option<&Leader>,
) -> Result<(), String> {
    match (now, first) {
        (None, _) => Err(format!("{component}: no leader recorded")),
        (Some(_), None) => Ok(()),
        (Some(n), Some(f)) if n != f => Ok(()),
        (Some(n), Some(_)) => Err(format!(
            "{component}: leader {} has not renewed since {}",
            n.holder,
            n.renewed.to_rfc3339()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_counts_only_once_its_record_changes() {
        use k8s_openapi::api::coordination::v1::Lease;
        let lease = |holder: &str, at: &str| -> Lease {
            serde_yaml::from_str(&format!(
                "metadata: {{name: kube-controller-manager, namespace: kube-system}}
spec: {{holderIdentity: {holder}, leaseDurationSeconds: 15, renewTime: \"{at}\"}}"
            ))
            .unwrap()
        };
        let stopped = lease_leader(&lease("cp2_7b96", "2026-12-03T08:08:00.951469Z")).unwrap();
        assert_eq!(stopped.holder, "cp2_7b96");
        let e = leader_renewed_since("kcm", Some(&stopped), Some(&stopped)).unwrap_err();
        assert!(
            e.contains("leader cp2_7b96 has not renewed since 2026-12-03T08:08:00.951469+00:00"),
            "{e}"
        );
        let renewed = lease_leader(&lease("cp2_7b96", "2026-12-03T08:08:02.95Z")).unwrap();
        let taken_over = lease_leader(&lease("cp3_726c", "2026-12-03T08:08:17.906674Z")).unwrap();
        assert_eq!(
            leader_renewed_since("kcm", Some(&renewed), Some(&stopped)),
            Ok(())
        );
        assert_eq!(
            leader_renewed_since("kcm", Some(&taken_over), Some(&stopped)),
            Ok(())
        );
        assert_eq!(leader_renewed_since("kcm", Some(&stopped), None), Ok(()));
        assert!(leader_renewed_since("kcm", None, Some(&stopped))
            .unwrap_err()
            .contains("no leader"));
        let empty: Lease =
            serde_yaml::from_str("metadata: {name: x}\nspec: {holderIdentity: \"\"}").unwrap();
        assert_eq!(lease_leader(&empty), None);
    }

    #[test]
    fn the_pre_lease_annotation_names_a_leader_too() {
        use k8s_openapi::api::core::v1::Endpoints;
        let ep: Endpoints = serde_yaml::from_str(
            r#"metadata:
  name: kube-scheduler
  namespace: kube-system
  annotations:
    control-plane.alpha.kubernetes.io/leader: '{"holderIdentity":"master-1","leaseDurationSeconds":15,"acquireTime":"2017-03-28T10:00:00Z","renewTime":"2017-03-28T10:05:02Z","leaderTransitions":0}'
"#,
        )
        .unwrap();
        let l = annotated_leader(&ep.metadata).unwrap();
        assert_eq!(l.holder, "master-1");
        assert_eq!(l.renewed.to_rfc3339(), "2017-03-28T10:05:02+00:00");
        let bare: Endpoints = serde_yaml::from_str("metadata: {name: kube-scheduler}").unwrap();
        assert_eq!(annotated_leader(&bare.metadata), None);
    }

    #[test]
    fn a_long_wait_says_what_it_waits_on_once_a_period() {
        let mut b = Heartbeat::new();
        let s = |n| Duration::from_secs(n);
        assert_eq!(b.due_after(s(29), "node w1 NotReady"), None);
        assert_eq!(
            b.due_after(s(31), "node w1 NotReady (NetworkPluginNotReady)\npod kube-system/kube-proxy-abc: ContainerCreating\n"),
            Some("waiting 30s: node w1 NotReady (NetworkPluginNotReady); pod kube-system/kube-proxy-abc: ContainerCreating".into())
        );
        // Once a period, however often it is asked.
        assert_eq!(b.due_after(s(45), "x"), None);
        assert_eq!(b.due_after(s(95), "x"), Some("waiting 90s: x".into()));
        let long = "y".repeat(1000);
        let said = b.due_after(s(121), &long).unwrap();
        assert!(said.len() < 450 && said.ends_with(" ..."), "{said}");
    }

    #[test]
    fn endpoints_serve_once_an_address_is_ready() {
        let e = |yaml: &str| -> k8s_openapi::api::core::v1::Endpoints {
            serde_yaml::from_str(yaml).unwrap()
        };
        assert!(!endpoints_serving(None));
        assert!(!endpoints_serving(Some(&e("metadata: {name: smoke}"))));
        let not_ready = e(r#"
metadata: {name: smoke}
subsets:
- notReadyAddresses: [{ip: 10.244.1.5}]
  ports: [{port: 8080}]
"#);
        assert!(!endpoints_serving(Some(&not_ready)));
        let ready = e(r#"
metadata: {name: smoke}
subsets:
- addresses: [{ip: 10.244.1.5}]
  ports: [{port: 8080}]
"#);
        assert!(endpoints_serving(Some(&ready)));
    }

    fn node(yaml: &str) -> Node {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn not_ready_node_reports_reason_and_message() {
        let n = node(
            r#"
metadata: {name: cp1}
status:
  conditions:
  - type: MemoryPressure
    status: "False"
  - type: Ready
    status: "False"
    reason: KubeletNotReady
    message: "runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized"
"#,
        );
        let e = node_ready(&n).unwrap_err();
        assert!(
            e.starts_with("node cp1 NotReady: KubeletNotReady: runtime network not ready"),
            "{e}"
        );
        assert!(e.contains("NetworkPluginNotReady"));
    }

    #[test]
    fn ready_node_passes_and_missing_condition_does_not() {
        let ok =
            node("metadata: {name: w1}\nstatus: {conditions: [{type: Ready, status: \"True\"}]}");
        assert!(node_ready(&ok).is_ok());
        let none = node("metadata: {name: w1}\nstatus: {}");
        assert_eq!(
            node_ready(&none).unwrap_err(),
            "node w1 has no Ready condition yet"
        );
    }

    #[test]
    fn registration_names_the_missing_nodes() {
        let nodes = vec![node("metadata: {name: cp1}")];
        let e = nodes_registered(&["cp1".into(), "w1".into()], &nodes).unwrap_err();
        assert_eq!(e, "not registered yet: w1 (registered: cp1)");
        assert!(nodes_registered(&["cp1".into()], &nodes).is_ok());
    }

    #[test]
    fn pods_report_waiting_reasons_and_scheduling() {
        let p: Pod = serde_yaml::from_str(
            r#"
metadata: {name: weave-net-x, namespace: kube-system}
status:
  phase: Pending
  containerStatuses:
  - name: weave
    image: weaveworks/weave-kube:2.8.1
    imageID: ""
    ready: false
    restartCount: 0
    state: {waiting: {reason: ErrImagePull, message: "failed to pull"}}
"#,
        )
        .unwrap();
        assert_eq!(
            pod_ready(&p).unwrap_err(),
            "pod kube-system/weave-net-x container weave waiting: ErrImagePull: failed to pull"
        );
        let p: Pod = serde_yaml::from_str(
            r#"
metadata: {name: smoke, namespace: t}
status:
  phase: Pending
  conditions:
  - {type: PodScheduled, status: "False", message: "0/2 nodes are available: 2 node(s) had taint"}
"#,
        )
        .unwrap();
        assert!(pod_ready(&p)
            .unwrap_err()
            .contains("not scheduled: 0/2 nodes"));
        let p: Pod = serde_yaml::from_str(
            "metadata: {name: a}\nstatus: {phase: Running, conditions: [{type: Ready, status: \"True\"}]}",
        )
        .unwrap();
        assert!(pod_ready(&p).is_ok());
    }

    #[test]
    fn a_started_container_without_a_readiness_probe_is_ready_before_kubelet_says_so() {
        // kube-scheduler as kubelet 1.20 reports it between its startup probe passing and
        // the next pod sync (kubernetes#95140).
        let lagging = r#"
metadata: {name: kube-scheduler-cp1, namespace: kube-system}
spec:
  containers:
  - name: kube-scheduler
    startupProbe: {httpGet: {path: /healthz, port: 10259}}
    livenessProbe: {httpGet: {path: /healthz, port: 10259}}
status:
  phase: Running
  conditions:
  - {type: Ready, status: "False", reason: ContainersNotReady}
  containerStatuses:
  - {name: kube-scheduler, image: s, imageID: "", ready: false, restartCount: 0, started: true, state: {running: {}}}
"#;
        let p: Pod = serde_yaml::from_str(lagging).unwrap();
        assert!(pod_ready(&p).is_ok());
        // Not started yet: its startup probe has not passed.
        let p: Pod =
            serde_yaml::from_str(&lagging.replace("started: true", "started: false")).unwrap();
        assert!(pod_ready(&p).unwrap_err().contains("Ready=False"));
        // A readiness probe is the judge: kubelet's Ready must be waited for.
        let p: Pod = serde_yaml::from_str(&lagging.replace(
            "livenessProbe:",
            "readinessProbe: {httpGet: {path: /readyz, port: 10259}}\n    livenessProbe:",
        ))
        .unwrap();
        assert!(pod_ready(&p).is_err());
        // Not ready for another reason than the lag (its node lost): not second-guessed.
        let p: Pod = serde_yaml::from_str(
            &lagging.replace("reason: ContainersNotReady", "reason: NodeLost"),
        )
        .unwrap();
        assert!(pod_ready(&p).is_err());
        // Being deleted, or waiting on a readiness gate: not inferred either.
        let p: Pod = serde_yaml::from_str(&lagging.replace(
            "namespace: kube-system}",
            "namespace: kube-system, deletionTimestamp: \"2026-12-02T10:00:00Z\"}",
        ))
        .unwrap();
        assert!(pod_ready(&p).is_err());
        let p: Pod = serde_yaml::from_str(&lagging.replace(
            "spec:\n",
            "spec:\n  readinessGates: [{conditionType: example.com/ready}]\n",
        ))
        .unwrap();
        assert!(pod_ready(&p).is_err());
        // Before 1.16 there is no `started`: nothing is inferred.
        let p: Pod = serde_yaml::from_str(&lagging.replace(" started: true,", "")).unwrap();
        assert!(pod_ready(&p).is_err());
    }

    #[test]
    fn daemonset_needs_all_pods_ready_and_updated() {
        let ds: DaemonSet = serde_yaml::from_str(
            "metadata: {name: calico-node}\nstatus: {desiredNumberScheduled: 2, numberReady: 1, updatedNumberScheduled: 2, currentNumberScheduled: 2, numberMisscheduled: 0}",
        )
        .unwrap();
        assert_eq!(
            daemonset_rolled_out(&ds).unwrap_err(),
            "daemonset calico-node: 1/2 ready, 2/2 updated"
        );
        let ds: DaemonSet = serde_yaml::from_str(
            "metadata: {name: calico-node}\nstatus: {desiredNumberScheduled: 2, numberReady: 2, updatedNumberScheduled: 2, currentNumberScheduled: 2, numberMisscheduled: 0}",
        )
        .unwrap();
        assert!(daemonset_rolled_out(&ds).is_ok());
        // A new spec the controller has not processed: the counts are the old pods'.
        let ds: DaemonSet = serde_yaml::from_str(
            "metadata: {name: kube-proxy, generation: 2}\nstatus: {observedGeneration: 1, desiredNumberScheduled: 2, numberReady: 2, updatedNumberScheduled: 2, currentNumberScheduled: 2, numberMisscheduled: 0}",
        )
        .unwrap();
        assert_eq!(
            daemonset_rolled_out(&ds).unwrap_err(),
            "daemonset kube-proxy: the controller has not seen generation 2 yet (it saw 1)"
        );
        let ds: DaemonSet = serde_yaml::from_str(
            "metadata: {name: kube-proxy, generation: 2}\nstatus: {observedGeneration: 2, desiredNumberScheduled: 2, numberReady: 2, updatedNumberScheduled: 2, currentNumberScheduled: 2, numberMisscheduled: 0}",
        )
        .unwrap();
        assert!(daemonset_rolled_out(&ds).is_ok());
    }
}

/// How often a long wait says what it still waits on.
pub const SAY_EVERY: Duration = Duration::from_secs(30);

/// Says, once every [`SAY_EVERY`] of a wait, what it still waits on, so no wait is silent:
/// `waiting 30s: node w1 NotReady (...); pod kube-system/kube-proxy-abc ...`.
pub struct Heartbeat {
    started: std::time::Instant,
    said: u64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat::new()
    }
}

impl Heartbeat {
    pub fn new() -> Heartbeat {
        Heartbeat {
            started: std::time::Instant::now(),
            said: 0,
        }
    }

    /// The line to say now, if another period has passed since the last one.
    pub fn due(&mut self, last: &str) -> Option<String> {
        self.due_after(self.started.elapsed(), last)
    }

    fn due_after(&mut self, waited: Duration, last: &str) -> Option<String> {
        let periods = waited.as_secs() / SAY_EVERY.as_secs();
        if periods <= self.said {
            return None;
        }
        self.said = periods;
        let mut line = last
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        if line.chars().count() > 400 {
            line = line.chars().take(400).collect::<String>() + " ...";
        }
        Some(format!(
            "waiting {}s: {line}",
            periods * SAY_EVERY.as_secs()
        ))
    }
}

/// Checks `f` every `every` until it holds or `cancel` fires; on cancellation returns the
/// last reason it did not hold. Every [`SAY_EVERY`] it says through `say` what it still
/// waits on. Deadlines come from the step, never from here.
pub async fn poll_saying<F, Fut>(
    cancel: &tokio_util::sync::CancellationToken,
    every: std::time::Duration,
    say: &(dyn Fn(String) + Sync),
    mut f: F,
) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut last = String::from("not checked yet");
    let mut beat = Heartbeat::new();
    loop {
        if cancel.is_cancelled() {
            return Err(last);
        }
        match f().await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        if let Some(line) = beat.due(&last) {
            say(line);
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = cancel.cancelled() => return Err(last),
        }
    }
}

/// Canonical image reference as containerd lists it, parsed by oci-spec's `Reference`:
/// `busybox` → `docker.io/library/busybox:latest`. With a digest the reference is
/// `name@digest`, with or without a tag, as containerd's CRI normalizes it (a pinned digest
/// wins over the tag).
pub fn canonical_image(image: &str) -> Result<String, oci_spec::distribution::ParseError> {
    let r: oci_spec::distribution::Reference = image.parse()?;
    let name = format!("{}/{}", r.registry(), r.repository());
    Ok(match r.digest() {
        Some(d) => format!("{name}@{d}"),
        None => format!("{name}:{}", r.tag().unwrap_or("latest")),
    })
}

#[cfg(test)]
mod image_tests {
    use super::canonical_image;

    #[test]
    fn images_are_canonical_as_containerd_lists_them() {
        let c = |i: &str| canonical_image(i).unwrap();
        let digest = "sha256:1ba1ec7a2ce8c29bc3d62e3e7c5e8e0b1f0ad4c0c0ff5e5b2ee1f3b0a7d9c6e4";
        // Library images, with and without a tag.
        assert_eq!(c("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(c("busybox:1.29"), "docker.io/library/busybox:1.29");
        assert_eq!(
            c("docker.io/library/busybox:1.29"),
            "docker.io/library/busybox:1.29"
        );
        assert_eq!(
            c("weaveworks/weave-kube:2.8.1"),
            "docker.io/weaveworks/weave-kube:2.8.1"
        );
        // Other registries, one with a port.
        assert_eq!(
            c("quay.io/calico/node:v1.2.1"),
            "quay.io/calico/node:v1.2.1"
        );
        assert_eq!(
            c("shakedown.local/pause:3.4.1"),
            "shakedown.local/pause:3.4.1"
        );
        assert_eq!(c("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(c("127.0.0.1:5000/team/x:v2"), "127.0.0.1:5000/team/x:v2");
        // A digest is kept whole, with or without a tag.
        assert_eq!(
            c(&format!("busybox@{digest}")),
            format!("docker.io/library/busybox@{digest}")
        );
        assert_eq!(
            c(&format!("busybox:1.29@{digest}")),
            format!("docker.io/library/busybox@{digest}")
        );
        assert_eq!(
            c(&format!("localhost:5000/x:v1@{digest}")),
            format!("localhost:5000/x@{digest}")
        );
        assert!(canonical_image("Not A Reference").is_err());
    }

    #[tokio::test]
    async fn poll_returns_the_last_reason_when_cancelled() {
        let cancel = tokio_util::sync::CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            c2.cancel();
        });
        let mut n = 0;
        let r = super::poll_saying(
            &cancel,
            std::time::Duration::from_millis(5),
            &|_| {},
            || {
                n += 1;
                let k = n;
                async move { Err(format!("attempt {k}")) }
            },
        )
        .await;
        let e = r.unwrap_err();
        assert!(e.starts_with("attempt "), "{e}");
        assert!(n > 1);
    }
}
