//! `export-logs` (an `always` step): per node the kubelet and containerd journals,
//! `/var/log/pods` and the static pod manifests; cluster-wide nodes, pods and events as YAML.
//! Best effort and bounded: one failing node does not stop the others, and no file grows
//! past `MAX_FILE`.

use super::cluster::client;
use super::{Action, StepContext, StepError};
use crate::actions::JobStateExt;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams};
use std::path::Path;

pub struct ExportLogs;

/// Largest file written; journals keep their last lines.
pub const MAX_FILE: usize = 8 * 1024 * 1024;

fn write_bounded(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    // Node journals can echo a registered secret (a join command line): redact as the step
    // log does.
    let text = crate::process::redact(text);
    let bytes = text.as_bytes();
    let start = bytes.len().saturating_sub(MAX_FILE);
    std::fs::write(path, &bytes[start..])
}

#[async_trait::async_trait]
impl Action for ExportLogs {
    fn describe(&self, cx: &StepContext<'_>) -> Vec<String> {
        vec![format!(
            "copy kubelet and containerd journals, /var/log/pods and static pod manifests of every node, the load balancer's log, and nodes, pods and events as YAML, into {}",
            cx.job_dir().join("logs").display()
        )]
    }

    async fn run(&self, cx: &mut StepContext<'_>) -> Result<(), StepError> {
        let Some(c) = cx.job().cluster.as_ref() else {
            cx.note("no cluster was created; no logs to export");
            return Ok(());
        };
        let out = cx.job_dir().join("logs");
        let r = cx.runner();
        let mut done = 0;
        let mut problems = Vec::new();
        // Writes into the artifacts that failed (a full disk): what a person would read is
        // missing, so the step fails, whatever else went through.
        let mut unwritten = Vec::new();
        if !c.provider.runs_commands() {
            cx.note(format!(
                "node journals and files not exported: provider {} runs no commands on nodes",
                c.provider.name()
            ));
        }
        // A provider with its own export (kind's `export logs`) collects every node's
        // journals and files itself.
        let own = c
            .provider
            .export_logs(c, &out.join(c.provider.name()))
            .filter(|_| c.provider.runs_commands());
        let own_export = own.is_some();
        if let Some(cmd) = own {
            let _ = std::fs::create_dir_all(&out);
            match r.run(cmd).await {
                Ok(_) => done += 1,
                Err(e) => {
                    let first = e.to_string().lines().next().unwrap_or_default().to_string();
                    let line = format!("{} export logs: {first}", c.provider.name());
                    if e.stderr().to_ascii_lowercase().contains("no space left") {
                        unwritten.push(line);
                    } else {
                        problems.push(line);
                    }
                }
            }
        }
        // Kubernetes nodes and the external etcd's nodes (whose kubelet runs etcd).
        let nodes: Vec<&crate::provider::NodeInfo> = if c.provider.runs_commands() && !own_export {
            c.nodes.iter().chain(c.etcd.iter()).collect()
        } else {
            Vec::new()
        };
        let mut captures = Vec::new();
        for n in nodes {
            let dir = out.join("nodes").join(&n.name);
            // A VM's serial console: kernel, initramfs and boot messages, every boot.
            if let Some(console) = c.provider.console_log(&n.name) {
                let _ = std::fs::create_dir_all(&dir);
                match std::fs::copy(&console, dir.join("console.log")) {
                    Ok(_) => done += 1,
                    Err(e) => {
                        problems.push(format!("{}: console {}: {e}", n.name, console.display()))
                    }
                }
            }
            for unit in ["kubelet", "containerd"] {
                let cmd = c.exec(
                    &n.name,
                    &[
                        "journalctl",
                        "-u",
                        unit,
                        "--no-pager",
                        "-o",
                        "short-precise",
                    ],
                );
                captures.push((
                    cmd,
                    dir.join(format!("{unit}.log")),
                    format!("{}: {unit} journal", n.name),
                ));
            }
            for (from, to) in [
                ("/var/log/pods", "pods"),
                ("/etc/kubernetes/manifests", "manifests"),
            ] {
                let _ = std::fs::create_dir_all(&dir);
                let cmd = c.provider.copy_from(&n.name, from, &dir.join(to));
                match r.run(cmd).await {
                    Ok(_) => done += 1,
                    Err(e) => {
                        let first = e.to_string().lines().next().unwrap_or_default().to_string();
                        let line = format!("{}: {from}: {first}", n.name);
                        // The copy writes on this side: its ENOSPC is ours.
                        if e.stderr().to_ascii_lowercase().contains("no space left") {
                            unwritten.push(line);
                        } else {
                            problems.push(line);
                        }
                    }
                }
            }
        }
        // haproxy's log: which API server it took out, and when.
        if let Some(lb) = &c.load_balancer {
            if let Some(cmd) = c.provider.container_logs(&lb.name) {
                captures.push((
                    cmd,
                    out.join("load-balancer").join("haproxy.log"),
                    format!("{}: haproxy log", lb.name),
                ));
            }
        }
        // What a command prints, written to its file: a command that fails is a problem,
        // a file that cannot be written is ours.
        for (cmd, path, what) in captures {
            match r.output(cmd).await {
                Ok(text) => match write_bounded(&path, &text) {
                    Ok(()) => done += 1,
                    Err(e) => unwritten.push(format!("{what}: {e}")),
                },
                Err(e) => problems.push(format!(
                    "{what}: {}",
                    e.to_string().lines().next().unwrap_or_default()
                )),
            }
        }
        if c.kubeconfig.is_some() {
            match client(c).await {
                Ok(kube) => {
                    let lp = ListParams::default();
                    let dumps = [
                        (
                            "nodes.yaml",
                            Api::<Node>::all(kube.clone())
                                .list(&lp)
                                .await
                                .map(|l| serde_yaml::to_string(&l.items)),
                        ),
                        (
                            "pods.yaml",
                            Api::<Pod>::all(kube.clone())
                                .list(&lp)
                                .await
                                .map(|l| serde_yaml::to_string(&l.items)),
                        ),
                        (
                            "events.yaml",
                            Api::<Event>::all(kube)
                                .list(&lp)
                                .await
                                .map(|l| serde_yaml::to_string(&l.items)),
                        ),
                    ];
                    for (file, res) in dumps {
                        match res {
                            Ok(Ok(yaml)) => {
                                match write_bounded(&out.join("cluster").join(file), &yaml) {
                                    Ok(()) => done += 1,
                                    Err(e) => unwritten.push(format!("{file}: {e}")),
                                }
                            }
                            Ok(Err(e)) => problems.push(format!("{file}: failed to encode: {e}")),
                            Err(e) => problems.push(format!("{file}: failed to list: {e}")),
                        }
                    }
                }
                Err(e) => problems.push(e.message),
            }
        }
        for p in problems.iter().chain(&unwritten) {
            cx.note(format!("not exported: {p}"));
        }
        cx.note(format!("{done} log set(s) exported to {}", out.display()));
        if !unwritten.is_empty() {
            return Err(StepError::infra(format!(
                "failed to write {} log set(s) into the artifacts: {}",
                unwritten.len(),
                unwritten.join("; ")
            )));
        }
        if done == 0 && !problems.is_empty() {
            return Err(StepError::infra(format!(
                "failed to export any logs: {}",
                problems.join("; ")
            )));
        }
        Ok(())
    }
}
