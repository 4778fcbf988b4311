//! Cluster providers: where nodes come from, after kind's `providers` package. One
//! [`Provider`] trait; actions talk to it (through [`Cluster`]) and never name a container
//! engine. Implementations:
//! - [`container::ContainerProvider`]: nodes as containers of docker (built in) or podman;
//! - [`existing::Existing`]: a cluster someone else made, reached through its kubeconfig
//!   (no create, no delete, no commands on nodes);
//! - [`kind::Kind`]: clusters `kind create cluster` makes, kubeadm run by kind itself.

pub mod container;
pub mod existing;
pub mod kind;
pub mod load_balancer;
pub mod vm;

use crate::process::{Cmd, CommandError, Runner, StepLog};
use crate::scenario::ProviderKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const LABEL_MANAGED: &str = "io.shakedown.managed";
pub const LABEL_RUN: &str = "io.shakedown.run";
pub const LABEL_CLUSTER: &str = "io.shakedown.cluster";
pub const LABEL_ROLE: &str = "io.shakedown.role";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    ControlPlane,
    Worker,
    /// haproxy in front of several control planes: not a Kubernetes node.
    LoadBalancer,
    /// A member of an external etcd (`cluster.etcd: external`): the node image, whose
    /// kubelet runs etcd as a static pod and joins no cluster. Not a Kubernetes node.
    Etcd,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
            Role::LoadBalancer => "load-balancer",
            Role::Etcd => "etcd",
        }
    }
}

#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Container name, hostname and Kubernetes node name.
    pub name: String,
    pub role: Role,
    pub ip: String,
    /// A VM (provider vm), not a container: container commands never name it.
    pub vm: bool,
}

/// What a job asks of its provider: the one description of a cluster to make.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub name: String,
    pub run_id: String,
    pub control_planes: u32,
    pub workers: u32,
    pub node_image: String,
    /// The component images, as one `docker save` tarball, loaded into every node (None:
    /// every image is pulled).
    pub images_tar: Option<PathBuf>,
    /// Which store the images go into: containerd's, or dockerd's for dockershim.
    pub runtime: crate::release::era::Runtime,
    /// The load balancer's image, for a cluster of several control planes (None: the API
    /// is reached at the first control plane).
    pub load_balancer_image: Option<String>,
    /// Host names every node resolves to its own loopback: the registry names of images
    /// built here, so a missing one is never looked up outside the machine.
    pub loopback_hosts: Vec<String>,
    /// Members of an external etcd, each on a node of its own (0: etcd is stacked on the
    /// control planes).
    pub etcd_nodes: u32,
    /// The scenario's subnets, for providers that bootstrap the cluster themselves (kind).
    pub pod_subnet: String,
    pub service_subnet: String,
    /// VM nodes (provider vm): the disk, the machine, and how many nodes are VMs.
    pub vm: Option<vm::VmCluster>,
}

/// What a provider that runs kubeadm itself (kind) reported of the bootstrap: the `init`
/// and `join` steps show this instead of running kubeadm.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub tool: &'static str,
    pub seconds: f64,
    /// The steps the tool said it did, in order.
    pub phases: Vec<String>,
}

/// Why a provider could not make or reach a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("failed to read the cluster's kubeconfig {}", path.display())]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("failed to write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to list the nodes of the cluster in {}", path.display())]
    Nodes {
        path: PathBuf,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("failed to use provider {provider}: {message}")]
    Unsupported {
        provider: &'static str,
        message: String,
    },
}

/// What was removed by label.
#[derive(Debug, Default)]
pub struct Collected {
    pub containers: Vec<String>,
    pub networks: Vec<String>,
    pub volumes: Vec<String>,
}

/// Where nodes come from. Nodes are command runners: every command a step runs on a node
/// is a [`Cmd`] the provider builds, so it is logged and bounded like any other.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// `docker`, `podman`, `existing`: the name in job names and messages.
    fn name(&self) -> &'static str;

    /// False for a cluster that cannot run commands on its nodes (`existing`): node checks
    /// and journal export skip, with that reason.
    fn runs_commands(&self) -> bool {
        true
    }

    /// True when `create` also runs kubeadm init and join (kind): the cluster comes up
    /// whole, with its kubeconfig, and [`Cluster::bootstrap`] says what was done.
    fn bootstraps(&self) -> bool {
        false
    }

    /// False when the provider brings its own node image (kind's), so no image-build is
    /// needed before `cluster-up`.
    fn needs_node_image(&self) -> bool {
        true
    }

    /// The provider's own log export into `dir` (None: shakedown collects each node's
    /// journals and files itself).
    fn export_logs(&self, _cluster: &Cluster, _dir: &Path) -> Option<Cmd> {
        None
    }

    /// Makes (or attaches to) the cluster: nodes up, images loaded, addresses known.
    async fn create(
        &self,
        r: &Runner,
        spec: &ClusterSpec,
        note: &(dyn Fn(String) + Sync),
    ) -> Result<Cluster, ProviderError>;

    /// `args` run on `node`; with `stdin`, the command reads standard input.
    fn exec(&self, node: &str, args: &[String], stdin: bool) -> Cmd;

    /// Streams a `docker save` tarball on this machine into the image store the node's
    /// kubelet uses with `runtime` (containerd's, or dockerd's for dockershim).
    fn load_image(&self, node: &str, tar: &Path, runtime: crate::release::era::Runtime) -> Cmd;

    /// Copies `from` on the node to `to` on this machine (following symlinks).
    fn copy_from(&self, node: &str, from: &str, to: &Path) -> Cmd;

    /// Copies the file `from` on this machine to the path `to` on the node.
    fn copy_to(&self, node: &str, from: &Path, to: &str) -> Cmd;

    /// Each node that is not running, with its state: `node X is exited (exit code 137)`.
    async fn stopped_nodes(
        &self,
        r: &Runner,
        cluster: &Cluster,
    ) -> Result<Vec<String>, CommandError>;

    /// Removes what `create` made.
    async fn remove(&self, r: &Runner, cluster: &Cluster) -> Result<(), CommandError>;

    /// The same, synchronously and bounded: the last resort of [`Cluster`]'s drop.
    fn remove_on_drop(&self, cluster: &Cluster, log: Option<&StepLog>, limit: Duration);

    /// Removes everything labelled by shakedown, or by one run.
    async fn gc(&self, r: &Runner, run_id: Option<&str>) -> Result<Collected, CommandError>;

    /// How a person reaches a node, for `--keep-cluster`.
    fn shell_hint(&self, node: &str) -> String;

    /// What a helper container (the load balancer) printed, with timestamps (None: this
    /// provider runs none).
    fn container_logs(&self, _name: &str) -> Option<Cmd> {
        None
    }

    /// Stops a node as its host shutting down would (None: this provider cannot).
    fn stop_node(&self, _node: &str) -> Option<Cmd> {
        None
    }

    /// Restarts a node: a real reboot of a VM, a restart of a container (None: this
    /// provider cannot). The command may fail as the node goes away under it.
    fn reboot_node(&self, _node: &str) -> Option<Cmd> {
        None
    }

    /// Starts a node `stop_node` stopped (None: this provider cannot).
    fn start_node(&self, _node: &str) -> Option<Cmd> {
        None
    }

    /// A folder every node of a cluster sees with the same contents, as network storage
    /// would be (None: this provider has none).
    fn shared_folder(&self) -> Option<&'static str> {
        None
    }

    /// The node's serial console, as this machine keeps it (a VM's), for log export.
    fn console_log(&self, _node: &str) -> Option<PathBuf> {
        None
    }

    /// Prints what changes when the node boots again: the kernel's boot id of a VM, the
    /// start time of a container.
    fn boot_id(&self, _node: &str) -> Option<Cmd> {
        None
    }
}

/// A cluster a provider made. Removed when dropped unless `keep` is set or it was already
/// removed (cleanup on drop, after testcontainers).
#[derive(Debug)]
pub struct Cluster {
    pub name: String,
    /// The network the nodes share (empty for `existing`).
    pub network: String,
    pub run_id: String,
    pub nodes: Vec<NodeInfo>,
    /// The load balancer in front of the control planes, when there are several.
    pub load_balancer: Option<NodeInfo>,
    /// The external etcd's nodes (empty: etcd is stacked on the control planes). Kept
    /// apart from `nodes`, which are Kubernetes nodes.
    pub etcd: Vec<NodeInfo>,
    /// Set when the provider ran kubeadm itself (kind).
    pub bootstrap: Option<Bootstrap>,
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig belongs to someone else: never removed.
    pub kubeconfig_borrowed: bool,
    pub keep: bool,
    pub removed: bool,
    pub provider: Arc<dyn Provider>,
    /// How long each command of the cleanup on drop may take.
    pub drop_timeout: Duration,
    /// Where the commands of a last-resort cleanup on drop are logged.
    pub log: Option<StepLog>,
}

/// How long the cleanup on drop waits for each command.
pub const DROP_TIMEOUT: Duration = Duration::from_secs(30);

impl Cluster {
    pub fn new(
        provider: Arc<dyn Provider>,
        name: &str,
        network: &str,
        run_id: &str,
        log: Option<StepLog>,
    ) -> Cluster {
        Cluster {
            name: name.to_string(),
            network: network.to_string(),
            run_id: run_id.to_string(),
            nodes: Vec::new(),
            load_balancer: None,
            etcd: Vec::new(),
            bootstrap: None,
            kubeconfig: None,
            kubeconfig_borrowed: false,
            keep: false,
            removed: false,
            provider,
            drop_timeout: DROP_TIMEOUT,
            log,
        }
    }

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
    /// The Kubernetes nodes and etcd nodes that are containers (not VMs).
    pub fn container_nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.iter().chain(self.etcd.iter()).filter(|n| !n.vm)
    }
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }
    /// Every container of the cluster: the nodes that are not VMs, the etcd nodes and the
    /// load balancer.
    pub fn container_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.container_nodes().map(|n| n.name.clone()).collect();
        v.extend(self.load_balancer.iter().map(|l| l.name.clone()));
        v
    }
    /// Where etcdctl reaches etcd with kubeadm's health-check client: the first external
    /// etcd node, else the first control plane (stacked).
    pub fn etcd_host(&self) -> &NodeInfo {
        self.etcd
            .first()
            .unwrap_or_else(|| self.first_control_plane())
    }
    /// How many etcd members the cluster should have: one per external etcd node, else one
    /// per control plane.
    pub fn etcd_members(&self) -> usize {
        if self.etcd.is_empty() {
            self.control_planes().count()
        } else {
            self.etcd.len()
        }
    }
    /// `host:port` where nodes and kubeconfigs reach the API: the load balancer when there
    /// is one, else the first control plane.
    pub fn api_endpoint(&self) -> String {
        let host = match &self.load_balancer {
            Some(lb) => &lb.ip,
            None => &self.first_control_plane().ip,
        };
        format!("{host}:{}", load_balancer::API_PORT)
    }
    /// Marks the cluster as gone (after `remove`).
    pub fn mark_removed(&mut self) {
        self.removed = true;
    }

    /// `args` run on `node`, through the provider.
    pub fn exec<S: AsRef<str>>(&self, node: &str, args: &[S]) -> Cmd {
        let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
        self.provider.exec(node, &args, false)
    }

    /// Writes `content` to `path` inside the node.
    pub fn write_file(&self, node: &str, path: &str, content: &str) -> Cmd {
        self.write_with(node, path, content, "")
    }

    /// Writes `content` to `path` inside the node, readable by root only (a key, a
    /// certificate set): the folder is made, and the file created, under umask 077.
    pub fn write_secret_file(&self, node: &str, path: &str, content: &str) -> Cmd {
        self.write_with(node, path, content, "umask 077 && ")
    }

    /// `mkdir -p` of the folder and `cat >` of the file on the node, after `prefix`.
    fn write_with(&self, node: &str, path: &str, content: &str, prefix: &str) -> Cmd {
        let dir = Path::new(path)
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "/".into());
        let script = format!(
            "{prefix}mkdir -p {} && cat > {}",
            shell_words::quote(&dir),
            shell_words::quote(path)
        );
        self.provider
            .exec(node, &["sh".into(), "-c".into(), script], true)
            .stdin(content.as_bytes().to_vec())
    }

    /// Loads a `docker save` tarball on this machine into the image store the node's
    /// kubelet uses with `runtime`.
    pub fn load_image(&self, node: &str, tar: &Path, runtime: crate::release::era::Runtime) -> Cmd {
        self.provider.load_image(node, tar, runtime)
    }

    /// Copies a file of this machine into the node.
    pub fn copy_to(&self, node: &str, from: &Path, to: &str) -> Cmd {
        self.provider.copy_to(node, from, to)
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
        if self.provider.runs_commands() {
            for n in &self.nodes {
                s.push_str(&format!(
                    "  {}    # {} {}\n",
                    self.provider.shell_hint(&n.name),
                    n.role.as_str(),
                    n.ip
                ));
            }
        }
        if self.provider.runs_commands() {
            s.push_str(&format!(
                "  remove it with: shakedown gc --run {}",
                self.run_id
            ));
        } else {
            s.push_str("  (someone else's cluster: nothing of it was created, nothing is removed)");
        }
        s
    }

    /// Forgets the kubeconfig file (a copy in the run's work folder; never a borrowed one),
    /// and the work folder once no other job's file is left in it.
    pub fn forget_kubeconfig(&self) {
        if let (Some(k), false) = (&self.kubeconfig, self.kubeconfig_borrowed) {
            let _ = std::fs::remove_file(k);
            // Only the run's own work folder, and only once empty (other jobs' files stay).
            let work = crate::paths::work_dir(&self.run_id);
            if k.parent() == Some(work.as_path()) {
                let _ = std::fs::remove_dir(work);
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.keep || self.removed {
            return;
        }
        let provider = self.provider.clone();
        provider.remove_on_drop(self, self.log.as_ref(), self.drop_timeout);
        self.forget_kubeconfig();
    }
}

/// The provider behind a job's `provider:`; `existing` needs the cluster's kubeconfig.
pub fn for_kind(
    kind: ProviderKind,
    kubeconfig: Option<&Path>,
) -> Result<Arc<dyn Provider>, ProviderError> {
    match kind {
        ProviderKind::Docker => Ok(Arc::new(container::ContainerProvider::docker())),
        ProviderKind::Podman => Ok(Arc::new(container::ContainerProvider::podman())),
        ProviderKind::Existing => match kubeconfig {
            Some(k) => Ok(Arc::new(existing::Existing::new(k))),
            None => Err(ProviderError::Unsupported {
                provider: "existing",
                message: "needs the cluster's kubeconfig: pass --kubeconfig FILE".into(),
            }),
        },
        ProviderKind::Kind => {
            let k = kind::Kind::from_env();
            if k.installed() {
                Ok(Arc::new(k))
            } else {
                Err(ProviderError::Unsupported {
                    provider: "kind",
                    message: unavailable_here(ProviderKind::Kind).unwrap_or_default(),
                })
            }
        }
        ProviderKind::Vm if vm::VmProvider::installed() => Ok(Arc::new(vm::VmProvider::new())),
        ProviderKind::Vm => Err(ProviderError::Unsupported {
            provider: kind.as_str(),
            message: unavailable_here(kind).unwrap_or_default(),
        }),
    }
}

/// Why a job cannot run for real on this machine, if it cannot.
pub fn unavailable_here(provider: ProviderKind) -> Option<String> {
    match provider {
        ProviderKind::Docker | ProviderKind::Podman | ProviderKind::Existing => None,
        ProviderKind::Kind if kind::Kind::from_env().installed() => None,
        ProviderKind::Kind => Some(format!("provider kind needs the kind binary on PATH (or named by {}) and its node image; neither can be obtained offline", kind::KIND_ENV)),
        ProviderKind::Vm if vm::VmProvider::installed() => None,
        ProviderKind::Vm => Some("provider vm needs qemu-system-x86_64 (run: shakedown host setup)".into()),
    }
}

/// Removes what `gc` finds for every container engine installed on this machine, each on
/// its own: one engine failing does not keep the other's leftovers. The first error is
/// returned after both ran.
pub async fn gc_all(r: &Runner, run_id: Option<&str>) -> Result<Collected, CommandError> {
    let mut all = Collected::default();
    let mut first = None;
    for engine in [
        container::ContainerProvider::docker(),
        container::ContainerProvider::podman(),
    ] {
        if !engine.installed() {
            continue;
        }
        // kind's clusters first: `kind delete` also tidies its kubeconfig entries.
        if engine.program() == "docker" {
            let k = kind::Kind::from_env();
            if k.installed() {
                match k.gc(r, run_id).await {
                    Ok(c) => all.containers.extend(c.containers),
                    Err(e) => {
                        first.get_or_insert(e);
                    }
                }
            }
        }
        match engine.gc(r, run_id).await {
            Ok(c) => {
                all.containers.extend(c.containers);
                all.networks.extend(c.networks);
                all.volumes.extend(c.volumes);
            }
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    first.map_or(Ok(all), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records what the cluster asks of it.
    #[derive(Debug, Default)]
    struct Recorder {
        dropped: Mutex<Vec<(String, Duration)>>,
    }

    #[async_trait::async_trait]
    impl Provider for Recorder {
        fn name(&self) -> &'static str {
            "recorder"
        }
        async fn create(
            &self,
            _: &Runner,
            _: &ClusterSpec,
            _: &(dyn Fn(String) + Sync),
        ) -> Result<Cluster, ProviderError> {
            unreachable!()
        }
        fn exec(&self, node: &str, args: &[String], stdin: bool) -> Cmd {
            Cmd::new("exec-on")
                .arg(node)
                .arg(stdin.to_string())
                .args(args.iter().cloned())
        }
        fn load_image(&self, node: &str, _: &Path, _: crate::release::era::Runtime) -> Cmd {
            Cmd::new("load").arg(node)
        }
        fn copy_from(&self, node: &str, _: &str, _: &Path) -> Cmd {
            Cmd::new("copy").arg(node)
        }
        fn copy_to(&self, node: &str, _: &Path, _: &str) -> Cmd {
            Cmd::new("copy-to").arg(node)
        }
        async fn stopped_nodes(
            &self,
            _: &Runner,
            _: &Cluster,
        ) -> Result<Vec<String>, CommandError> {
            Ok(Vec::new())
        }
        async fn remove(&self, _: &Runner, _: &Cluster) -> Result<(), CommandError> {
            Ok(())
        }
        fn remove_on_drop(&self, c: &Cluster, _: Option<&StepLog>, limit: Duration) {
            self.dropped.lock().unwrap().push((c.name.clone(), limit));
        }
        async fn gc(&self, _: &Runner, _: Option<&str>) -> Result<Collected, CommandError> {
            Ok(Collected::default())
        }
        fn shell_hint(&self, node: &str) -> String {
            format!("enter {node}")
        }
    }

    #[test]
    fn a_dropped_cluster_is_removed_through_its_provider_unless_kept() {
        let p = Arc::new(Recorder::default());
        let d = tempfile::tempdir().unwrap();
        let kubeconfig = d.path().join("admin.conf");
        std::fs::write(&kubeconfig, "x").unwrap();
        let mut c = Cluster::new(p.clone(), "c1", "c1", "run", None);
        c.kubeconfig = Some(kubeconfig.clone());
        c.drop_timeout = Duration::from_millis(200);
        drop(c);
        assert_eq!(
            *p.dropped.lock().unwrap(),
            [("c1".to_string(), Duration::from_millis(200))]
        );
        assert!(
            !kubeconfig.exists(),
            "the run's copy of the kubeconfig goes too"
        );

        let mut kept = Cluster::new(p.clone(), "c2", "c2", "run", None);
        kept.keep = true;
        drop(kept);
        let mut removed = Cluster::new(p.clone(), "c3", "c3", "run", None);
        removed.mark_removed();
        drop(removed);
        assert_eq!(
            p.dropped.lock().unwrap().len(),
            1,
            "kept and removed clusters stay"
        );

        // A borrowed kubeconfig (existing provider) is never deleted.
        std::fs::write(&kubeconfig, "x").unwrap();
        let mut borrowed = Cluster::new(p.clone(), "c4", "c4", "run", None);
        borrowed.kubeconfig = Some(kubeconfig.clone());
        borrowed.kubeconfig_borrowed = true;
        drop(borrowed);
        assert!(kubeconfig.exists());
    }

    #[test]
    fn files_are_written_through_the_provider_with_quoted_paths() {
        let c = Cluster::new(Arc::new(Recorder::default()), "c", "c", "run", None);
        let w = c.write_file("n1", "/etc/a b/c.yaml", "content");
        assert_eq!(w.program, "exec-on");
        assert_eq!(w.args[..2], ["n1".to_string(), "true".into()]);
        assert_eq!(w.args[4], "mkdir -p '/etc/a b' && cat > '/etc/a b/c.yaml'");
        assert_eq!(w.stdin.as_deref(), Some(&b"content"[..]));
    }
}
