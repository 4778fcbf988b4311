//! `cni`: apply the job's CNI variant, then wait, in order, for three conditions, each named
//! in the failure when it does not hold:
//!   1. every node registered;
//!   2. the CNI applied;
//!   3. every node Ready and every kube-system pod Ready.

use super::cluster::{client, cluster, diagnose_nodes, in_node, write_cmd};
use super::{Action, StepContext, StepError};
use crate::cni::{bridge, ApplyMethod, Variant};
use crate::provider::docker::{self, Cluster};
use crate::readiness::{self, canonical_image, poll};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use std::time::Duration;

pub struct Cni;

const POLL: Duration = Duration::from_secs(1);

fn variant<'a>(cx: &'a StepContext<'_>) -> Result<&'a Variant, StepError> {
    cx.run
        .catalog
        .get(&cx.job.cni)
        .ok_or_else(|| StepError::new(format!("failed to find CNI variant {}", cx.job.cni)))
}

async fn list_nodes(api: &Api<Node>) -> Result<Vec<Node>, String> {
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| format!("failed to list nodes: {e}"))
}

/// Nodes and kube-system pods all Ready; otherwise every reason, one per line.
async fn all_ready(nodes: &Api<Node>, pods: &Api<Pod>) -> Result<(), String> {
    let mut why: Vec<String> = list_nodes(nodes)
        .await?
        .iter()
        .filter_map(|n| readiness::node_ready(n).err())
        .collect();
    let pods = pods
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("failed to list kube-system pods: {e}"))?;
    why.extend(
        pods.items
            .iter()
            .filter_map(|p| readiness::pod_ready(p).err()),
    );
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join("\n"))
    }
}

async fn apply_bridge(cx: &StepContext<'_>, c: &Cluster, api: &Api<Node>) -> Result<(), StepError> {
    let mut routes = Vec::new();
    for n in list_nodes(api).await.map_err(StepError::new)? {
        let name = n.metadata.name.clone().unwrap_or_default();
        let cidr = n.spec.as_ref().and_then(|s| s.pod_cidr.clone()).ok_or_else(|| {
            StepError::new(format!(
                "node {name} has no spec.podCIDR: the controller manager allocates none unless kubeadm sets networking.podSubnet"
            ))
        })?;
        let ip = c
            .nodes
            .iter()
            .find(|x| x.name == name)
            .map(|x| x.ip.clone())
            .unwrap_or_default();
        routes.push(bridge::NodeRoute {
            name,
            ip,
            pod_cidr: cidr,
        });
    }
    let r = cx.runner();
    let pod_subnet = &cx.run.scenario.scenario.cluster.pod_subnet;
    for n in &routes {
        r.run(write_cmd(
            &n.name,
            bridge::CONFLIST_PATH,
            &bridge::conflist(&n.pod_cidr),
        ))
        .await?;
        if r.run(docker::exec(&n.name, &bridge::masquerade("-C", pod_subnet)))
            .await
            .is_err()
        {
            r.run(docker::exec(&n.name, &bridge::masquerade("-A", pod_subnet)))
                .await?;
        }
        for route in bridge::routes_for(&n.name, &routes) {
            r.run(docker::exec(&n.name, &route)).await?;
        }
        cx.note(format!("bridge CNI on {}: pod CIDR {}", n.name, n.pod_cidr));
    }
    Ok(())
}

/// Third-party variants: their images must already be on every node, since no registry is
/// reachable. Fails in seconds, naming the image and how to preload it.
async fn check_images(cx: &StepContext<'_>, c: &Cluster, v: &Variant) -> Result<(), StepError> {
    let version = cx.run.scenario.version;
    let release = v.release_for(version.as_ref()).ok_or_else(|| {
        StepError::new(format!(
            "CNI variant {} has no release for Kubernetes {}",
            v.name,
            cx.run.scenario.version_label()
        ))
    })?;
    for n in &c.nodes {
        let listed = in_node(cx, &n.name, &["ctr", "-n", "k8s.io", "images", "ls", "-q"]).await?;
        let have: Vec<&str> = listed.lines().collect();
        for img in &release.images {
            if !have.contains(&canonical_image(img).as_str()) {
                let mut msg = format!(
                    "failed to apply {} {}: image {img} is not on node {} and cannot be pulled (no registry is reachable); preload it with: docker save {img} | docker exec -i {} ctr -n k8s.io images import -",
                    v.name, release.version, n.name, n.name
                );
                if let Some(l) = &v.offline_limitation {
                    msg.push_str(&format!("\n({l})"));
                }
                return Err(StepError::infra(msg)
                    .with_diagnosis(format!("missing image {img} on node {}", n.name)));
            }
        }
    }
    if release.manifests.is_empty() {
        return Err(StepError::infra(format!(
            "failed to apply {} {}: no manifests are shipped for this release",
            v.name, release.version
        )));
    }
    Err(StepError::infra(format!(
        "failed to apply {} {}: applying manifests through the API server is not available yet",
        v.name, release.version
    )))
}

#[async_trait::async_trait]
impl Action for Cni {
    fn describe(&self, cx: &StepContext<'_>) -> Vec<String> {
        let how = match variant(cx).map(|v| v.apply) {
            Ok(ApplyMethod::RenderedBridge) => {
                "write a bridge conflist from each node's spec.podCIDR and route between nodes"
                    .to_string()
            }
            Ok(ApplyMethod::Nothing) => "apply nothing (nodes must stay NotReady)".to_string(),
            Ok(ApplyMethod::Manifests) => format!(
                "check {}'s images are on the nodes, then apply its manifests",
                cx.job.cni
            ),
            Err(e) => e.message,
        };
        vec![
            "wait for condition 1/3: every node registered".into(),
            format!("condition 2/3: {how}"),
            "wait for condition 3/3: every node and kube-system pod Ready".into(),
        ]
    }

    async fn run(&self, cx: &mut StepContext<'_>) -> Result<(), StepError> {
        let c = cluster(cx)?;
        let v = variant(cx)?;
        let kube = client(c).await?;
        let nodes: Api<Node> = Api::all(kube.clone());
        let pods: Api<Pod> = Api::namespaced(kube, "kube-system");
        let expected = c.node_names();

        cx.note("condition 1/3: every node registered");
        if let Err(last) = poll(&cx.cancel, POLL, || async {
            let items = list_nodes(&nodes).await?;
            readiness::nodes_registered(&expected, &items)
        })
        .await
        {
            let d = diagnose_nodes(c, &cx.log).await;
            return Err(StepError::new(format!(
                "condition 1/3 (every node registered) not met: {last}"
            ))
            .with_diagnosis(d));
        }

        cx.note(format!("condition 2/3: apply {}", v.name));
        match v.apply {
            ApplyMethod::RenderedBridge => apply_bridge(cx, c, &nodes).await?,
            ApplyMethod::Nothing => cx.note("variant none: nothing applied"),
            ApplyMethod::Manifests => check_images(cx, c, v).await?,
        }

        cx.note("condition 3/3: every node and kube-system pod Ready");
        // When the nodes alone turned Ready is worth knowing: control-plane pods can take
        // much longer (their startup probes), and benchmarks report both.
        let started = std::time::Instant::now();
        let nodes_ready_after = std::sync::Mutex::new(None::<Duration>);
        let check = || async {
            let items = list_nodes(&nodes).await?;
            if items.iter().all(|n| readiness::node_ready(n).is_ok()) {
                let mut t = nodes_ready_after.lock().unwrap_or_else(|e| e.into_inner());
                t.get_or_insert_with(|| started.elapsed());
            }
            all_ready(&nodes, &pods).await
        };
        let result = poll(&cx.cancel, POLL, check).await;
        let after = *nodes_ready_after.lock().unwrap_or_else(|e| e.into_inner());
        let failure = match result {
            Ok(()) => None,
            Err(last) => Some((last, diagnose_nodes(c, &cx.log).await)),
        };
        if let Some(t) = after {
            cx.properties.push((
                "cni.nodes-ready-seconds".into(),
                format!("{:.1}", t.as_secs_f64()),
            ));
        }
        cx.properties.push((
            "cni.all-ready-seconds".into(),
            format!("{:.1}", started.elapsed().as_secs_f64()),
        ));
        if let Some((last, d)) = failure {
            let first = last.lines().next().unwrap_or_default().to_string();
            cx.log.line(&format!("# not Ready:\n{last}"));
            return Err(StepError::new(format!(
                "condition 3/3 (every node and kube-system pod Ready) not met: {first}"
            ))
            .with_diagnosis(d));
        }
        cx.note("all nodes and kube-system pods Ready");
        Ok(())
    }
}
