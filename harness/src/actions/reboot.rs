//! `node-reboot`: restarts one node and checks it comes back: a real reboot of a VM (its
//! kernel's boot id changes), a restart of a container (its start time changes). Then the
//! node must be Ready again, as reported by a kubelet that started after the reboot, and a
//! pod pinned to it before the reboot must be running again in a new container.
//!
//! The node rebooted is the last worker: in a mixed topology, a VM.

use super::cluster::{client, cluster};
use super::{Action, StepContext, StepError};
use crate::actions::JobStateExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::chrono::{DateTime, Utc};
use kube::api::{Api, DeleteParams, PostParams};
use std::time::{Duration, Instant};

pub struct NodeReboot;

/// How often the node is asked again while it reboots.
const POLL: Duration = Duration::from_secs(2);

/// The node a `node-reboot` step restarts: the last worker, else the last control plane.
pub fn target(c: &crate::provider::Cluster) -> Option<String> {
    c.workers()
        .last()
        .or_else(|| c.control_planes().last())
        .map(|n| n.name.clone())
}

/// The pod that proves workloads come back: pinned to the node, restarted by its kubelet.
fn pinned_pod(name: &str, node: &str, image: &str, pull_policy: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "shakedown"}},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 5,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": "pause",
                "image": image,
                "imagePullPolicy": pull_policy,
                "args": ["pause"],
            }],
        },
    }))
    .expect("a literal pod")
}

/// The node is Ready by a status its kubelet posted after `since` (a Ready left over from
/// before the reboot does not count).
pub fn ready_since(node: &Node, since: DateTime<Utc>) -> Result<(), String> {
    crate::readiness::node_ready(node)?;
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .ok_or("no Ready condition")?;
    match &ready.last_heartbeat_time {
        Some(t) if t.0 >= since => Ok(()),
        Some(t) => Err(format!(
            "Ready, but last reported at {} (before the reboot)",
            t.0
        )),
        None => Err("Ready without a heartbeat time".into()),
    }
}

/// The pinned pod runs in a container started after `since`.
pub fn running_since(pod: &Pod, since: DateTime<Utc>) -> Result<(), String> {
    crate::readiness::pod_ready(pod)?;
    let started = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.running.as_ref())
        .and_then(|r| r.started_at.as_ref())
        .ok_or("its container is not running")?;
    if started.0 >= since {
        Ok(())
    } else {
        Err(format!(
            "still the container started at {} (before the reboot)",
            started.0
        ))
    }
}

#[async_trait::async_trait]
impl Action for NodeReboot {
    fn describe(&self, _cx: &StepContext<'_>) -> Vec<String> {
        vec![
            "pin a pod to the last worker and wait for it to run".into(),
            "reboot that node: a VM for real (systemctl reboot), a container by restart".into(),
            "check it booted again (a new kernel boot id, or a new container start)".into(),
            "check the node is Ready by a kubelet status posted after the reboot".into(),
            "check the pinned pod runs again in a container started after the reboot".into(),
        ]
    }

    async fn run(&self, cx: &mut StepContext<'_>) -> Result<(), StepError> {
        let c = cluster(cx)?;
        let node = target(c).ok_or_else(|| StepError::new("failed to find a node to reboot"))?;
        let provider = c.provider.clone();
        let (Some(reboot), Some(boot_id)) = (provider.reboot_node(&node), provider.boot_id(&node))
        else {
            return Err(StepError::new(format!(
                "failed to reboot {node}: provider {} cannot restart nodes",
                provider.name()
            )));
        };
        let kube = client(c).await?;
        let (image, pull) = cx.agnhost();
        let pods: Api<Pod> = Api::namespaced(kube.clone(), "default");
        let nodes: Api<Node> = Api::all(kube);
        let pod_name = format!("shakedown-reboot-{}", cx.run.settings.run_id).to_ascii_lowercase();
        let say = |s: String| cx.note(s);

        let _ = pods.delete(&pod_name, &DeleteParams::default()).await;
        pods.create(
            &PostParams::default(),
            &pinned_pod(&pod_name, &node, &image, pull),
        )
        .await
        .map_err(|e| StepError::new(format!("failed to create pod {pod_name}: {e}")))?;
        crate::readiness::poll_saying(&cx.cancel, POLL, &say, || async {
            let p = pods.get(&pod_name).await.map_err(|e| e.to_string())?;
            crate::readiness::pod_ready(&p)
                .map_err(|e| format!("pod {pod_name} before the reboot: {e}"))
        })
        .await
        .map_err(|e| {
            StepError::new(format!(
                "failed to run a pod on {node} before the reboot: {e}"
            ))
        })?;

        let r = cx.runner();
        let before = r.output(boot_id.clone()).await?;
        let since = Utc::now();
        let t0 = Instant::now();
        cx.note(format!("rebooting {node} (boot id {before})"));
        // The command may die with the node (ssh cut off): what counts is the new boot.
        if let Err(e) = r.run(reboot).await {
            cx.note(format!(
                "reboot command ended with: {}",
                e.to_string().lines().next().unwrap_or_default()
            ));
        }
        crate::readiness::poll_saying(&cx.cancel, POLL, &say, || {
            let r = &r;
            let boot_id = boot_id.clone();
            let before = before.clone();
            let node = node.clone();
            async move {
                match r.output(boot_id).await {
                    Ok(now) if !now.is_empty() && now != before => Ok(()),
                    Ok(_) => Err(format!("{node} has not rebooted yet (same boot id)")),
                    Err(e) => Err(format!(
                        "{node} does not answer: {}",
                        e.to_string().lines().next().unwrap_or_default()
                    )),
                }
            }
        })
        .await
        .map_err(|e| StepError::new(format!("failed to see {node} boot again: {e}")))?;
        let back = t0.elapsed();
        cx.note(format!(
            "{node} booted again after {:.1}s",
            back.as_secs_f64()
        ));
        cx.property("reboot.node", &node);
        cx.property("reboot.boot_seconds", format!("{:.1}", back.as_secs_f64()));

        crate::readiness::poll_saying(&cx.cancel, POLL, &say, || async {
            let n = nodes.get(&node).await.map_err(|e| e.to_string())?;
            ready_since(&n, since).map_err(|e| format!("node {node}: {e}"))
        })
        .await
        .map_err(|e| StepError::new(format!("failed to see {node} Ready after the reboot: {e}")))?;
        let ready = t0.elapsed();
        cx.note(format!("{node} Ready after {:.1}s", ready.as_secs_f64()));
        cx.property(
            "reboot.ready_seconds",
            format!("{:.1}", ready.as_secs_f64()),
        );

        crate::readiness::poll_saying(&cx.cancel, POLL, &say, || async {
            let p = pods.get(&pod_name).await.map_err(|e| e.to_string())?;
            running_since(&p, since).map_err(|e| format!("pod {pod_name}: {e}"))
        })
        .await
        .map_err(|e| {
            StepError::new(format!(
                "failed to see pod {pod_name} running again on {node}: {e}"
            ))
        })?;
        let pod_back = t0.elapsed();
        cx.note(format!(
            "pod {pod_name} running again after {:.1}s",
            pod_back.as_secs_f64()
        ));
        cx.property(
            "reboot.pod_seconds",
            format!("{:.1}", pod_back.as_secs_f64()),
        );
        let _ = pods.delete(&pod_name, &DeleteParams::default()).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(yaml: &str) -> Node {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn a_ready_left_over_from_before_the_reboot_does_not_count() {
        let n = node(
            r#"
metadata: {name: w1}
status:
  conditions:
  - {type: Ready, status: "True", lastHeartbeatTime: "2026-12-02T10:00:00Z"}
"#,
        );
        let before: DateTime<Utc> = "2026-12-02T09:59:00Z".parse().unwrap();
        let after: DateTime<Utc> = "2026-12-02T10:00:30Z".parse().unwrap();
        assert!(ready_since(&n, before).is_ok());
        let e = ready_since(&n, after).unwrap_err();
        assert!(e.contains("before the reboot"), "{e}");
        let not_ready = node(
            r#"
metadata: {name: w1}
status:
  conditions:
  - {type: Ready, status: "False", lastHeartbeatTime: "2026-12-02T10:01:00Z"}
"#,
        );
        assert!(ready_since(&not_ready, before).is_err());
    }

    #[test]
    fn the_pinned_pod_must_run_in_a_new_container() {
        let pod = |started: &str| -> Pod {
            serde_yaml::from_str(&format!(
                r#"
metadata: {{name: p}}
status:
  phase: Running
  conditions:
  - {{type: Ready, status: "True"}}
  containerStatuses:
  - name: pause
    ready: true
    restartCount: 1
    image: x
    imageID: x
    state: {{running: {{startedAt: "{started}"}}}}
"#
            ))
            .unwrap()
        };
        let since: DateTime<Utc> = "2026-12-02T10:00:00Z".parse().unwrap();
        assert!(running_since(&pod("2026-12-02T10:00:40Z"), since).is_ok());
        let e = running_since(&pod("2026-12-02T09:58:00Z"), since).unwrap_err();
        assert!(e.contains("before the reboot"), "{e}");
    }

    #[test]
    fn the_pod_is_pinned_and_tolerates_the_nodes_taints() {
        let p = pinned_pod("p", "w1", "agnhost:2.21", "Never");
        let spec = p.spec.unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("w1"));
        assert_eq!(
            spec.containers[0].args.as_deref(),
            Some(&["pause".to_string()][..])
        );
        assert_eq!(
            spec.tolerations.unwrap()[0].operator.as_deref(),
            Some("Exists")
        );
    }
}
