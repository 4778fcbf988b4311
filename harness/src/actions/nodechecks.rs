//! `node-checks`: tier 1 validation on every node, each check its own testcase.

use super::cluster::cluster;
use super::{Action, StepContext, StepError};
use crate::engine::event::{FailureKind, StepOutcome, SubTest};
use crate::nodechecks;
use std::time::Instant;

pub struct NodeChecks;

#[async_trait::async_trait]
impl Action for NodeChecks {
    fn describe(&self, _cx: &StepContext<'_>) -> Vec<String> {
        vec!["on every node check: kernel (ip_forward, bridge netfilter, overlayfs), cgroups mounted, container runtime answers, swap off or allowed".into()]
    }

    async fn run(&self, cx: &mut StepContext<'_>) -> Result<(), StepError> {
        let c = cluster(cx)?;
        if !c.provider.runs_commands() {
            cx.note(format!(
                "node checks skipped: provider {} runs no commands on nodes",
                c.provider.name()
            ));
            cx.subtests = c
                .nodes
                .iter()
                .map(|n| SubTest {
                    name: format!("{}/node-checks", n.name),
                    outcome: StepOutcome::Skipped {
                        reason: format!(
                            "skipped: provider {} runs no commands on nodes",
                            c.provider.name()
                        ),
                    },
                    duration: std::time::Duration::ZERO,
                    flaky: None,
                })
                .collect();
            return Ok(());
        }
        let r = cx.runner();
        let read = |node: &str, path: &str| {
            let r = r.clone();
            let cmd = c.exec(node, &["cat", path]);
            async move {
                r.output(cmd)
                    .await
                    .map_err(|e| e.to_string().lines().next().unwrap_or_default().to_string())
            }
        };
        let mut subtests = Vec::new();
        for n in &c.nodes {
            let t = Instant::now();
            let kernel = match (
                read(&n.name, "/proc/sys/net/ipv4/ip_forward").await,
                read(&n.name, "/proc/filesystems").await,
            ) {
                (Ok(fwd), Ok(fs)) => {
                    let bridge = read(&n.name, "/proc/sys/net/bridge/bridge-nf-call-iptables")
                        .await
                        .ok();
                    nodechecks::kernel(&fwd, bridge.as_deref(), &fs)
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
            subtests.push((format!("{}/kernel", n.name), kernel, t.elapsed()));

            let t = Instant::now();
            let cg = read(&n.name, "/proc/self/mountinfo")
                .await
                .and_then(|mi| nodechecks::cgroups(&mi));
            subtests.push((format!("{}/cgroups", n.name), cg, t.elapsed()));

            let t = Instant::now();
            let rt = match r
                .output(c.exec(
                    &n.name,
                    &[
                        "ctr",
                        "--address",
                        "/run/containerd/containerd.sock",
                        "version",
                    ],
                ))
                .await
            {
                Ok(v) if v.contains("Server:") => Ok(()),
                Ok(v) => Err(format!("containerd did not report a server version: {v}")),
                Err(e) => Err(format!(
                    "containerd does not answer: {}",
                    e.to_string().lines().next().unwrap_or_default()
                )),
            };
            subtests.push((format!("{}/runtime", n.name), rt, t.elapsed()));

            let t = Instant::now();
            let sw = match read(&n.name, "/proc/swaps").await {
                Ok(swaps) => {
                    let cfg = read(&n.name, "/var/lib/kubelet/config.yaml")
                        .await
                        .unwrap_or_default();
                    nodechecks::swap(&swaps, &cfg)
                }
                Err(e) => Err(e),
            };
            subtests.push((format!("{}/swap", n.name), sw, t.elapsed()));
        }
        let failed: Vec<String> = subtests
            .iter()
            .filter(|(_, r, _)| r.is_err())
            .map(|(n, _, _)| n.clone())
            .collect();
        cx.subtests = subtests
            .into_iter()
            .map(|(name, r, duration)| SubTest {
                name,
                outcome: match r {
                    Ok(()) => StepOutcome::Passed,
                    Err(message) => StepOutcome::Failed {
                        kind: FailureKind::Test,
                        message,
                        diagnosis: None,
                        log_tail: String::new(),
                    },
                },
                duration,
                flaky: None,
            })
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(StepError::new(format!(
                "{} node check(s) failed: {}",
                failed.len(),
                failed.join(", ")
            )))
        }
    }
}
