//! `etcd-up`: the external etcd of `cluster.etcd: external`, made as kubeadm's guide to an
//! HA etcd makes it. On each etcd node a kubelet that only runs static pods; the etcd CA
//! from `kubeadm init phase certs etcd-ca` on the first member, copied to the others; each
//! member's server, peer and health-check certificates and its static pod from `kubeadm
//! init phase`; the API server's client certificate; then every member must be healthy
//! before the CA certificate and the client certificate go to the first control plane
//! (`kubeadm init --upload-certs` hands them to the others). Keys are read without logging
//! and never leave the nodes for the artifacts.

use super::cluster::cluster;
use super::{Action, StepContext, StepError};
use crate::kubeadm::etcd::{self as ext, Member};
use crate::process::Runner;
use crate::provider::Cluster;
use std::time::Instant;

pub struct EtcdUp;

/// `kubeadm init phase ARGS --config <the member's config>` on `node`.
async fn phase(r: &Runner, c: &Cluster, node: &str, args: &[&str]) -> Result<(), StepError> {
    let mut a = vec!["kubeadm", "init", "phase"];
    a.extend(args);
    let config = format!("--config={}", ext::MEMBER_CONFIG_IN_NODE);
    a.push(&config);
    r.run(c.exec(node, &a)).await.map_err(|e| {
        StepError::new(format!(
            "failed to run `kubeadm init phase {}` on {node}: {}",
            args.join(" "),
            crate::error::chain(&e)
        ))
        .with_source(e)
    })?;
    Ok(())
}

/// Copies files from one node to another through this process's memory, never logged:
/// certificates and keys.
async fn copy_between(
    r: &Runner,
    c: &Cluster,
    from: &str,
    to: &str,
    files: &[&str],
) -> Result<(), StepError> {
    for f in files {
        let content = r
            .output(c.exec(from, &["cat", f]).secret_stdout())
            .await
            .map_err(|e| {
                StepError::infra(format!(
                    "failed to read {f} on {from}: {}",
                    crate::error::chain(&e)
                ))
                .with_source(e)
            })?;
        // `output` trims; PEM files end with a newline.
        r.run(c.write_secret_file(to, f, &format!("{content}\n")))
            .await
            .map_err(|e| {
                StepError::infra(format!(
                    "failed to copy {f} from {from} to {to}: {}",
                    crate::error::chain(&e)
                ))
                .with_source(e)
            })?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl Action for EtcdUp {
    fn describe(&self, _cx: &StepContext<'_>) -> Vec<String> {
        vec![
            format!(
                "on each of {} etcd nodes: a kubelet that runs static pods only, the member's certificates and static pod from `kubeadm init phase` (CA made on the first and copied)",
                crate::scenario::EXTERNAL_ETCD_MEMBERS
            ),
            "wait until every member is started and healthy over TLS, then give the first control plane the etcd CA certificate and the API server's client certificate".into(),
        ]
    }

    async fn run(&self, cx: &mut StepContext<'_>) -> Result<(), StepError> {
        let c = cluster(cx)?;
        if c.etcd.is_empty() {
            return Err(StepError::new(format!(
                "failed to bring up an external etcd: provider {} made no etcd nodes (cluster.etcd is {:?})",
                c.provider.name(),
                cx.run.scenario.scenario.cluster.etcd
            )));
        }
        let p = super::kubeadm::base_params(cx, c)?;
        if let Some(why) = ext::unsupported(&p) {
            return Err(StepError::new(format!(
                "failed to bring up an external etcd: {why}"
            )));
        }
        if p.runtime == crate::release::era::Runtime::Docker {
            return Err(StepError::new(
                "failed to bring up an external etcd: its members' kubelet runs etcd through containerd, and this cluster's runtime is docker (dockershim)",
            ));
        }
        let members: Vec<Member> = c
            .etcd
            .iter()
            .map(|n| Member {
                name: n.name.clone(),
                ip: n.ip.clone(),
            })
            .collect();
        let r = cx.runner();
        let job_dir = cx.job_dir();
        let t = Instant::now();
        let kubelet_config = ext::kubelet_config();
        let dropin = ext::kubelet_dropin(&p);
        for m in &members {
            let config = ext::member_config(&p, m, &members)
                .map_err(|e| StepError::new(e.to_string()).with_source(e))?;
            // No secret in it: the artifact is the config as given.
            let artifact = job_dir.join(format!("kubeadm-etcd-{}.yaml", m.name));
            std::fs::create_dir_all(&job_dir)
                .and_then(|_| std::fs::write(&artifact, &config))
                .map_err(|e| {
                    StepError::infra(format!("failed to write {}: {e}", artifact.display()))
                })?;
            r.run(c.write_file(&m.name, ext::MEMBER_CONFIG_IN_NODE, &config))
                .await?;
            r.run(c.write_file(&m.name, ext::KUBELET_CONFIG_IN_NODE, &kubelet_config))
                .await?;
            r.run(c.write_file(&m.name, ext::KUBELET_DROPIN, &dropin))
                .await?;
        }
        let first = members[0].name.clone();
        phase(&r, c, &first, &["certs", "etcd-ca"]).await?;
        for m in &members[1..] {
            copy_between(&r, c, &first, &m.name, &[ext::CA_CERT, ext::CA_KEY]).await?;
        }
        // Every member at once: each waits for its peers to form the first quorum.
        futures::future::try_join_all(members.iter().map(|m| {
            let r = &r;
            async move {
                for certs in ["etcd-server", "etcd-peer", "etcd-healthcheck-client"] {
                    phase(r, c, &m.name, &["certs", certs]).await?;
                }
                phase(r, c, &m.name, &["etcd", "local"]).await?;
                r.run(c.exec(&m.name, &["systemctl", "daemon-reload"]))
                    .await?;
                r.run(c.exec(&m.name, &["systemctl", "restart", "kubelet"]))
                    .await?;
                Ok::<(), StepError>(())
            }
        }))
        .await?;
        phase(&r, c, &first, &["certs", "apiserver-etcd-client"]).await?;
        cx.note(format!(
            "{} members configured in {:.1}s: {}",
            members.len(),
            t.elapsed().as_secs_f64(),
            ext::initial_cluster(&members)
        ));
        let t = Instant::now();
        let healthy = super::ha::wait_etcd_healthy(cx, c)
            .await
            .map_err(|e| StepError::new(format!("failed to bring up an external etcd: {e}")))?;
        cx.note(format!(
            "every member started and healthy over TLS in {:.1}s: {}",
            t.elapsed().as_secs_f64(),
            healthy.join(", ")
        ));
        let cp = c.first_control_plane().name.clone();
        copy_between(&r, c, &first, &cp, &ext::FOR_CONTROL_PLANE).await?;
        cx.note(format!(
            "{cp} holds the etcd CA certificate and the API server's etcd client certificate; `kubeadm init --upload-certs` carries them to the other control planes"
        ));
        Ok(())
    }
}
