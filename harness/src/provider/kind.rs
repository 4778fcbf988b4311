//! kind clusters (`providers: [kind]`): `kind create cluster` with a v1alpha4 `Cluster`
//! config made from the topology, and kind runs kubeadm itself. Its nodes are containers of
//! the engine kind uses (docker, or podman under `KIND_EXPERIMENTAL_PROVIDER=podman`), so
//! commands on nodes go through that engine, as for the built-in providers. `kind export
//! logs` exports, `kind delete cluster` removes. kind labels its containers with the
//! cluster's name only, so `gc` finds a run's clusters by name (`sd-<run id>-...`).
//!
//! `SHAKEDOWN_KIND` names the kind program (default `kind` on PATH); the `fake-kind::`
//! trials point it at a recording fake, since kind and its node images cannot be obtained
//! on an offline machine.

use super::container::ContainerProvider;
use super::{Bootstrap, Cluster, ClusterSpec, Collected, NodeInfo, Provider, ProviderError, Role};
use crate::process::{Cmd, CommandError, Runner, StepLog};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The environment variable naming the kind program.
pub const KIND_ENV: &str = "SHAKEDOWN_KIND";

/// The longest cluster name kind accepts.
pub const KIND_NAME_MAX: usize = 50;

/// The network kind puts every cluster's nodes on.
const KIND_NETWORK: &str = "kind";

#[derive(Debug, Clone)]
pub struct Kind {
    program: String,
    /// The engine kind's node containers run in.
    nodes: ContainerProvider,
}

impl Kind {
    /// kind as the environment names it: `SHAKEDOWN_KIND`, else `kind` on PATH; podman when
    /// kind itself is told to use it.
    pub fn from_env() -> Kind {
        let program = std::env::var(KIND_ENV)
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "kind".into());
        let podman = std::env::var("KIND_EXPERIMENTAL_PROVIDER").is_ok_and(|v| v == "podman");
        Kind {
            program,
            nodes: if podman {
                ContainerProvider::podman()
            } else {
                ContainerProvider::docker()
            },
        }
    }

    /// Whether the kind program exists (a path, or a name found on PATH).
    pub fn installed(&self) -> bool {
        let p = Path::new(&self.program);
        if p.components().count() > 1 {
            return p.is_file();
        }
        crate::process::on_path(&self.program).is_some()
    }

    fn kind(&self) -> Cmd {
        Cmd::new(&self.program)
    }

    /// Where kind writes the cluster's kubeconfig: the run's private work folder.
    fn kubeconfig_path(spec_name: &str, run_id: &str) -> Result<PathBuf, ProviderError> {
        let dir = crate::paths::create_work_dir(run_id).map_err(|source| ProviderError::Write {
            path: crate::paths::work_dir(run_id),
            source,
        })?;
        Ok(dir.join(format!("{spec_name}-kind.conf")))
    }
}

/// kind's v1alpha4 `Cluster` for the topology: one node entry per control plane and worker,
/// no default CNI (shakedown applies the scenario's variant), the scenario's subnets, and
/// the API server on the host's loopback only.
pub fn config(spec: &ClusterSpec) -> String {
    let mut out = String::from("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\n");
    out.push_str("networking:\n  disableDefaultCNI: true\n");
    out.push_str(&format!(
        "  podSubnet: \"{}\"\n  serviceSubnet: \"{}\"\n  apiServerAddress: \"127.0.0.1\"\n",
        spec.pod_subnet, spec.service_subnet
    ));
    out.push_str("nodes:\n");
    for _ in 0..spec.control_planes {
        out.push_str("- role: control-plane\n");
    }
    for _ in 0..spec.workers {
        out.push_str("- role: worker\n");
    }
    out
}

/// What kind said it did: its ` ✓ Step` lines, in order.
pub fn phases(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| l.trim().strip_prefix('✓'))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// A kind node's role from its container name: `<cluster>-control-plane[N]`,
/// `<cluster>-worker[N]`, `<cluster>-external-load-balancer`.
pub fn role_of(cluster: &str, node: &str) -> Option<Role> {
    let rest = node.strip_prefix(cluster)?.strip_prefix('-')?;
    if rest == "external-load-balancer" {
        Some(Role::LoadBalancer)
    } else if rest.starts_with("control-plane") {
        Some(Role::ControlPlane)
    } else if rest.starts_with("worker") {
        Some(Role::Worker)
    } else {
        None
    }
}

/// The clusters `kind get clusters` lists that a run made: every shakedown cluster, or one
/// run's.
pub fn clusters_of_run(listed: &str, run_id: Option<&str>) -> Vec<String> {
    let prefix = match run_id {
        Some(id) => format!("sd-{id}-"),
        None => "sd-".to_string(),
    };
    listed
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

#[async_trait::async_trait]
impl Provider for Kind {
    fn name(&self) -> &'static str {
        "kind"
    }

    fn bootstraps(&self) -> bool {
        true
    }

    fn needs_node_image(&self) -> bool {
        false
    }

    async fn create(
        &self,
        r: &Runner,
        spec: &ClusterSpec,
        note: &(dyn Fn(String) + Sync),
    ) -> Result<Cluster, ProviderError> {
        if spec.name.len() > KIND_NAME_MAX {
            return Err(ProviderError::Unsupported {
                provider: "kind",
                message: format!(
                    "the cluster name {} has {} characters; kind takes at most {KIND_NAME_MAX} (shorten the topology's name)",
                    spec.name,
                    spec.name.len()
                ),
            });
        }
        let mut cluster = Cluster::new(
            Arc::new(self.clone()),
            &spec.name,
            KIND_NETWORK,
            &spec.run_id,
            Some(r.log.clone()),
        );
        let kubeconfig = Kind::kubeconfig_path(&spec.name, &spec.run_id)?;
        let cfg = config(spec);
        let cfg_path = kubeconfig.with_file_name(format!("{}-kind.yaml", spec.name));
        std::fs::write(&cfg_path, &cfg).map_err(|source| ProviderError::Write {
            path: cfg_path.clone(),
            source,
        })?;
        note(format!("kind config ({}):\n{cfg}", cfg_path.display()));
        // From here on, a failure or a drop deletes the cluster by name.
        cluster.kubeconfig = Some(kubeconfig.clone());
        let t = Instant::now();
        let created = r
            .run(
                self.kind()
                    .args(["create", "cluster", "--name", &spec.name, "--config"])
                    .arg(cfg_path.display().to_string())
                    .args(["--image", &spec.node_image, "--kubeconfig"])
                    .arg(kubeconfig.display().to_string())
                    .capture(),
            )
            .await;
        // The config is in the step log; the work folder keeps only the kubeconfig.
        let _ = std::fs::remove_file(&cfg_path);
        let out = created?;
        let seconds = t.elapsed().as_secs_f64();
        let said = format!("{}\n{}", out.stdout, out.stderr);
        let phases = phases(&said);
        note(format!(
            "kind created {} in {seconds:.1}s: {}",
            spec.name,
            if phases.is_empty() {
                "it reported no steps".to_string()
            } else {
                phases.join("; ")
            }
        ));
        cluster.bootstrap = Some(Bootstrap {
            tool: "kind",
            seconds,
            phases,
        });
        let listed = r
            .output(self.kind().args(["get", "nodes", "--name", &spec.name]))
            .await?;
        let template =
            format!("{{{{(index .NetworkSettings.Networks \"{KIND_NETWORK}\").IPAddress}}}}");
        for name in listed.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let Some(role) = role_of(&spec.name, name) else {
                note(format!(
                    "kind listed {name}, which is no node of {}",
                    spec.name
                ));
                continue;
            };
            let ip = r
                .output(
                    Cmd::new(self.nodes.program()).args(["inspect", "--format", &template, name]),
                )
                .await?;
            let info = NodeInfo {
                name: name.to_string(),
                role,
                ip,
                vm: false,
            };
            if role == Role::LoadBalancer {
                cluster.load_balancer = Some(info);
            } else {
                cluster.nodes.push(info);
            }
        }
        let cps = cluster.control_planes().count();
        let workers = cluster.workers().count();
        if cps as u32 != spec.control_planes || workers as u32 != spec.workers {
            return Err(ProviderError::Unsupported {
                provider: "kind",
                message: format!(
                    "kind made {cps} control plane(s) and {workers} worker(s) for {}; the topology asks for {} and {}",
                    spec.name, spec.control_planes, spec.workers
                ),
            });
        }
        Ok(cluster)
    }

    fn exec(&self, node: &str, args: &[String], stdin: bool) -> Cmd {
        self.nodes.exec(node, args, stdin)
    }

    fn load_image(&self, node: &str, tar: &Path, runtime: crate::release::era::Runtime) -> Cmd {
        self.nodes.load_image(node, tar, runtime)
    }

    fn copy_from(&self, node: &str, from: &str, to: &Path) -> Cmd {
        self.nodes.copy_from(node, from, to)
    }

    fn copy_to(&self, node: &str, from: &Path, to: &str) -> Cmd {
        self.nodes.copy_to(node, from, to)
    }

    async fn stopped_nodes(
        &self,
        r: &Runner,
        cluster: &Cluster,
    ) -> Result<Vec<String>, CommandError> {
        self.nodes.stopped_nodes(r, cluster).await
    }

    async fn remove(&self, r: &Runner, cluster: &Cluster) -> Result<(), CommandError> {
        let mut cmd = self
            .kind()
            .args(["delete", "cluster", "--name", &cluster.name]);
        if let Some(k) = &cluster.kubeconfig {
            cmd = cmd.arg("--kubeconfig").arg(k.display().to_string());
        }
        r.run(cmd).await.map(drop)
    }

    fn remove_on_drop(&self, cluster: &Cluster, log: Option<&StepLog>, limit: Duration) {
        let mut args: Vec<String> = vec![
            "delete".into(),
            "cluster".into(),
            "--name".into(),
            cluster.name.clone(),
        ];
        // kind edits the kubeconfig it is given, never the user's default one.
        if let Some(k) = &cluster.kubeconfig {
            args.extend(["--kubeconfig".into(), k.display().to_string()]);
        }
        super::container::run_bounded(&self.program, &args, log, limit);
    }

    async fn gc(&self, r: &Runner, run_id: Option<&str>) -> Result<Collected, CommandError> {
        let listed = r.output(self.kind().args(["get", "clusters"])).await?;
        let mut c = Collected::default();
        for name in clusters_of_run(&listed, run_id) {
            r.run(self.kind().args(["delete", "cluster", "--name", &name]))
                .await?;
            c.containers.push(format!("kind cluster {name}"));
        }
        Ok(c)
    }

    fn shell_hint(&self, node: &str) -> String {
        self.nodes.shell_hint(node)
    }

    fn container_logs(&self, name: &str) -> Option<Cmd> {
        self.nodes.container_logs(name)
    }

    fn stop_node(&self, node: &str) -> Option<Cmd> {
        self.nodes.stop_node(node)
    }

    fn reboot_node(&self, node: &str) -> Option<Cmd> {
        self.nodes.reboot_node(node)
    }

    fn boot_id(&self, node: &str) -> Option<Cmd> {
        self.nodes.boot_id(node)
    }

    fn export_logs(&self, cluster: &Cluster, dir: &Path) -> Option<Cmd> {
        Some(
            self.kind()
                .args(["export", "logs"])
                .arg(dir.display().to_string())
                .args(["--name", &cluster.name]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::era::Runtime;

    fn spec(control_planes: u32, workers: u32) -> ClusterSpec {
        ClusterSpec {
            name: "sd-20261202-120000-ab12-kind-bridge".into(),
            run_id: "20261202-120000-ab12".into(),
            control_planes,
            workers,
            node_image: "kindest/node:v1.20.2".into(),
            images_tar: None,
            runtime: Runtime::Containerd,
            load_balancer_image: None,
            loopback_hosts: Vec::new(),
            etcd_nodes: 0,
            pod_subnet: "10.244.0.0/16".into(),
            service_subnet: "10.96.0.0/12".into(),
            vm: None,
        }
    }

    #[test]
    fn the_config_is_a_v1alpha4_cluster_of_the_topology_without_a_default_cni() {
        let v: serde_yaml::Value = serde_yaml::from_str(&config(&spec(3, 2))).unwrap();
        assert_eq!(v["kind"], "Cluster");
        assert_eq!(v["apiVersion"], "kind.x-k8s.io/v1alpha4");
        assert_eq!(v["networking"]["disableDefaultCNI"], true);
        assert_eq!(v["networking"]["podSubnet"], "10.244.0.0/16");
        assert_eq!(v["networking"]["serviceSubnet"], "10.96.0.0/12");
        assert_eq!(v["networking"]["apiServerAddress"], "127.0.0.1");
        let roles: Vec<&str> = v["nodes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|n| n["role"].as_str().unwrap())
            .collect();
        assert_eq!(
            roles,
            [
                "control-plane",
                "control-plane",
                "control-plane",
                "worker",
                "worker"
            ]
        );
    }

    #[test]
    fn nodes_and_steps_are_read_from_what_kind_prints() {
        let c = "sd-1-kind-bridge";
        assert_eq!(
            role_of(c, "sd-1-kind-bridge-control-plane"),
            Some(Role::ControlPlane)
        );
        assert_eq!(
            role_of(c, "sd-1-kind-bridge-control-plane2"),
            Some(Role::ControlPlane)
        );
        assert_eq!(role_of(c, "sd-1-kind-bridge-worker3"), Some(Role::Worker));
        assert_eq!(
            role_of(c, "sd-1-kind-bridge-external-load-balancer"),
            Some(Role::LoadBalancer)
        );
        assert_eq!(role_of(c, "other-worker"), None);
        let said = "Creating cluster \"x\" ...\n ✓ Ensuring node image (kindest/node:v1.20.2) 🖼\n ✓ Preparing nodes 📦\n ✓ Starting control-plane 🕹️\nSet kubectl context";
        assert_eq!(
            phases(said),
            [
                "Ensuring node image (kindest/node:v1.20.2) 🖼",
                "Preparing nodes 📦",
                "Starting control-plane 🕹️"
            ]
        );
    }

    #[test]
    fn gc_takes_only_shakedown_clusters_and_only_the_run_asked_for() {
        let listed = "kind\nsd-20261202-1-docker-bridge\nsd-20261202-2-kind-bridge\nmy-sd-x\n";
        assert_eq!(
            clusters_of_run(listed, None),
            ["sd-20261202-1-docker-bridge", "sd-20261202-2-kind-bridge"]
        );
        assert_eq!(
            clusters_of_run(listed, Some("20261202-2")),
            ["sd-20261202-2-kind-bridge"]
        );
    }
}
