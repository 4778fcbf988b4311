//! Nodes as containers running systemd, containerd and kubelet, started with exactly the
//! flags this machine allows (no --privileged; see shared/ENVIRONMENT.md). Docker is built
//! in; podman takes the same shape with its own spelling of a few flags. Every container,
//! network and volume carries the run's labels, so `shakedown gc` finds what a killed run
//! left behind.

use super::{
    load_balancer, Cluster, ClusterSpec, Collected, NodeInfo, Provider, ProviderError, Role,
    LABEL_CLUSTER, LABEL_MANAGED, LABEL_ROLE, LABEL_RUN,
};
use crate::process::{Cmd, CommandError, Runner, StepLog};
use crate::release::era::Runtime;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Where the images tarball is mounted inside every node.
pub const IMAGES_IN_NODE: &str = "/shakedown/images.tar";

/// The container engine behind the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Docker,
    Podman,
}

#[derive(Debug, Clone)]
pub struct ContainerProvider {
    pub engine: Engine,
}

impl ContainerProvider {
    pub fn docker() -> ContainerProvider {
        ContainerProvider {
            engine: Engine::Docker,
        }
    }
    pub fn podman() -> ContainerProvider {
        ContainerProvider {
            engine: Engine::Podman,
        }
    }

    /// The engine's command-line program.
    pub fn program(&self) -> &'static str {
        match self.engine {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
        }
    }

    /// Whether the engine's client is on PATH.
    pub fn installed(&self) -> bool {
        crate::process::on_path(self.program()).is_some()
    }

    fn cmd(&self) -> Cmd {
        Cmd::new(self.program())
    }

    /// The `run` arguments for one node: what ENVIRONMENT.md measured as necessary.
    pub fn run_args(
        &self,
        spec: &ClusterSpec,
        network: &str,
        name: &str,
        role: Role,
    ) -> Vec<String> {
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
            "--device=/dev/kmsg",
            "--device-cgroup-rule=a *:* rwm",
            "--tmpfs=/tmp",
            "--tmpfs=/run",
            "--stop-signal=SIGRTMIN+3",
            // /proc and /sys paths unmasked, as kubelet and kube-proxy write there (podman
            // takes it as an alias of unmask=ALL).
            "--security-opt=systempaths=unconfined",
        ] {
            a.push(f.into());
        }
        // A missing image built here (a broken upgrade hop) is then pulled from the node's
        // loopback and fails at once, instead of its name going to the host's resolver.
        for h in &spec.loopback_hosts {
            a.push(format!("--add-host={h}:127.0.0.1"));
        }
        // A named volume, created with the run's labels before the node (see `create`).
        let var = format!("--volume={}:/var", var_volume(name));
        a.push(format!(
            "--volume={}:{SHARED_IN_NODE}",
            shared_volume(&spec.name)
        ));
        match self.engine {
            Engine::Docker => a.push(var),
            Engine::Podman => {
                // podman mounts named volumes nosuid,nodev; docker does not.
                a.push(format!("{var}:suid,dev,exec"));
                // The entrypoint prepares cgroups and execs systemd itself; `always` would
                // bind the host's systemd cgroup and break that.
                a.push("--systemd=false".into());
                // As root podman asks for nofile 1048576 and nproc above its own 32768;
                // raising a limit needs CAP_SYS_RESOURCE, which this machine lacks.
                a.push(format!("--ulimit=nofile={0}:{0}", nofile_hard()));
                a.push("--ulimit=nproc=32768:32768".into());
            }
        }
        // Mounted only where the host has modules; the engine would otherwise create an
        // empty /lib/modules on the host.
        if Path::new("/lib/modules").is_dir() {
            a.push("--volume=/lib/modules:/lib/modules:ro".into());
        }
        if let Some(tar) = &spec.images_tar {
            a.push(format!("--volume={}:{IMAGES_IN_NODE}:ro", tar.display()));
        }
        a.push(spec.node_image.clone());
        a
    }

    /// Podman keeps its own image store: the node image docker built is copied in once.
    async fn ensure_image(&self, r: &Runner, image: &str) -> Result<(), CommandError> {
        if self.engine == Engine::Docker {
            return Ok(());
        }
        if r.run(self.cmd().args(["image", "exists", image]))
            .await
            .is_ok()
        {
            return Ok(());
        }
        r.run(Cmd::new("sh").arg("-c").arg(format!(
            "docker save {} | podman load",
            shell_words::quote(image)
        )))
        .await
        .map(drop)
    }
}

/// The image store a node's kubelet uses with `runtime`.
pub(super) fn image_store(runtime: Runtime) -> &'static str {
    match runtime {
        Runtime::Containerd => "containerd",
        Runtime::Docker => "dockerd (dockershim)",
    }
}

/// containerd's import of a `docker save` tarball (the file name follows). Content only:
/// containerd unpacks an image into a snapshot when the first container of it is created,
/// as after a pull, so a node unpacks what it runs (a worker: pause and kube-proxy)
/// instead of every image at bring-up.
const CTR_IMPORT: [&str; 6] = ["ctr", "-n", "k8s.io", "images", "import", "--no-unpack"];

/// The command, run on a node, that loads the `docker save` tarball at `path` (a file or a
/// disk holding one) into the store `runtime` uses.
pub(super) fn import_images(runtime: Runtime, path: &str) -> Vec<String> {
    match runtime {
        Runtime::Containerd => CTR_IMPORT
            .iter()
            .chain([&path])
            .map(|a| a.to_string())
            .collect(),
        // dockershim: kubelet asks dockerd, which keeps its own store; it starts after
        // systemd reports running, so wait for its socket first.
        Runtime::Docker => vec![
            "sh".into(),
            "-c".into(),
            format!(
                "for i in $(seq 100); do docker info >/dev/null 2>&1 && break; sleep 0.2; done; docker load -q -i {}",
                shell_words::quote(path)
            ),
        ],
    }
}

/// The command, run on a node, that loads a `docker save` tarball from its stdin into the
/// store `runtime` uses.
pub(super) fn import_stdin(runtime: Runtime) -> Vec<&'static str> {
    match runtime {
        Runtime::Containerd => CTR_IMPORT.iter().copied().chain(["-"]).collect(),
        Runtime::Docker => vec!["docker", "load", "-q"],
    }
}

/// A tar stream holding one file, for `cp -` into a container that has no shell.
fn tar_of_one(name: &str, content: &[u8]) -> Result<Vec<u8>, CommandError> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, content)
        .and_then(|_| b.into_inner())
        .map_err(|source| CommandError::Spawn {
            cmd: format!("tar {name}"),
            source,
        })
}

/// How often removal looks again for nodes a stopped `run` created late, and how long it
/// waits between looks.
const SWEEPS: usize = 3;
const SWEEP_PAUSE: Duration = Duration::from_secs(1);

/// This process's hard limit on open files: the most a podman node may ask for.
fn nofile_hard() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(1024)
        .min(1 << 20)
}

/// The iptables comment that marks the FORWARD rule of one cluster's podman network (one
/// run may have several clusters; removing one must not touch the others' rules).
fn forward_comment(cluster: &str) -> String {
    format!("shakedown:{cluster}")
}

/// The node's `/var` volume: named and labelled, so `gc` finds it after a killed run.
pub fn var_volume(node: &str) -> String {
    format!("{node}-var")
}

/// The volume every node of a cluster mounts at [`SHARED_IN_NODE`]: one folder on this
/// machine that all nodes see, the node-loss check's stand-in for network storage. Named
/// and labelled like the `/var` volumes.
pub fn shared_volume(cluster: &str) -> String {
    format!("{cluster}-shared")
}

/// Where a node sees [`shared_volume`].
pub const SHARED_IN_NODE: &str = "/srv/shakedown-shared";

/// Container names: [a-zA-Z0-9][a-zA-Z0-9_.-]*; hostnames at most 63 characters.
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

/// `iptables <op> FORWARD` accepting traffic within one podman bridge, marked with its
/// cluster.
fn forward_rule(op: &str, bridge: &str, cluster: &str) -> Vec<String> {
    [
        op,
        "FORWARD",
        "-i",
        bridge,
        "-o",
        bridge,
        "-m",
        "comment",
        "--comment",
        &forward_comment(cluster),
        "-j",
        "ACCEPT",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The FORWARD rules whose mark starts with `mark` (one cluster's; a run's cluster names
/// start with `sd-<run-id>-`; every run's marks with `shakedown:`), as `-D` arguments.
async fn forward_rules(r: &Runner, mark: &str) -> Result<Vec<Vec<String>>, CommandError> {
    let rules = r
        .output(Cmd::new("iptables").args(["-S", "FORWARD"]))
        .await?;
    Ok(rules
        .lines()
        .filter(|l| l.starts_with("-A FORWARD") && l.contains(mark))
        .filter_map(|l| shell_words::split(l).ok())
        .map(|mut words| {
            words[0] = "-D".into();
            words
        })
        .collect())
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

pub fn node_names(spec: &ClusterSpec) -> Vec<(String, Role)> {
    let mut v = Vec::new();
    for i in 1..=spec.control_planes {
        v.push((format!("{}-cp{i}", spec.name), Role::ControlPlane));
    }
    for i in 1..=spec.workers {
        v.push((format!("{}-w{i}", spec.name), Role::Worker));
    }
    for i in 1..=spec.etcd_nodes {
        v.push((format!("{}-etcd{i}", spec.name), Role::Etcd));
    }
    v
}

/// Like [`run_bounded`], returning what the command printed (empty if it failed or hung).
/// For short outputs: the command is killed at `limit` if it fills its pipe.
fn output_bounded(
    program: &str,
    args: &[String],
    log: Option<&StepLog>,
    limit: Duration,
) -> String {
    run_bounded_to(program, args, log, limit, true).unwrap_or_default()
}

/// Runs one cleanup command synchronously (the async runtime may be shutting down), logged
/// as `+ cmd`, killed after `limit`.
pub(super) fn run_bounded(program: &str, args: &[String], log: Option<&StepLog>, limit: Duration) {
    run_bounded_to(program, args, log, limit, false);
}

fn run_bounded_to(
    program: &str,
    args: &[String],
    log: Option<&StepLog>,
    limit: Duration,
    capture: bool,
) -> Option<String> {
    let cmd = Cmd::new(program).args(args.iter().cloned());
    crate::process::run_blocking(&cmd, log, "cleanup on drop", limit, capture)
}

/// systemd is up when `is-system-running` says running or degraded (a masked unit may
/// degrade it); containerd must answer too.
pub(super) async fn wait_for_systemd(
    r: &Runner,
    c: &Cluster,
    node: &str,
) -> Result<(), CommandError> {
    loop {
        let state = match r
            .output(c.exec(node, &["systemctl", "is-system-running"]))
            .await
        {
            Ok(s) => s,
            // `starting` and the like come with a non-zero status; a node that stopped
            // comes with an exec that failed without any state: say so now, not at the
            // step's deadline.
            Err(CommandError::Failed { stdout, .. }) if !stdout.trim().is_empty() => {
                stdout.trim().to_string()
            }
            Err(CommandError::Failed { .. }) => {
                let provider = c.provider.clone();
                let stopped = provider.stopped_nodes(r, c).await.unwrap_or_default();
                if let Some(s) = stopped.iter().find(|s| s.contains(node)) {
                    return Err(CommandError::Stopped {
                        cmd: format!("wait for systemd in {node}: {s}"),
                        how: "the node stopped",
                        elapsed: Duration::ZERO,
                    });
                }
                String::new()
            }
            Err(e) => return Err(e),
        };
        if state == "running" || state == "degraded" {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            _ = r.cancel.cancelled() => return Err(CommandError::Stopped { cmd: format!("wait for systemd in {node}"), how: "cancelled", elapsed: Default::default() }),
        }
    }
    r.run(c.exec(node, &["ctr", "version"])).await.map(drop)
}

#[async_trait::async_trait]
impl Provider for ContainerProvider {
    fn name(&self) -> &'static str {
        self.program()
    }

    /// Creates the network and nodes, waits for systemd, imports the images. On failure the
    /// returned error leaves nothing behind: the partial cluster is dropped and removed.
    async fn create(
        &self,
        r: &Runner,
        spec: &ClusterSpec,
        note: &(dyn Fn(String) + Sync),
    ) -> Result<Cluster, ProviderError> {
        self.ensure_image(r, &spec.node_image).await?;
        let network = spec.name.clone();
        let mut cluster = Cluster::new(
            Arc::new(self.clone()),
            &spec.name,
            &network,
            &spec.run_id,
            Some(r.log.clone()),
        );
        let mut net = vec!["network".to_string(), "create".into()];
        net.extend(labels(spec));
        net.push(network.clone());
        r.run(self.cmd().args(net)).await?;
        if self.engine == Engine::Podman {
            // netavark accepts forwarded traffic only to and from its own subnet; pod
            // traffic between nodes (pod CIDR to pod CIDR) meets docker's FORWARD DROP.
            let bridge = r
                .output(self.cmd().args([
                    "network",
                    "inspect",
                    &network,
                    "--format",
                    "{{.NetworkInterface}}",
                ]))
                .await?;
            r.run(Cmd::new("iptables").args(forward_rule("-I", &bridge, &spec.name)))
                .await?;
        }
        let mut first = true;
        for (name, role) in node_names(spec) {
            // Registered before it starts, so a failure below still removes it.
            let info = NodeInfo {
                name: name.clone(),
                role,
                ip: String::new(),
                vm: false,
            };
            if role == Role::Etcd {
                cluster.etcd.push(info);
            } else {
                cluster.nodes.push(info);
            }
            let mut vol = vec!["volume".to_string(), "create".into()];
            vol.extend(labels(spec));
            vol.push(var_volume(&name));
            r.run(self.cmd().args(vol)).await?;
            if first {
                let mut vol = vec!["volume".to_string(), "create".into()];
                vol.extend(labels(spec));
                vol.push(shared_volume(&spec.name));
                r.run(self.cmd().args(vol)).await?;
                first = false;
            }
            r.run(self.cmd().args(self.run_args(spec, &network, &name, role)))
                .await?;
        }
        note(format!(
            "{} node container(s) started with {}; waiting for systemd",
            cluster.nodes.len() + cluster.etcd.len(),
            self.program()
        ));
        futures::future::try_join_all(
            cluster
                .nodes
                .iter()
                .chain(cluster.etcd.iter())
                .map(|n| wait_for_systemd(r, &cluster, &n.name)),
        )
        .await?;
        if spec.images_tar.is_some() {
            note(format!(
                "importing images into each node's {}",
                image_store(spec.runtime)
            ));
            let import = import_images(spec.runtime, IMAGES_IN_NODE);
            futures::future::try_join_all(
                cluster
                    .nodes
                    .iter()
                    .chain(cluster.etcd.iter())
                    .map(|n| r.run(cluster.exec(&n.name, &import))),
            )
            .await?;
        } else {
            note("no images to preload: nodes pull every image".into());
        }
        let template = match self.engine {
            Engine::Docker => {
                format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}")
            }
            Engine::Podman => {
                format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}")
            }
        };
        for n in cluster.nodes.iter_mut().chain(cluster.etcd.iter_mut()) {
            n.ip = r
                .output(self.cmd().args(["inspect", "--format", &template, &n.name]))
                .await?;
        }
        if let Some(image) = &spec.load_balancer_image {
            self.ensure_image(r, image).await?;
            let name = format!("{}-lb", spec.name);
            // Registered before it exists, so a failure below still removes it.
            cluster.load_balancer = Some(NodeInfo {
                name: name.clone(),
                role: Role::LoadBalancer,
                ip: String::new(),
                vm: false,
            });
            let mut create = vec![
                "create".to_string(),
                "--name".into(),
                name.clone(),
                "--hostname".into(),
                name.clone(),
                "--network".into(),
                network.clone(),
            ];
            create.extend(labels(spec));
            create.extend([
                "--label".into(),
                format!("{LABEL_ROLE}={}", Role::LoadBalancer.as_str()),
                image.clone(),
            ]);
            r.run(self.cmd().args(create)).await?;
            let backends: Vec<(String, String)> = cluster
                .control_planes()
                .map(|n| (n.name.clone(), n.ip.clone()))
                .collect();
            let config = load_balancer::haproxy_config(&backends);
            r.run(
                self.cmd()
                    .args(["cp", "-", &format!("{name}:{}", load_balancer::CONFIG_DIR)])
                    .stdin(tar_of_one("haproxy.cfg", config.as_bytes())?),
            )
            .await?;
            r.run(self.cmd().args(["start", &name])).await?;
            let ip = r
                .output(self.cmd().args(["inspect", "--format", &template, &name]))
                .await?;
            note(format!(
                "load balancer {name} ({ip}) in front of {} control planes",
                backends.len()
            ));
            if let Some(lb) = cluster.load_balancer.as_mut() {
                lb.ip = ip;
            }
        }
        Ok(cluster)
    }

    fn exec(&self, node: &str, args: &[String], stdin: bool) -> Cmd {
        let mut c = self.cmd().arg("exec");
        if stdin {
            c = c.arg("-i");
        }
        c.arg(node).args(args.iter().cloned())
    }

    fn load_image(&self, node: &str, tar: &Path, runtime: Runtime) -> Cmd {
        Cmd::new("sh").arg("-c").arg(format!(
            "{} exec -i {} {} < {}",
            self.program(),
            shell_words::quote(node),
            shell_words::join(import_stdin(runtime)),
            shell_words::quote(&tar.display().to_string())
        ))
    }

    fn copy_from(&self, node: &str, from: &str, to: &Path) -> Cmd {
        let mut c = self.cmd().arg("cp");
        if self.engine == Engine::Docker {
            // podman cp follows symlinks on its own and has no -L.
            c = c.arg("-L");
        }
        c.arg(format!("{node}:{from}"))
            .arg(to.display().to_string())
    }

    fn copy_to(&self, node: &str, from: &Path, to: &str) -> Cmd {
        self.cmd()
            .arg("cp")
            .arg(from.display().to_string())
            .arg(format!("{node}:{to}"))
    }

    async fn stopped_nodes(
        &self,
        r: &Runner,
        cluster: &Cluster,
    ) -> Result<Vec<String>, CommandError> {
        let out = r
            .output(
                self.cmd()
                    .args([
                        "inspect",
                        "--format",
                        "{{.Name}} {{.State.Status}} {{.State.ExitCode}} {{.State.OOMKilled}}",
                    ])
                    .args(cluster.container_names()),
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
                let what = match &cluster.load_balancer {
                    Some(lb) if lb.name == name => "load balancer",
                    _ => "node",
                };
                stopped.push(format!(
                    "{what} {name} is {} (exit code {}{})",
                    f[1],
                    f[2],
                    if f[3] == "true" { ", OOM-killed" } else { "" }
                ));
            }
        }
        for n in cluster.container_names() {
            if !seen.contains(&n) {
                stopped.push(format!("node {n} no longer exists"));
            }
        }
        Ok(stopped)
    }

    /// Removes the cluster's containers, their volumes, the network and (podman) its
    /// FORWARD rule: every removal is tried, so one that fails (a node already gone) does
    /// not leave the rest behind; the first error is returned.
    async fn remove(&self, r: &Runner, cluster: &Cluster) -> Result<(), CommandError> {
        let names = cluster.container_names();
        let mut first: Option<CommandError> = None;
        let mut keep = |res: Result<(), CommandError>| {
            if let Err(e) = res {
                first.get_or_insert(e);
            }
        };
        if !names.is_empty() {
            keep(
                r.run(self.cmd().args(["rm", "-f", "-v"]).args(names.clone()))
                    .await
                    .map(drop),
            );
            keep(
                r.run(
                    self.cmd()
                        .args(["volume", "rm", "-f"])
                        .args(cluster.container_nodes().map(|n| var_volume(&n.name)))
                        .arg(shared_volume(&cluster.name)),
                )
                .await
                .map(drop),
            );
        }
        // A `run` stopped halfway (Ctrl-C) may still be created by the daemon after its
        // client died: look again by the cluster's label until nothing is left.
        let filter = format!("label={LABEL_CLUSTER}={}", cluster.name);
        for _ in 0..SWEEPS {
            let containers = r
                .output(self.cmd().args(["ps", "-aq", "--filter", &filter]))
                .await
                .unwrap_or_default();
            let volumes = r
                .output(self.cmd().args(["volume", "ls", "-q", "--filter", &filter]))
                .await
                .unwrap_or_default();
            if containers.trim().is_empty() && volumes.trim().is_empty() {
                break;
            }
            if !containers.trim().is_empty() {
                keep(
                    r.run(
                        self.cmd()
                            .args(["rm", "-f", "-v"])
                            .args(containers.split_whitespace()),
                    )
                    .await
                    .map(drop),
                );
            }
            if !volumes.trim().is_empty() {
                keep(
                    r.run(
                        self.cmd()
                            .args(["volume", "rm", "-f"])
                            .args(volumes.split_whitespace()),
                    )
                    .await
                    .map(drop),
                );
            }
            tokio::time::sleep(SWEEP_PAUSE).await;
        }
        keep(
            r.run(self.cmd().args(["network", "rm", &cluster.network]))
                .await
                .map(drop),
        );
        if self.engine == Engine::Podman {
            match forward_rules(r, &forward_comment(&cluster.name)).await {
                Ok(rules) => {
                    for rule in rules {
                        keep(r.run(Cmd::new("iptables").args(rule)).await.map(drop));
                    }
                }
                Err(e) => keep(Err(e)),
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn remove_on_drop(&self, cluster: &Cluster, log: Option<&StepLog>, limit: Duration) {
        let names = cluster.container_names();
        if !names.is_empty() {
            let mut args = vec!["rm".to_string(), "-f".into(), "-v".into()];
            args.extend(names.iter().cloned());
            run_bounded(self.program(), &args, log, limit);
            let mut args = vec!["volume".to_string(), "rm".into(), "-f".into()];
            args.extend(cluster.container_nodes().map(|n| var_volume(&n.name)));
            args.push(shared_volume(&cluster.name));
            run_bounded(self.program(), &args, log, limit);
        }
        // Late arrivals of a `run` stopped halfway, by the cluster's label (see `remove`).
        let filter = format!("label={LABEL_CLUSTER}={}", cluster.name);
        for _ in 0..SWEEPS {
            let ls = |what: &[&str]| {
                let mut a: Vec<String> = what.iter().map(|s| s.to_string()).collect();
                a.extend(["--filter".to_string(), filter.clone()]);
                output_bounded(self.program(), &a, log, limit)
            };
            let containers = ls(&["ps", "-aq"]);
            let volumes = ls(&["volume", "ls", "-q"]);
            if containers.trim().is_empty() && volumes.trim().is_empty() {
                break;
            }
            for (cmd, found) in [
                (vec!["rm", "-f", "-v"], containers),
                (vec!["volume", "rm", "-f"], volumes),
            ] {
                if !found.trim().is_empty() {
                    let mut a: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
                    a.extend(found.split_whitespace().map(String::from));
                    run_bounded(self.program(), &a, log, limit);
                }
            }
            std::thread::sleep(SWEEP_PAUSE);
        }
        run_bounded(
            self.program(),
            &["network".into(), "rm".into(), cluster.network.clone()],
            log,
            limit,
        );
        if self.engine == Engine::Podman {
            // The bridge is gone with the network; the rule names it, so delete it by spec.
            let rules = output_bounded("iptables", &["-S".into(), "FORWARD".into()], log, limit);
            let mark = forward_comment(&cluster.name);
            for l in rules.lines().filter(|l| l.contains(&mark)) {
                if let Ok(mut words) = shell_words::split(l) {
                    words[0] = "-D".into();
                    run_bounded("iptables", &words, log, limit);
                }
            }
        }
    }

    /// Removes every container, network and volume labelled by shakedown (or by one run).
    async fn gc(&self, r: &Runner, run_id: Option<&str>) -> Result<Collected, CommandError> {
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
                r.output(self.cmd().args([
                    "ps",
                    "-a",
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
                self.cmd()
                    .args(["rm", "-f", "-v"])
                    .args(c.containers.clone()),
            )
            .await?;
        }
        c.networks = lines(
            r.output(self.cmd().args([
                "network",
                "ls",
                "--filter",
                &filter,
                "--format",
                "{{.Name}}",
            ]))
            .await?,
        );
        if !c.networks.is_empty() {
            r.run(self.cmd().args(["network", "rm"]).args(c.networks.clone()))
                .await?;
        }
        c.volumes = lines(
            r.output(self.cmd().args(["volume", "ls", "-q", "--filter", &filter]))
                .await?,
        );
        if !c.volumes.is_empty() {
            r.run(
                self.cmd()
                    .args(["volume", "rm", "-f"])
                    .args(c.volumes.clone()),
            )
            .await?;
        }
        // Rules exist only where podman clusters ran, and only root can list them.
        if self.engine == Engine::Podman && nix::unistd::Uid::effective().is_root() {
            let mark = match run_id {
                Some(id) => forward_comment(&format!("sd-{id}-")),
                None => "shakedown:".to_string(),
            };
            for rule in forward_rules(r, &mark).await? {
                r.run(Cmd::new("iptables").args(rule)).await?;
            }
        }
        Ok(c)
    }

    fn container_logs(&self, name: &str) -> Option<Cmd> {
        Some(self.cmd().args(["logs", "--timestamps", name]))
    }

    /// The node's init gets its stop signal (systemd shuts down), SIGKILL after 10 s.
    fn stop_node(&self, node: &str) -> Option<Cmd> {
        Some(self.cmd().args(["stop", "--time", "10", node]))
    }

    fn reboot_node(&self, node: &str) -> Option<Cmd> {
        Some(self.cmd().args(["restart", "--time", "30", node]))
    }

    fn start_node(&self, node: &str) -> Option<Cmd> {
        Some(self.cmd().args(["start", node]))
    }

    fn shared_folder(&self) -> Option<&'static str> {
        Some(SHARED_IN_NODE)
    }

    fn boot_id(&self, node: &str) -> Option<Cmd> {
        Some(
            self.cmd()
                .args(["inspect", "--format", "{{.State.StartedAt}}", node]),
        )
    }

    fn shell_hint(&self, node: &str) -> String {
        format!("{} exec -it {node} bash", self.program())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::DROP_TIMEOUT;

    fn spec() -> ClusterSpec {
        ClusterSpec {
            name: cluster_name("20261121-103500-ab12", "docker-bridge"),
            run_id: "20261121-103500-ab12".into(),
            control_planes: 1,
            workers: 2,
            node_image: "shakedown.local/node:v1.20.2-x".into(),
            images_tar: Some("/cache/images.tar".into()),
            runtime: Runtime::Containerd,
            load_balancer_image: None,
            loopback_hosts: vec!["shakedown.local".into()],
            etcd_nodes: 0,
            pod_subnet: "10.244.0.0/16".into(),
            service_subnet: "10.96.0.0/12".into(),
            vm: None,
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
        for p in [ContainerProvider::docker(), ContainerProvider::podman()] {
            let a = p.run_args(&spec(), "net", "n1", Role::Worker).join(" ");
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
                "--add-host=shakedown.local:127.0.0.1",
                "--volume=n1-var:/var",
                "--volume=sd-20261121-103500-ab12-docker-bridge-shared:/srv/shakedown-shared",
            ] {
                assert!(a.contains(want), "{}: missing {want} in {a}", p.program());
            }
            assert!(a.ends_with("shakedown.local/node:v1.20.2-x"));
            assert!(
                !a.contains("--volume=/var "),
                "an anonymous /var volume escapes gc: {a}"
            );
        }
        let podman = ContainerProvider::podman()
            .run_args(&spec(), "net", "n1", Role::Worker)
            .join(" ");
        for want in [
            "--volume=n1-var:/var:suid,dev,exec",
            "--systemd=false",
            "--ulimit=nproc=32768:32768",
            "--ulimit=nofile=",
        ] {
            assert!(podman.contains(want), "podman: missing {want} in {podman}");
        }
        let docker = ContainerProvider::docker()
            .run_args(&spec(), "net", "n1", Role::Worker)
            .join(" ");
        assert!(
            !docker.contains("--ulimit") && !docker.contains("--systemd"),
            "{docker}"
        );
    }

    #[test]
    fn the_podman_forward_rule_is_marked_with_its_run() {
        let add = forward_rule("-I", "podman3", "sd-r1-podman-bridge").join(" ");
        assert_eq!(
            add,
            "-I FORWARD -i podman3 -o podman3 -m comment --comment shakedown:sd-r1-podman-bridge -j ACCEPT"
        );
    }

    #[test]
    fn commands_name_the_engine_and_quote_paths() {
        let p = ContainerProvider::podman();
        let c = p.exec("n1", &["ctr".into(), "version".into()], false);
        assert_eq!(c.to_string(), "podman exec n1 ctr version");
        let c = p.load_image("n1", Path::new("/tmp/a b.tar"), Runtime::Containerd);
        assert!(
            c.to_string()
                .contains("podman exec -i n1 ctr -n k8s.io images import --no-unpack -"),
            "{c}"
        );
        assert!(c.to_string().contains("'/tmp/a b.tar'"), "{c}");
        // dockershim: kubelet asks dockerd, which keeps its own store.
        let c = p.load_image("n1", Path::new("/tmp/a.tar"), Runtime::Docker);
        assert!(
            c.to_string()
                .contains("exec -i n1 docker load -q < /tmp/a.tar"),
            "{c}"
        );
        assert!(!ContainerProvider::docker()
            .copy_from("n1", "/var/log/pods", Path::new("/x"))
            .to_string()
            .contains("podman"));
    }

    #[test]
    fn cleanup_on_drop_is_bounded_and_logged() {
        let d = tempfile::tempdir().unwrap();
        // A container CLI that never answers, put first on PATH under the engine's name.
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let cli = bin.join("hung-engine");
        std::fs::write(&cli, "#!/bin/sh\nexec sleep 60\n").unwrap();
        std::fs::set_permissions(&cli, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let log = StepLog::create(&d.path().join("up.log")).unwrap();
        let t = std::time::Instant::now();
        let limit = Duration::from_millis(200);
        assert!(limit < DROP_TIMEOUT);
        for args in [
            vec![
                "rm".to_string(),
                "-f".into(),
                "-v".into(),
                "sd-x-cp1".into(),
            ],
            vec!["network".into(), "rm".into(), "sd-x".into()],
        ] {
            run_bounded(&cli.display().to_string(), &args, Some(&log), limit);
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let text = std::fs::read_to_string(log.path()).unwrap();
        for want in [
            "rm -f -v sd-x-cp1",
            "network rm sd-x",
            "did not finish within",
        ] {
            assert!(text.contains(want), "missing {want:?} in {text}");
        }
        assert_eq!(
            text.lines().filter(|l| l.starts_with("+ ")).count(),
            2,
            "{text}"
        );
    }
}
