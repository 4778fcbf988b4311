//! A cluster someone else made, as hydrophone and sonobuoy test one: reached through its
//! kubeconfig, never created, never deleted, no commands on its nodes. `cluster-up`
//! attaches (lists the nodes through the API), `cluster-down` detaches.

use super::{Cluster, ClusterSpec, Collected, NodeInfo, Provider, ProviderError, Role};
use crate::process::{Cmd, CommandError, Runner, StepLog};
use k8s_openapi::api::core::v1::Node;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Existing {
    kubeconfig: PathBuf,
}

impl Existing {
    pub fn new(kubeconfig: &Path) -> Existing {
        Existing {
            kubeconfig: kubeconfig.to_path_buf(),
        }
    }
}

/// A command that fails saying why: nothing on an existing cluster's nodes is run.
fn refused(what: &str) -> Cmd {
    Cmd::new("sh").arg("-c").arg(format!(
        "echo {} >&2; exit 1",
        shell_words::quote(&format!(
            "provider existing runs no commands on nodes ({what})"
        ))
    ))
}

/// Control-plane nodes carry the `control-plane` label (1.20+) or the `master` one.
fn role_of(n: &Node) -> Role {
    let labels = n.metadata.labels.clone().unwrap_or_default();
    if labels.contains_key("node-role.kubernetes.io/control-plane")
        || labels.contains_key("node-role.kubernetes.io/master")
    {
        Role::ControlPlane
    } else {
        Role::Worker
    }
}

fn internal_ip(n: &Node) -> String {
    n.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .map(|a| a.address.clone())
        .unwrap_or_default()
}

#[async_trait::async_trait]
impl Provider for Existing {
    fn name(&self) -> &'static str {
        "existing"
    }

    fn runs_commands(&self) -> bool {
        false
    }

    async fn create(
        &self,
        r: &Runner,
        spec: &ClusterSpec,
        note: &(dyn Fn(String) + Sync),
    ) -> Result<Cluster, ProviderError> {
        let path = self.kubeconfig.clone();
        r.log.line(&format!(
            "attaching to the cluster of {} (nothing is created)",
            path.display()
        ));
        let kc =
            kube::config::Kubeconfig::read_from(&path).map_err(|e| ProviderError::Kubeconfig {
                path: path.clone(),
                source: Box::new(e),
            })?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .map_err(|e| ProviderError::Kubeconfig {
                path: path.clone(),
                source: Box::new(e),
            })?;
        let client = kube::Client::try_from(cfg).map_err(|e| ProviderError::Nodes {
            path: path.clone(),
            source: Box::new(e),
        })?;
        let api = kube::Api::<Node>::all(client);
        let lp = kube::api::ListParams::default();
        let list = tokio::select! {
            l = api.list(&lp) => l,
            _ = r.cancel.cancelled() => return Err(ProviderError::Command(CommandError::Stopped {
                cmd: format!("list the nodes of {}", path.display()),
                how: "cancelled",
                elapsed: Duration::ZERO,
            })),
        }
        .map_err(|e| ProviderError::Nodes {
            path: path.clone(),
            source: Box::new(e),
        })?;
        let mut cluster = Cluster::new(
            Arc::new(self.clone()),
            &spec.name,
            "",
            &spec.run_id,
            Some(r.log.clone()),
        );
        for n in &list.items {
            cluster.nodes.push(NodeInfo {
                name: n.metadata.name.clone().unwrap_or_default(),
                role: role_of(n),
                ip: internal_ip(n),
                vm: false,
            });
        }
        if cluster.control_planes().next().is_none() {
            return Err(ProviderError::Unsupported {
                provider: "existing",
                message: format!(
                    "no node of the cluster in {} carries a control-plane or master role label",
                    path.display()
                ),
            });
        }
        cluster.kubeconfig = Some(path);
        cluster.kubeconfig_borrowed = true;
        // Someone else's cluster: nothing to remove on drop.
        cluster.keep = true;
        note(format!("attached to {} node(s)", cluster.nodes.len()));
        Ok(cluster)
    }

    fn exec(&self, node: &str, args: &[String], _stdin: bool) -> Cmd {
        refused(&format!("{node}: {}", args.join(" ")))
    }

    fn load_image(&self, node: &str, tar: &Path, _: crate::release::era::Runtime) -> Cmd {
        refused(&format!("{node}: load {}", tar.display()))
    }

    fn copy_from(&self, node: &str, from: &str, _to: &Path) -> Cmd {
        refused(&format!("{node}: copy {from}"))
    }

    fn copy_to(&self, node: &str, _from: &Path, to: &str) -> Cmd {
        refused(&format!("{node}: write {to}"))
    }

    async fn stopped_nodes(&self, _: &Runner, _: &Cluster) -> Result<Vec<String>, CommandError> {
        Ok(Vec::new())
    }

    /// Detaches: the cluster is someone else's.
    async fn remove(&self, r: &Runner, cluster: &Cluster) -> Result<(), CommandError> {
        r.log.line(&format!(
            "detaching from {} (the cluster is not ours to delete)",
            cluster.name
        ));
        Ok(())
    }

    fn remove_on_drop(&self, _: &Cluster, _: Option<&StepLog>, _: Duration) {}

    async fn gc(&self, _: &Runner, _: Option<&str>) -> Result<Collected, CommandError> {
        Ok(Collected::default())
    }

    fn shell_hint(&self, _: &str) -> String {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_come_from_the_node_labels_of_any_era() {
        let node = |labels: &str| -> Node {
            serde_yaml::from_str(&format!(
                "metadata:\n  name: n\n  labels: {labels}\nstatus:\n  addresses:\n  - {{type: Hostname, address: n}}\n  - {{type: InternalIP, address: 172.18.0.2}}\n"
            ))
            .unwrap()
        };
        let cp = node("{node-role.kubernetes.io/control-plane: ''}");
        assert_eq!(role_of(&cp), Role::ControlPlane);
        assert_eq!(
            role_of(&node("{node-role.kubernetes.io/master: ''}")),
            Role::ControlPlane
        );
        assert_eq!(role_of(&node("{kubernetes.io/os: linux}")), Role::Worker);
        assert_eq!(internal_ip(&cp), "172.18.0.2");
    }

    #[test]
    fn nothing_runs_on_the_nodes() {
        let e = Existing::new(Path::new("/k"));
        assert!(!e.runs_commands());
        let c = e.exec("n1", &["rm".into(), "-rf".into(), "/".into()], false);
        assert_eq!(c.program, "sh");
        assert!(c.to_string().contains("runs no commands on nodes"), "{c}");
    }
}
