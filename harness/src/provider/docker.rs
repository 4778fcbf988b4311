//! The built-in provider: every node is a docker container running systemd, containerd and
//! kubelet, started with exactly the flags this machine allows (no --privileged; see
//! shared/ENVIRONMENT.md). Every container, network and volume carries the run's labels, so
//! `shakedown gc` finds what a killed run left behind.

use super::{NodeInfo, Role, LABEL_CLUSTER, LABEL_MANAGED, LABEL_ROLE, LABEL_RUN};
use crate::process::{Cmd, CommandError, Runner, StepLog};
use std::path::{Path, PathBuf};

/// Where the images tarball is mounted inside every node.
pub const IMAGES_IN_NODE: &str = "/shakedown/images.tar";

#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub name: String,
    pub run_id: String,
    pub control_planes: u32,
    pub workers: u32,
    pub node_image: String,
    pub images_tar: PathBuf,
}

/// A running docker cluster. Removed when dropped unless `keep` is set or it was already
/// torn down (cleanup on drop, after testcontainers).
#[derive(Debug)]
pub struct Cluster {
    pub name: String,
    pub network: String,
    pub run_id: String,
    pub nodes: Vec<NodeInfo>,
    pub kubeconfig: Option<PathBuf>,
    pub keep: bool,
    removed: bool,
    /// The container CLI (`docker`).
    pub program: String,
    /// How long the cleanup on drop waits for each command.
    pub drop_timeout: std::time::Duration,
    /// Where the commands of a last-resort cleanup on drop are logged.
    pub log: Option<StepLog>,
}

impl Cluster {
    pub fn control_planes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.iter().filter(|n| n.role == Role::ControlPlane)
    }
    pub fn workers(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.iter().filter(|n| n.role == Role::Worker)
    }
    pub fn first_control_plane(&self) -> &NodeInfo {
        self.control_planes()
            .next()
            .expect("a cluster has a control plane")
    }
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }
    /// Marks the cluster as gone (after `remove`).
    pub fn mark_removed(&mut self) {
        self.removed = true;
    }

    /// How to reach a kept cluster.
    pub fn how_to_reach(&self) -> String {
        let mut s = format!("cluster {} kept:\n", self.name);
        if let Some(k) = &self.kubeconfig {
            s.push_str(&format!(
                "  export KUBECONFIG={}\n  kubectl get nodes\n",
                k.display()
            ));
        }
        for n in &self.nodes {
            s.push_str(&format!(
                "  docker exec -it {} bash    # {} {}\n",
                n.name,
                n.role.as_str(),
                n.ip
            ));
        }
        s.push_str(&format!(
            "  remove it with: shakedown gc --run {}",
            self.run_id
        ));
        s
    }

    /// The node's `/var` volume: named and labelled, so `gc` finds it after a killed run.
    pub fn var_volume(node: &str) -> String {
        format!("{node}-var")
    }
}

/// How long the cleanup on drop waits for each docker command.
const DROP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs one cleanup command synchronously (the async runtime may be shutting down), logged
/// as `+ cmd`, killed after `limit`.
fn run_bounded(program: &str, args: &[String], log: Option<&StepLog>, limit: std::time::Duration) {
    let cmd = Cmd::new(program).args(args.iter().cloned());
    let line = format!("+ {cmd}  # cleanup on drop");
    match log {
        Some(l) => l.line(&line),
        None => eprintln!("{line}"),
    }
    let child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return };
    let t = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) if t.elapsed() >= limit => {
                let _ = child.kill();
                let _ = child.wait();
                let msg = format!("[shakedown: `{cmd}` did not finish within {limit:?}; killed]");
                match log {
                    Some(l) => l.line(&msg),
                    None => eprintln!("{msg}"),
                }
                return;
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.keep || self.removed {
            return;
        }
        // Best effort and synchronous: the async runtime may be shutting down. Each command
        // is bounded, so a hung daemon cannot hang the harness on its way out.
        let names = self.node_names();
        let log = self.log.as_ref();
        if !names.is_empty() {
            let mut args = vec!["rm".to_string(), "-f".into(), "-v".into()];
            args.extend(names.iter().cloned());
            run_bounded(&self.program, &args, log, self.drop_timeout);
            let mut args = vec!["volume".to_string(), "rm".into(), "-f".into()];
            args.extend(names.iter().map(|n| Cluster::var_volume(n)));
            run_bounded(&self.program, &args, log, self.drop_timeout);
        }
        run_bounded(
            &self.program,
            &["network".into(), "rm".into(), self.network.clone()],
            log,
            self.drop_timeout,
        );
        if let Some(k) = &self.kubeconfig {
            let _ = std::fs::remove_file(k);
        }
    }
}

/// Docker names: [a-zA-Z0-9][a-zA-Z0-9_.-]*; hostnames at most 63 characters.
pub fn cluster_name(run_id: &str, context: &str) -> String {
    let mut n = format!("sd-{run_id}-{context}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>();
    n.truncate(54); // leaves room for "-cp1", "-w12"
    n.trim_end_matches('-').to_string()
}

fn labels(spec: &ClusterSpec) -> Vec<String> {
    vec![
        "--label".into(),
        format!("{LABEL_MANAGED}=true"),
        "--label".into(),
        format!("{LABEL_RUN}={}", spec.run_id),
        "--label".into(),
        format!("{LABEL_CLUSTER}={}", spec.name),
    ]
}

/// The `docker run` arguments for one node: what ENVIRONMENT.md measured as necessary.
pub fn run_args(spec: &ClusterSpec, network: &str, name: &str, role: Role) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "run".into(),
        "-d".into(),
        "--name".into(),
        name.into(),
        "--hostname".into(),
        name.into(),
    ];
    a.extend(["--network".into(), network.into()]);
    a.extend(labels(spec));
    a.extend(["--label".into(), format!("{LABEL_ROLE}={}", role.as_str())]);
    for f in [
        "--cgroupns=private",
        "--cap-add=ALL",
        "--cap-drop=SYS_RESOURCE",
        "--security-opt=seccomp=unconfined",
        "--security-opt=apparmor=unconfined",
        "--security-opt=systempaths=unconfined",
        "--device=/dev/kmsg",
        "--device-cgroup-rule=a *:* rwm",
        "--tmpfs=/tmp",
        "--tmpfs=/run",
        "--stop-signal=SIGRTMIN+3",
    ] {
        a.push(f.into());
    }
    // A named volume, created with the run's labels before the node (see `create`).
    a.push(format!("--volume={}:/var", Cluster::var_volume(name)));
    // Mounted only where the host has modules; docker would otherwise create an empty
    // /lib/modules on the host.
    if Path::new("/lib/modules").is_dir() {
        a.push("--volume=/lib/modules:/lib/modules:ro".into());
    }
    a.push(format!(
        "--volume={}:{IMAGES_IN_NODE}:ro",
        spec.images_tar.display()
    ));
    a.push(spec.node_image.clone());
    a
}

pub fn node_names(spec: &ClusterSpec) -> Vec<(String, Role)> {
    let mut v = Vec::new();
    for i in 1..=spec.control_planes {
        v.push((format!("{}-cp{i}", spec.name), Role::ControlPlane));
    }
    for i in 1..=spec.workers {
        v.push((format!("{}-w{i}", spec.name), Role::Worker));
    }
    v
}

/// Creates the network and nodes, waits for systemd, imports the images. On failure the
/// returned error leaves nothing behind: the partial cluster is dropped and removed.
pub async fn create(
    r: &Runner,
    spec: &ClusterSpec,
    note: &(dyn Fn(String) + Sync),
) -> Result<Cluster, CommandError> {
    let network = spec.name.clone();
    let mut cluster = Cluster {
        name: spec.name.clone(),
        network: network.clone(),
        run_id: spec.run_id.clone(),
        nodes: Vec::new(),
        kubeconfig: None,
        keep: false,
        removed: false,
        program: "docker".into(),
        drop_timeout: DROP_TIMEOUT,
        log: Some(r.log.clone()),
    };
    let mut net = vec!["network".to_string(), "create".into()];
    net.extend(labels(spec));
    net.push(network.clone());
    r.run(Cmd::new("docker").args(net)).await?;
    for (name, role) in node_names(spec) {
        // Registered before it starts, so a failure below still removes it.
        cluster.nodes.push(NodeInfo {
            name: name.clone(),
            role,
            ip: String::new(),
        });
        let mut vol = vec!["volume".to_string(), "create".into()];
        vol.extend(labels(spec));
        vol.push(Cluster::var_volume(&name));
        r.run(Cmd::new("docker").args(vol)).await?;
        r.run(Cmd::new("docker").args(run_args(spec, &network, &name, role)))
            .await?;
    }
    note(format!(
        "{} node container(s) started; waiting for systemd",
        cluster.nodes.len()
    ));
    futures::future::try_join_all(cluster.nodes.iter().map(|n| wait_for_systemd(r, &n.name)))
        .await?;
    note("importing images into each node's containerd".into());
    futures::future::try_join_all(cluster.nodes.iter().map(|n| {
        r.run(Cmd::new("docker").args([
            "exec",
            &n.name,
            "ctr",
            "-n",
            "k8s.io",
            "images",
            "import",
            IMAGES_IN_NODE,
        ]))
    }))
    .await?;
    for n in cluster.nodes.iter_mut() {
        n.ip = r
            .output(Cmd::new("docker").args([
                "inspect",
                "--format",
                &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
                &n.name,
            ]))
            .await?;
    }
    Ok(cluster)
}

/// systemd is up when `is-system-running` says running or degraded (a masked unit may
/// degrade it); containerd must answer too.
async fn wait_for_systemd(r: &Runner, node: &str) -> Result<(), CommandError> {
    loop {
        let state = r
            .output(Cmd::new("docker").args(["exec", node, "systemctl", "is-system-running"]))
            .await
            .or_else(|e| match &e {
                CommandError::Failed { stdout, .. } => Ok(stdout.trim().to_string()),
                _ => Err(e),
            })?;
        if state == "running" || state == "degraded" {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(300)) => {}
            _ = r.cancel.cancelled() => return Err(CommandError::Stopped { cmd: format!("wait for systemd in {node}"), how: "cancelled", elapsed: Default::default() }),
        }
    }
    r.run(Cmd::new("docker").args(["exec", node, "ctr", "version"]))
        .await
        .map(drop)
}

pub fn exec<S: AsRef<str>>(node: &str, args: &[S]) -> Cmd {
    let mut c = Cmd::new("docker").args(["exec", node]);
    for a in args {
        c = c.arg(a.as_ref());
    }
    c
}

/// Writes `content` to `path` inside the node.
pub fn write_file(node: &str, path: &str, content: &str) -> Cmd {
    let dir = Path::new(path)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/".into());
    Cmd::new("docker")
        .args(["exec", "-i", node, "sh", "-c"])
        .arg(format!("mkdir -p '{dir}' && cat > '{path}'"))
        .stdin(content.as_bytes().to_vec())
}

/// Removes the cluster's containers, their volumes and the network.
pub async fn remove(r: &Runner, cluster: &mut Cluster) -> Result<(), CommandError> {
    let names = cluster.node_names();
    if !names.is_empty() {
        r.run(
            Cmd::new("docker")
                .args(["rm", "-f", "-v"])
                .args(names.clone()),
        )
        .await?;
        r.run(
            Cmd::new("docker")
                .args(["volume", "rm", "-f"])
                .args(names.iter().map(|n| Cluster::var_volume(n))),
        )
        .await?;
    }
    r.run(Cmd::new("docker").args(["network", "rm", &cluster.network]))
        .await?;
    if let Some(k) = &cluster.kubeconfig {
        let _ = std::fs::remove_file(k);
    }
    cluster.mark_removed();
    Ok(())
}

/// Each node that is not running, with its state: `name: exited (exit code 137)`. A node
/// that stopped is the harness's problem (or the machine's), not the release's.
pub async fn stopped_nodes(r: &Runner, cluster: &Cluster) -> Result<Vec<String>, CommandError> {
    let out = r
        .output(
            Cmd::new("docker")
                .args([
                    "inspect",
                    "--format",
                    "{{.Name}} {{.State.Status}} {{.State.ExitCode}} {{.State.OOMKilled}}",
                ])
                .args(cluster.node_names()),
        )
        .await
        .or_else(|e| match &e {
            // A node removed outright: inspect fails but still prints the others.
            CommandError::Failed { stdout, .. } => Ok(stdout.clone()),
            _ => Err(e),
        })?;
    let mut seen = Vec::new();
    let mut stopped = Vec::new();
    for l in out.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let name = f[0].trim_start_matches('/');
        seen.push(name.to_string());
        if f[1] != "running" {
            stopped.push(format!(
                "node {name} is {} (exit code {}{})",
                f[1],
                f[2],
                if f[3] == "true" { ", OOM-killed" } else { "" }
            ));
        }
    }
    for n in cluster.node_names() {
        if !seen.contains(&n) {
            stopped.push(format!("node {n} no longer exists"));
        }
    }
    Ok(stopped)
}

/// What `gc` found and removed.
#[derive(Debug, Default)]
pub struct Collected {
    pub containers: Vec<String>,
    pub networks: Vec<String>,
    pub volumes: Vec<String>,
}

/// Removes every container, network and volume labelled by shakedown (or by one run).
pub async fn gc(r: &Runner, run_id: Option<&str>) -> Result<Collected, CommandError> {
    let filter = match run_id {
        Some(id) => format!("label={LABEL_RUN}={id}"),
        None => format!("label={LABEL_MANAGED}=true"),
    };
    let lines = |s: String| {
        s.lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
    };
    let mut c = Collected {
        containers: lines(
            r.output(Cmd::new("docker").args([
                "ps",
                "-aq",
                "--filter",
                &filter,
                "--format",
                "{{.Names}}",
            ]))
            .await?,
        ),
        ..Default::default()
    };
    if !c.containers.is_empty() {
        r.run(
            Cmd::new("docker")
                .args(["rm", "-f", "-v"])
                .args(c.containers.clone()),
        )
        .await?;
    }
    c.networks = lines(
        r.output(Cmd::new("docker").args([
            "network",
            "ls",
            "-q",
            "--filter",
            &filter,
            "--format",
            "{{.Name}}",
        ]))
        .await?,
    );
    if !c.networks.is_empty() {
        r.run(
            Cmd::new("docker")
                .args(["network", "rm"])
                .args(c.networks.clone()),
        )
        .await?;
    }
    c.volumes = lines(
        r.output(Cmd::new("docker").args(["volume", "ls", "-q", "--filter", &filter]))
            .await?,
    );
    if !c.volumes.is_empty() {
        r.run(
            Cmd::new("docker")
                .args(["volume", "rm", "-f"])
                .args(c.volumes.clone()),
        )
        .await?;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ClusterSpec {
        ClusterSpec {
            name: cluster_name("20261121-103500-ab12", "docker-bridge"),
            run_id: "20261121-103500-ab12".into(),
            control_planes: 1,
            workers: 2,
            node_image: "shakedown.local/node:v1.20.2-x".into(),
            images_tar: "/cache/images.tar".into(),
        }
    }

    #[test]
    fn names_are_unique_per_run_and_fit_hostnames() {
        let s = spec();
        assert_eq!(s.name, "sd-20261121-103500-ab12-docker-bridge");
        let names: Vec<String> = node_names(&s).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                format!("{}-cp1", s.name),
                format!("{}-w1", s.name),
                format!("{}-w2", s.name)
            ]
        );
        let long = cluster_name("20261121-103500-ab12", &"x".repeat(80));
        assert!(long.len() <= 54 && !long.ends_with('-'));
    }

    #[test]
    fn nodes_are_labelled_and_never_privileged() {
        let a = run_args(&spec(), "net", "n1", Role::Worker).join(" ");
        assert!(!a.contains("--privileged"));
        for want in [
            "--label io.shakedown.managed=true",
            "--label io.shakedown.run=20261121-103500-ab12",
            "--label io.shakedown.cluster=sd-20261121-103500-ab12-docker-bridge",
            "--label io.shakedown.role=worker",
            "--cap-drop=SYS_RESOURCE",
            "--device-cgroup-rule=a *:* rwm",
            "--cgroupns=private",
            "--volume=/cache/images.tar:/shakedown/images.tar:ro",
            "--volume=n1-var:/var",
        ] {
            assert!(a.contains(want), "missing {want} in {a}");
        }
        assert!(a.ends_with("shakedown.local/node:v1.20.2-x"));
        assert!(
            !a.contains("--volume=/var "),
            "an anonymous /var volume escapes gc: {a}"
        );
    }

    #[test]
    fn cleanup_on_drop_is_bounded_and_logged() {
        let d = tempfile::tempdir().unwrap();
        // A container CLI that never answers.
        let cli = d.path().join("hung-docker");
        std::fs::write(&cli, "#!/bin/sh\nexec sleep 60\n").unwrap();
        std::fs::set_permissions(&cli, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let log = StepLog::create(&d.path().join("up.log")).unwrap();
        let c = Cluster {
            name: "sd-x".into(),
            network: "sd-x".into(),
            run_id: "x".into(),
            nodes: vec![NodeInfo {
                name: "sd-x-cp1".into(),
                role: Role::ControlPlane,
                ip: String::new(),
            }],
            kubeconfig: None,
            keep: false,
            removed: false,
            program: cli.display().to_string(),
            drop_timeout: std::time::Duration::from_millis(200),
            log: Some(log.clone()),
        };
        let t = std::time::Instant::now();
        drop(c);
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            t.elapsed()
        );
        let text = std::fs::read_to_string(log.path()).unwrap();
        for want in [
            "rm -f -v sd-x-cp1",
            "volume rm -f sd-x-cp1-var",
            "network rm sd-x",
            "did not finish within",
        ] {
            assert!(text.contains(want), "missing {want:?} in {text}");
        }
        assert!(
            text.lines().filter(|l| l.starts_with("+ ")).count() == 3,
            "{text}"
        );
    }
}
