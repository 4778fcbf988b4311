//! `kubeadm-init` and `kubeadm-join`, with configs rendered for the release's config API.

use super::cluster::{cluster, diagnose_nodes};
use super::{Action, StepContext, StepError};
use crate::actions::JobStateExt;
use crate::images::set::DnsAddon;
use crate::kubeadm::{self, ClusterParams, NodeParams};
use crate::provider::Cluster;
use std::time::Duration;

pub struct KubeadmInit;
pub struct KubeadmJoin;

const INIT_CONFIG_IN_NODE: &str = "/etc/shakedown/kubeadm-init.yaml";
const JOIN_CONFIG_IN_NODE: &str = "/etc/shakedown/kubeadm-join.yaml";

/// What kubeadm is told about the cluster, without secrets: no bootstrap token, no
/// certificate key ([`params`] adds them). The external etcd's members render from this.
pub(super) fn base_params(cx: &StepContext<'_>, c: &Cluster) -> Result<ClusterParams, StepError> {
    let art = cx.job().artifacts.as_ref().ok_or_else(|| {
        StepError::infra("failed to find the Kubernetes build: the plan needs an image-build step")
    })?;
    let s = &cx.run.scenario;
    let version = art.version;
    let api = s
        .scenario
        .cluster
        .kubeadm_api
        .clone()
        .or_else(|| crate::release::default_kubeadm_api(&version).map(String::from))
        .ok_or_else(|| {
            StepError::new(format!("failed to pick a kubeadm config API for {version}"))
        })?;
    let cp = c.first_control_plane();
    let mut cert_sans = vec![
        cp.ip.clone(),
        cp.name.clone(),
        "localhost".into(),
        "127.0.0.1".into(),
    ];
    if let Some(lb) = &c.load_balancer {
        cert_sans.extend([lb.ip.clone(), lb.name.clone()]);
    }
    let members: Vec<kubeadm::etcd::Member> = c
        .etcd
        .iter()
        .map(|n| kubeadm::etcd::Member {
            name: n.name.clone(),
            ip: n.ip.clone(),
        })
        .collect();
    Ok(ClusterParams {
        version,
        api,
        image_repository: art.image_set.repository.clone(),
        etcd_image_tag: art.image_set.etcd_tag.clone(),
        dns_addon: art.image_set.dns == DnsAddon::Install,
        raw_version: art.raw_version.clone(),
        runtime: art.runtime,
        pod_subnet: s.scenario.cluster.pod_subnet.clone(),
        service_subnet: s.scenario.cluster.service_subnet.clone(),
        rbac: s.scenario.cluster.rbac,
        control_plane_endpoint: c.api_endpoint(),
        cert_sans,
        token: String::new(),
        certificate_key: None,
        external_etcd: kubeadm::etcd::endpoints(&members),
        discovery: s.scenario.cluster.discovery,
    })
}

/// [`base_params`] with a new bootstrap token and, behind a load balancer, a certificate
/// key; both are registered as secrets the moment they exist.
fn params(cx: &StepContext<'_>, c: &Cluster) -> Result<ClusterParams, StepError> {
    let mut p = base_params(cx, c)?;
    let token = kubeadm::new_token()
        .map_err(|e| StepError::infra(format!("failed to make a bootstrap token: {e}")))?;
    // From here on the token is `<redacted>` in every log line, command line and error.
    crate::process::add_secret(&token);
    p.token = token;
    if c.load_balancer.is_some() {
        let key = kubeadm::new_certificate_key()
            .map_err(|e| StepError::infra(format!("failed to make a certificate key: {e}")))?;
        // It decrypts the cluster's CA keys: never in a log or an artifact.
        crate::process::add_secret(&key);
        p.certificate_key = Some(key);
    }
    Ok(p)
}

/// Where the job's admin kubeconfig goes: the run's work folder, not the artifacts.
pub fn admin_kubeconfig(cx: &StepContext<'_>) -> Result<std::path::PathBuf, StepError> {
    let dir = crate::paths::create_work_dir(&cx.run.settings.run_id).map_err(|e| {
        StepError::infra(format!(
            "failed to create the run's work folder {}: {e}",
            crate::paths::work_dir(&cx.run.settings.run_id).display()
        ))
    })?;
    Ok(dir.join(format!("{}-admin.conf", cx.job.context())))
}

/// Writes a file only its owner can read.
fn write_private(path: &std::path::Path, content: &str) -> Result<(), StepError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .and_then(|mut f| f.write_all(content.as_bytes()))
        .map_err(|e| StepError::infra(format!("failed to write {}: {e}", path.display())))
}

/// A rendered config as an artifact, with the bootstrap token (and any other registered
/// secret) redacted: the artifacts are uploaded, often publicly.
fn write_redacted(path: &std::path::Path, config: &str) -> Result<(), StepError> {
    let text = crate::process::redact(config);
    path.parent()
        .map(std::fs::create_dir_all)
        .transpose()
        .and_then(|_| std::fs::write(path, text.as_bytes()))
        .map_err(|e| StepError::infra(format!("failed to write {}: {e}", path.display())))
}

/// A failed command plus the nodes' state: which condition, which kubelet line.
async fn diagnosed(
    cx: &StepContext<'_>,
    c: &Cluster,
    e: crate::process::CommandError,
) -> StepError {
    let last = e
        .stderr()
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string());
    // A node that stopped under kubeadm is not the release's fault: say which and how.
    let mut stopped = super::cluster::stopped_nodes(c, &cx.log).await;
    // `docker exec` returns as soon as its process is killed, while the container can
    // still read "running" for a moment during teardown: look again before blaming kubeadm.
    let settle = std::time::Instant::now();
    while stopped.is_empty() && e.looks_killed() && settle.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        stopped = super::cluster::stopped_nodes(c, &cx.log).await;
    }
    if !stopped.is_empty() {
        let mut err = StepError::from(e).with_diagnosis(stopped.join("\n"));
        err.kind = Some(crate::engine::event::FailureKind::Infrastructure);
        err.message = format!("{}: {}", stopped.join("; "), err.message);
        return err;
    }
    let nodes = diagnose_nodes(c, &cx.log).await;
    let mut d = nodes;
    if let Some(l) = last {
        d = format!("{l}\n{d}");
    }
    StepError::from(e).with_diagnosis(d)
}

#[async_trait::async_trait]
impl Action for KubeadmInit {
    fn describe(&self, cx: &StepContext<'_>) -> Vec<String> {
        let api = cx
            .run
            .scenario
            .kubeadm_api()
            .unwrap_or_else(|| "the newest the release accepts".into());
        if cx.job.provider == crate::scenario::ProviderKind::Kind {
            return vec!["kind ran `kubeadm init` while creating the cluster: report the steps kind printed and its time".into()];
        }
        vec![format!(
            "render a {api} config (pod subnet {}, RBAC {}) and run `kubeadm init` on the first control plane; export its kubeconfig",
            cx.run.scenario.scenario.cluster.pod_subnet, cx.run.scenario.scenario.cluster.rbac
        )]
    }

    async fn run(&self, cx: &mut StepContext<'_>) -> Result<(), StepError> {
        let c = cluster(cx)?;
        if let Some(b) = &c.bootstrap {
            return report_bootstrap(cx, b, "kubeadm init");
        }
        let p = params(cx, c)?;
        let cp = c.first_control_plane().clone();
        let config = kubeadm::init_config(
            &p,
            &NodeParams {
                name: cp.name.clone(),
                ip: cp.ip.clone(),
                control_plane: true,
            },
        )
        .map_err(|e| StepError::new(e.to_string()))?;
        let job_dir = cx.job_dir();
        write_redacted(&job_dir.join("kubeadm-init.yaml"), &config)?;
        let r = cx.runner();
        // 1.6-1.10: kubeadm writes no kubelet config; every node's drop-in carries the flags.
        if let Some(dropin) =
            kubeadm::kubelet_dropin(&p, p.runtime).map_err(|e| StepError::new(e.to_string()))?
        {
            std::fs::write(job_dir.join("10-kubeadm.conf"), &dropin).map_err(|e| {
                StepError::infra(format!("failed to write the kubelet drop-in artifact: {e}"))
            })?;
            for n in &c.nodes {
                r.run(c.write_file(&n.name, kubeadm::KUBELET_DROPIN, &dropin))
                    .await?;
                r.run(c.exec(&n.name, &["systemctl", "daemon-reload"]))
                    .await?;
            }
        }
        r.run(c.write_file(&cp.name, INIT_CONFIG_IN_NODE, &config))
            .await?;
        let mut args = vec!["kubeadm".to_string()];
        args.extend(kubeadm::init_args(&p, INIT_CONFIG_IN_NODE));
        if let Err(e) = r.run(c.exec(&cp.name, &args)).await {
            return Err(diagnosed(cx, c, e).await);
        }
        // No workers: the control plane takes pods, as kind's single-node clusters do.
        if cx.job.topology.workers == 0 {
            let mut untaint: Vec<String> = [
                "kubectl",
                "--kubeconfig=/etc/kubernetes/admin.conf",
                "taint",
                "nodes",
                &cp.name,
            ]
            .map(String::from)
            .to_vec();
            untaint.extend(
                crate::release::control_plane_taints(&p.version)
                    .into_iter()
                    .map(|t| format!("{t}:NoSchedule-")),
            );
            r.run(c.exec(&cp.name, &untaint)).await?;
            cx.note("no workers: the control plane's taint is removed, so it takes pods");
        }
        // The admin kubeconfig already points at the control-plane endpoint (the first
        // control plane, or the load balancer) on the docker network, which the host
        // reaches directly. It holds the cluster-admin key: read without
        // logging, kept in the run's private work folder, never in the artifacts.
        let admin = r
            .output(
                c.exec(&cp.name, &["cat", "/etc/kubernetes/admin.conf"])
                    .secret_stdout(),
            )
            .await?;
        let path = admin_kubeconfig(cx)?;
        write_private(&path, &admin)?;
        cx.note(format!(
            "kubeconfig for the host (outside the artifacts): {}",
            path.display()
        ));
        cx.job_mut().params = Some(p);
        if let Some(c) = cx.job_mut().cluster.as_mut() {
            c.kubeconfig = Some(path);
        }
        Ok(())
    }
}

/// A provider that ran kubeadm itself (kind): the step says so and what the tool reported,
/// instead of pretending shakedown ran it. It passes because the tool's create passed.
fn report_bootstrap(
    cx: &StepContext<'_>,
    b: &crate::provider::Bootstrap,
    what: &str,
) -> Result<(), StepError> {
    cx.note(format!(
        "{what} was run by {} while the cluster was created ({:.1}s in all, measured around `{} create cluster`); shakedown ran no kubeadm",
        b.tool, b.seconds, b.tool
    ));
    if b.phases.is_empty() {
        cx.note(format!("{} reported no steps", b.tool));
    }
    for p in &b.phases {
        cx.note(format!("{} reported: {p}", b.tool));
    }
    cx.property("bootstrap.by", b.tool);
    Ok(())
}

/// One node's join: its name, its config (None: flags only), `kubeadm join`'s arguments.
type JoinPlan = (String, Option<String>, Vec<String>);

/// `file-with-token` discovery: the cluster's CA, read from the first control plane, and a
/// kubeconfig naming it and the API server, written into each joining node (and into the
/// job's artifacts: neither holds a secret).
async fn write_discovery_files(
    cx: &StepContext<'_>,
    c: &Cluster,
    p: &ClusterParams,
    nodes: impl Iterator<Item = &str>,
) -> Result<(), StepError> {
    let r = cx.runner();
    let cp = c.first_control_plane().name.clone();
    let ca = match r
        .output(c.exec(&cp, &["cat", "/etc/kubernetes/pki/ca.crt"]))
        .await
    {
        Ok(pem) => format!("{pem}\n"),
        Err(e) => return Err(diagnosed(cx, c, e).await),
    };
    if !ca.contains("BEGIN CERTIFICATE") {
        return Err(StepError::new(format!(
            "failed to read the cluster's CA from {cp}: /etc/kubernetes/pki/ca.crt holds no certificate"
        )));
    }
    let conf = kubeadm::discovery_kubeconfig(p);
    write_redacted(&cx.job_dir().join("kubeadm-discovery.conf"), &conf)?;
    for n in nodes {
        for (path, text) in [
            (kubeadm::DISCOVERY_CA_IN_NODE, ca.as_str()),
            (kubeadm::DISCOVERY_FILE_IN_NODE, conf.as_str()),
        ] {
            if let Err(e) = r.run(c.write_file(n, path, text)).await {
                return Err(diagnosed(cx, c, e).await);
            }
        }
    }
    cx.note("discovery: file-with-token (a kubeconfig with the cluster's CA; the token only bootstraps the kubelet)");
    Ok(())
}

async fn join_one(
    r: &crate::process::Runner,
    c: &Cluster,
    (name, config, args): &JoinPlan,
) -> Result<(), crate::process::CommandError> {
    if let Some(cfg) = config {
        r.run(c.write_file(name, JOIN_CONFIG_IN_NODE, cfg)).await?;
    }
    r.run(c.exec(name, args)).await.map(drop)
}

#[async_trait::async_trait]
impl Action for KubeadmJoin {
    fn describe(&self, cx: &StepContext<'_>) -> Vec<String> {
        let t = &cx.job.topology;
        if cx.job.provider == crate::scenario::ProviderKind::Kind {
            return vec![
                "kind ran `kubeadm join` on every other node while creating the cluster: report it"
                    .into(),
            ];
        }
        let mut v = vec![format!(
            "render join configs and run `kubeadm join` on {} worker(s) in parallel",
            t.workers
        )];
        if t.control_planes > 1 {
            v.insert(
                0,
                format!(
                    "join {} more control plane(s) one at a time with `--control-plane` and the uploaded certificates",
                    t.control_planes - 1
                ),
            );
            v.push("HA gate: the load balancer sees every API server up, etcd has every member healthy (one per control plane, or each external member)".into());
        }
        v
    }

    async fn run(&self, cx: &mut StepContext<'_>) -> Result<(), StepError> {
        let c = cluster(cx)?;
        if let Some(b) = &c.bootstrap {
            return report_bootstrap(cx, b, "kubeadm join");
        }
        let p = cx.job().params.as_ref().cloned().ok_or_else(|| {
            StepError::infra("failed to find the init parameters: kubeadm-init has not run")
        })?;
        let others: Vec<_> = c.control_planes().skip(1).cloned().collect();
        if !others.is_empty() && c.load_balancer.is_none() {
            return Err(StepError::infra(
                "failed to join control planes: several control planes need a load balancer in front of them, and this provider made none",
            ));
        }
        let workers: Vec<_> = c.workers().cloned().collect();
        if others.is_empty() && workers.is_empty() {
            cx.note("no nodes to join");
            return Ok(());
        }
        let job_dir = cx.job_dir();
        let mut plans: Vec<JoinPlan> = Vec::new();
        for n in others.iter().chain(workers.iter()) {
            let node = NodeParams {
                name: n.name.clone(),
                ip: n.ip.clone(),
                control_plane: n.role == crate::provider::Role::ControlPlane,
            };
            let config =
                kubeadm::join_config(&p, &node).map_err(|e| StepError::new(e.to_string()))?;
            if let Some(cfg) = &config {
                write_redacted(&job_dir.join(format!("kubeadm-join-{}.yaml", n.name)), cfg)?;
            }
            let mut args = vec!["kubeadm".to_string()];
            args.extend(kubeadm::join_args(
                &p,
                config.as_ref().map(|_| JOIN_CONFIG_IN_NODE),
            ));
            plans.push((n.name.clone(), config, args));
        }
        let r = cx.runner();
        if !p.discovery.is_token() {
            write_discovery_files(cx, c, &p, plans.iter().map(|pl| pl.0.as_str())).await?;
        }
        // Control planes one at a time: each adds an etcd member, and etcd takes one
        // member change at a time. Workers then join together.
        let (cp_plans, worker_plans) = plans.split_at(others.len());
        for plan in cp_plans {
            let t = std::time::Instant::now();
            if let Err(e) = join_one(&r, c, plan).await {
                return Err(diagnosed(cx, c, e).await);
            }
            cx.note(format!(
                "control plane {} joined in {:.1}s",
                plan.0,
                t.elapsed().as_secs_f64()
            ));
        }
        if let Err(e) =
            futures::future::try_join_all(worker_plans.iter().map(|p| join_one(&r, c, p))).await
        {
            return Err(diagnosed(cx, c, e).await);
        }
        cx.note(format!("{} worker(s) joined", workers.len()));
        if c.load_balancer.is_some() {
            let (subtests, gated) = super::ha::gate(cx, c).await;
            cx.subtests.extend(subtests);
            gated?;
        }
        Ok(())
    }
}
