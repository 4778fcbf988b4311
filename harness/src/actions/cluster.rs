//! `cluster-up` and `cluster-down`, plus what other cluster actions share: the cluster from
//! the job state, a kube client, and the node diagnosis attached to readiness failures.

use super::{Action, StepContext, StepError};
use crate::actions::JobStateExt;
use crate::process::{Runner, StepLog};
use crate::provider::{self, Cluster, ClusterSpec};
use crate::readiness;
use crate::scenario::ProviderKind;
use k8s_openapi::api::core::v1::Node;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(serde::Deserialize)]
struct NodeItems {
    items: Vec<Node>,
}

pub struct ClusterUp;
pub struct ClusterDown;

pub fn cluster<'a>(cx: &'a StepContext<'_>) -> Result<&'a Cluster, StepError> {
    cx.job().cluster.as_ref().ok_or_else(|| {
        StepError::infra("failed to find the job's cluster: no cluster-up step ran before this one")
    })
}

/// A kube client from the kubeconfig exported after `kubeadm init`.
pub async fn client(c: &Cluster) -> Result<kube::Client, StepError> {
    client_of(client_config(c).await?)
}

/// A kube client from a configuration [`client_config`] read.
pub fn client_of(cfg: kube::Config) -> Result<kube::Client, StepError> {
    kube::Client::try_from(cfg)
        .map_err(|e| StepError::infra(format!("failed to build a client for the cluster: {e}")))
}

/// The client configuration of the cluster's admin kubeconfig: for callers that need
/// several clients (one connection each).
pub async fn client_config(c: &Cluster) -> Result<kube::Config, StepError> {
    let path = c
        .kubeconfig
        .as_ref()
        .ok_or_else(|| StepError::infra("failed to find a kubeconfig: kubeadm init has not run"))?;
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| {
        StepError::infra(format!("failed to read kubeconfig {}: {e}", path.display()))
    })?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| {
            StepError::infra(format!("failed to load kubeconfig {}: {e}", path.display()))
        })?;
    Ok(cfg)
}

/// The nodes that are no longer running, each with its state (bounded: 10 s). Empty when
/// all run, or when docker itself does not answer (that is reported elsewhere).
pub async fn stopped_nodes(c: &Cluster, log: &StepLog) -> Vec<String> {
    let r = Runner {
        log: log.clone(),
        cancel: CancellationToken::new(),
        grace: Duration::from_secs(1),
    };
    tokio::time::timeout(Duration::from_secs(10), c.provider.stopped_nodes(&r, c))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
}

/// What a person needs when nodes are not Ready: each node's Ready condition, and the
/// kubelet journal lines about the network. Runs with its own short budget, since it is
/// usually called after the step's deadline has cancelled everything else.
pub async fn diagnose_nodes(c: &Cluster, log: &StepLog) -> String {
    let r = Runner {
        log: log.clone(),
        cancel: CancellationToken::new(),
        grace: Duration::from_secs(1),
    };
    let budget = Duration::from_secs(15);
    let work = async {
        let mut parts = Vec::new();
        let cp = c.first_control_plane().name.clone();
        let kubectl = c.exec(
            &cp,
            &[
                "kubectl",
                "--kubeconfig=/etc/kubernetes/admin.conf",
                "get",
                "nodes",
                "-o",
                "json",
            ],
        );
        match r.output(kubectl).await {
            // kubectl answers with `kind: List`, not `NodeList`: read the items alone.
            Ok(json) => match serde_json::from_str::<NodeItems>(&json) {
                Ok(list) => {
                    for n in &list.items {
                        if let Err(e) = readiness::node_ready(n) {
                            parts.push(e);
                        }
                    }
                    let registered: Vec<String> = list
                        .items
                        .iter()
                        .filter_map(|n| n.metadata.name.clone())
                        .collect();
                    if let Err(e) = readiness::nodes_registered(&c.node_names(), &list.items) {
                        parts.push(e);
                    }
                    if parts.is_empty() {
                        parts.push(format!(
                            "all registered nodes report Ready: {}",
                            registered.join(", ")
                        ));
                    }
                }
                Err(e) => parts.push(format!("failed to parse the node list: {e}")),
            },
            Err(e) => parts.push(format!(
                "failed to list nodes from {cp}: {}",
                e.to_string().lines().next().unwrap_or_default()
            )),
        }
        for n in &c.nodes {
            let journal = r
                .output(c.exec(
                    &n.name,
                    &[
                        "journalctl",
                        "-u",
                        "kubelet",
                        "--no-pager",
                        "-n",
                        "400",
                        "-o",
                        "cat",
                    ],
                ))
                .await
                .unwrap_or_default();
            let hits: Vec<&str> = journal
                .lines()
                .filter(|l| {
                    let l = l.to_ascii_lowercase();
                    l.contains("networkpluginnotready")
                        || l.contains("cni")
                        || l.contains("network plugin")
                })
                .collect();
            if let Some(last) = hits.last() {
                parts.push(format!("kubelet journal on {}: {}", n.name, last.trim()));
            }
        }
        parts.join("\n")
    };
    match tokio::time::timeout(budget, work).await {
        Ok(s) => s,
        Err(_) => format!("diagnosis incomplete: nodes did not answer within {budget:?}"),
    }
}

#[async_trait::async_trait]
impl Action for ClusterUp {
    fn describe(&self, cx: &StepContext<'_>) -> Vec<String> {
        let t = &cx.job.topology;
        if cx.job.provider == ProviderKind::Existing {
            return vec![format!(
                "attach to the cluster of {} (nothing is created or deleted, no command runs on its nodes)",
                cx.run
                    .settings
                    .kubeconfig
                    .as_ref()
                    .map(|k| k.display().to_string())
                    .unwrap_or_else(|| "--kubeconfig".into())
            )];
        }
        if cx.job.provider == ProviderKind::Kind {
            return vec![format!(
                "`kind create cluster` with a v1alpha4 config of {} control plane(s) and {} worker(s), no default CNI, the scenario's subnets; kind runs kubeadm init and join itself",
                t.control_planes, t.workers
            )];
        }
        vec![format!(
            "create a {} network and {} control-plane + {} worker node container(s), labelled io.shakedown.run={}; import images into each",
            cx.job.provider, t.control_planes, t.workers, cx.run.settings.run_id
        )]
    }

    async fn run(&self, cx: &mut StepContext<'_>) -> Result<(), StepError> {
        let provider = provider::for_kind(cx.job.provider, cx.run.settings.kubeconfig.as_deref())
            .map_err(|e| {
            StepError::infra(format!(
                "failed to create nodes: {}",
                crate::error::chain(&e)
            ))
        })?;
        let art = cx.job().artifacts.as_ref().cloned();
        if art.is_none() && provider.runs_commands() && provider.needs_node_image() {
            return Err(StepError::infra(
                "failed to find images: the plan needs an image-build step before cluster-up",
            ));
        }
        if provider.bootstraps() && cx.job.topology.worker_version.is_some() {
            return Err(StepError::new(format!(
                "failed to create nodes: provider {} gives every node one node image, so workers cannot run another version",
                provider.name()
            )));
        }
        if let Some(a) = &art {
            if a.runtime == crate::release::era::Runtime::Docker && !a.image_set.mirrors.is_empty()
            {
                return Err(StepError::new(
                    "failed to configure registry mirrors: with the docker runtime (dockershim) nodes pull through dockerd, whose mirror settings are not written yet; preload images instead",
                ));
            }
        }
        let r = cx.runner();
        // Several control planes stand behind a load balancer; its image is built here.
        let load_balancer_image = if cx.job.topology.control_planes > 1
            && provider.runs_commands()
            && provider.needs_node_image()
        {
            Some(
                crate::images::load_balancer::ensure(
                    &cx.run.settings.root,
                    &cx.run.settings.cache_dir,
                    &r,
                )
                .await
                .map_err(|e| {
                    StepError::infra(format!(
                        "failed to build the load-balancer image: {}",
                        crate::error::chain(&e)
                    ))
                })?,
            )
        } else {
            None
        };
        let spec = ClusterSpec {
            name: provider::container::cluster_name(&cx.run.settings.run_id, &cx.job.context()),
            run_id: cx.run.settings.run_id.clone(),
            control_planes: cx.job.topology.control_planes,
            workers: cx.job.topology.workers,
            node_image: if provider.needs_node_image() {
                art.as_ref()
                    .map(|a| a.node_image.clone())
                    .unwrap_or_default()
            } else {
                provider_node_image(cx)?
            },
            images_tar: art.as_ref().and_then(|a| a.image_set.preload.clone()),
            runtime: art
                .as_ref()
                .map_or(crate::release::era::Runtime::Containerd, |a| a.runtime),
            load_balancer_image,
            loopback_hosts: vec![crate::images::IMAGE_REPO.to_string()],
            pod_subnet: cx.run.scenario.scenario.cluster.pod_subnet.clone(),
            service_subnet: cx.run.scenario.scenario.cluster.service_subnet.clone(),
            vm: vm_cluster(cx)?,
            etcd_nodes: if provider.runs_commands() && !provider.bootstraps() {
                cx.run.scenario.scenario.cluster.etcd.nodes()
            } else {
                0
            },
        };
        let note = |s: String| cx.note(s);
        let mut made = provider.create(&r, &spec, &note).await?;
        made.keep |= cx.run.settings.keep_cluster;
        let summary: Vec<String> = made
            .nodes
            .iter()
            .chain(made.etcd.iter())
            .chain(made.load_balancer.iter())
            .map(|n| format!("{} ({}, {})", n.name, n.role.as_str(), n.ip))
            .collect();
        cx.note(format!(
            "nodes up ({}): {}",
            provider.name(),
            summary.join(", ")
        ));
        // Recorded before anything else can fail: cluster-down removes (or keeps and shows)
        // exactly this cluster.
        cx.job_mut().cluster = Some(made);
        if let Some(a) = art.as_ref() {
            let dockershim = a.runtime == crate::release::era::Runtime::Docker;
            // A provider with its own node image (kind) keeps its own containerd config.
            if a.image_set.needs_node_config()
                && provider.runs_commands()
                && provider.needs_node_image()
                && !dockershim
            {
                let c = cluster(cx)?;
                configure_containerd(cx, c, &a.image_set).await?;
            }
        }
        if let Some(v) = cx.job.topology.worker_version.clone() {
            let c = cluster(cx)?;
            skew_workers(cx, c, &v).await?;
        }
        Ok(())
    }
}

/// The node image of a provider that brings its own (kind): `--node-image`, else kind's
/// published image of the scenario's version.
/// The VM part of a job's cluster (provider vm): the disk image-build made, the machine the
/// scenario sizes, the accelerator the plan probed.
fn vm_cluster(cx: &StepContext<'_>) -> Result<Option<provider::vm::VmCluster>, StepError> {
    if cx.job.provider != crate::scenario::ProviderKind::Vm {
        return Ok(None);
    }
    let disk = cx.job().vm_disk.clone().ok_or_else(|| {
        StepError::new(
            "failed to find the VM disk: the job has no image-build step before cluster-up",
        )
    })?;
    let vm = &cx.run.scenario.scenario.vm;
    let accelerator = cx
        .job
        .accelerator
        .unwrap_or(crate::scenario::Accelerator::Tcg);
    cx.property("vm.accelerator", accelerator.as_str());
    Ok(Some(provider::vm::VmCluster {
        disk,
        machine: provider::vm::qemu::Machine {
            accelerator,
            cpus: vm.cpus,
            memory_mb: vm.memory_mb,
        },
        control_planes: cx.job.topology.vm_control_planes,
        workers: cx.job.topology.vm_workers,
    }))
}

fn provider_node_image(cx: &StepContext<'_>) -> Result<String, StepError> {
    if let Some(i) = &cx.run.settings.node_image {
        return Ok(i.clone());
    }
    let k = &cx.run.scenario.scenario.kubernetes;
    match &k.version {
        Some(v) => Ok(format!("kindest/node:{}", crate::actions::build::with_v(v))),
        None => Err(StepError::new(format!(
            "failed to pick a kind node image: the scenario follows {} rather than a version; pass --node-image",
            k.marker.as_deref().unwrap_or("a marker")
        ))),
    }
}

/// Version skew: the workers get kubeadm, kubelet and kubectl of `version` (the skew
/// policy was checked when the scenario loaded), before anything joins.
async fn skew_workers(cx: &StepContext<'_>, c: &Cluster, version: &str) -> Result<(), StepError> {
    let art = cx.job().other_builds.get(version).cloned().ok_or_else(|| {
        StepError::infra(format!(
            "failed to find the build of {version} for the workers: the image-build step builds it"
        ))
    })?;
    let r = cx.runner();
    for n in c.workers() {
        super::upgrade::stage_binaries(&r, c, &n.name, &art.bin_dir, version)
            .await
            .map_err(|e| {
                StepError::infra(format!(
                    "failed to give {} Kubernetes {version}: {e}",
                    n.name
                ))
            })?;
        r.run(super::upgrade::install_cmd(
            c,
            &n.name,
            version,
            crate::images::NODE_BINARIES,
        ))
        .await
        .map_err(|e| {
            StepError::infra(format!(
                "failed to install Kubernetes {version} on {}: {}",
                n.name,
                crate::error::chain(&e)
            ))
            .with_source(e)
        })?;
        // kubelet has no config before the join, which (re)starts it: the old one never runs.
        let got = r
            .output(c.exec(&n.name, &["kubelet", "--version"]))
            .await
            .map_err(|e| {
                StepError::infra(format!(
                    "failed to run the kubelet installed on {}: {}",
                    n.name,
                    crate::error::chain(&e)
                ))
                .with_source(e)
            })?;
        cx.note(format!(
            "{}: kubeadm, kubelet and kubectl of {} installed (kubelet says {:?})",
            n.name,
            art.raw_version,
            got.trim()
        ));
    }
    Ok(())
}

#[async_trait::async_trait]
impl Action for ClusterDown {
    fn describe(&self, cx: &StepContext<'_>) -> Vec<String> {
        if cx.job.provider == ProviderKind::Existing {
            vec!["detach from the existing cluster; it is not ours to delete".into()]
        } else if cx.run.settings.keep_cluster {
            vec!["keep the cluster (--keep-cluster) and print how to reach it".into()]
        } else {
            vec![format!(
                "remove every container, volume and network labelled io.shakedown.run={}",
                cx.run.settings.run_id
            )]
        }
    }

    async fn run(&self, cx: &mut StepContext<'_>) -> Result<(), StepError> {
        let r = cx.runner();
        let keep = cx.run.settings.keep_cluster;
        let Some(cluster) = cx.job_mut().cluster.as_mut() else {
            cx.note("no cluster was created; nothing to remove");
            return Ok(());
        };
        if keep {
            cluster.keep = true;
            let how = cluster.how_to_reach();
            eprintln!("{how}");
            cx.note(how);
            return Ok(());
        }
        let provider = cluster.provider.clone();
        provider.remove(&r, cluster).await?;
        cluster.mark_removed();
        cluster.forget_kubeconfig();
        let what = if provider.runs_commands() {
            "cluster removed"
        } else {
            "detached; the cluster is left as it was"
        };
        cx.note(what);
        Ok(())
    }
}

/// Writes the image set's containerd config (sandbox image, registry mirrors) into every
/// node and restarts containerd, before kubeadm pulls anything.
async fn configure_containerd(
    cx: &StepContext<'_>,
    c: &Cluster,
    set: &crate::images::set::ImageSet,
) -> Result<(), StepError> {
    let r = cx.runner();
    let files = set.node_files();
    cx.note(format!(
        "containerd: sandbox {}{}",
        set.pause,
        if set.mirrors.is_empty() {
            String::new()
        } else {
            format!(", mirrors {}", crate::release::mirror::list(&set.mirrors))
        }
    ));
    // The external etcd's nodes too: their kubelet pulls etcd and pause the same way.
    futures::future::try_join_all(c.nodes.iter().chain(c.etcd.iter()).map(|n| {
        let (r, files) = (&r, &files);
        async move {
            for (path, content) in files {
                r.run(c.write_file(&n.name, path, content)).await?;
            }
            r.run(c.exec(&n.name, &["systemctl", "restart", "containerd"]))
                .await?;
            // containerd answers on its socket once the restart is through.
            r.run(c.exec(
                &n.name,
                &["sh", "-c", "for i in $(seq 50); do ctr version >/dev/null 2>&1 && exit 0; sleep 0.2; done; ctr version"],
            ))
            .await
        }
    }))
    .await
    .map_err(|e| {
        StepError::infra(format!(
            "failed to configure containerd in the nodes: {}",
            crate::error::chain(&e)
        ))
    })?;
    Ok(())
}

/// Runs `args` in `node`, returning stdout.
pub async fn in_node(
    cx: &StepContext<'_>,
    c: &Cluster,
    node: &str,
    args: &[&str],
) -> Result<String, StepError> {
    Ok(cx.runner().output(c.exec(node, args)).await?)
}
