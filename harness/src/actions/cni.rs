//! `cni`: apply the job's CNI variant, then wait, in order, for three conditions, each named
//! in the failure when it does not hold:
//!   1. every node registered;
//!   2. the CNI applied: for a variant applied from manifests, first the lint for the
//!      cluster's Kubernetes version and the images check (both fail in seconds), then a
//!      server-side apply and the variant's DaemonSet rolled out;
//!   3. every node Ready and every kube-system pod Ready.

use super::cluster::{client, cluster, diagnose_nodes, in_node};
use super::{Action, StepContext, StepError};
use crate::actions::JobStateExt;
use crate::cni::{apply, bridge, lint, manifest::ManifestObject, ApplyMethod, Release, Variant};
use crate::provider::Cluster;
use crate::readiness::{self, canonical_image};
use crate::release::KubeVersion;
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

/// How long the controller manager may take to give a new node its pod CIDR (right after
/// `kubeadm init` with no joins it may not have yet).
const POD_CIDR_WITHIN: Duration = Duration::from_secs(30);

async fn apply_bridge(cx: &StepContext<'_>, c: &Cluster, api: &Api<Node>) -> Result<(), StepError> {
    let mut routes = Vec::new();
    let t = std::time::Instant::now();
    let nodes = loop {
        let nodes = list_nodes(api).await.map_err(StepError::new)?;
        let all = nodes
            .iter()
            .all(|n| n.spec.as_ref().is_some_and(|s| s.pod_cidr.is_some()));
        if all || t.elapsed() > POD_CIDR_WITHIN || cx.cancel.is_cancelled() {
            break nodes;
        }
        tokio::time::sleep(POLL).await;
    };
    for n in nodes {
        let name = n.metadata.name.clone().unwrap_or_default();
        let cidr = n.spec.as_ref().and_then(|s| s.pod_cidr.clone()).ok_or_else(|| {
            StepError::new(format!(
                "node {name} has no spec.podCIDR after {POD_CIDR_WITHIN:?}: the controller manager allocates none unless kubeadm sets networking.podSubnet"
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
        r.run(c.write_file(
            &n.name,
            bridge::CONFLIST_PATH,
            &bridge::conflist(&n.pod_cidr),
        ))
        .await?;
        if r.run(c.exec(&n.name, &bridge::masquerade("-C", pod_subnet)))
            .await
            .is_err()
        {
            r.run(c.exec(&n.name, &bridge::masquerade("-A", pod_subnet)))
                .await?;
        }
        for route in bridge::routes_for(&n.name, &routes) {
            r.run(c.exec(&n.name, &route)).await?;
        }
        // The same again at every boot of the node.
        r.run(c.write_file(
            &n.name,
            bridge::BOOT_SCRIPT_PATH,
            &bridge::boot_script(&n.name, &routes, pod_subnet),
        ))
        .await?;
        r.run(c.write_file(&n.name, bridge::BOOT_UNIT_PATH, &bridge::boot_unit()))
            .await?;
        r.run(c.exec(&n.name, &["systemctl", "enable", bridge::BOOT_UNIT]))
            .await?;
        cx.note(format!("bridge CNI on {}: pod CIDR {}", n.name, n.pod_cidr));
    }
    Ok(())
}

/// The Kubernetes version the variant is checked against: the scenario's, or the one the API
/// server reports when the scenario follows a marker such as `latest`.
async fn cluster_version(
    cx: &StepContext<'_>,
    kube: &kube::Client,
) -> Result<KubeVersion, StepError> {
    match cx.run.scenario.version {
        Some(v) => Ok(v),
        None => apply::server_version(kube)
            .await
            .map_err(|e| StepError::infra(apply::describe(&e))),
    }
}

/// The lint, before anything is applied: a variant that cannot work on this release fails
/// here in seconds, naming file, line, object and field.
fn lint_gate(
    cx: &StepContext<'_>,
    v: &Variant,
    version: &KubeVersion,
) -> Result<(usize, Vec<ManifestObject>), StepError> {
    let dir = cx
        .run
        .catalog
        .dir(&v.name)
        .ok_or_else(|| StepError::new(format!("failed to find CNI variant {}", v.name)))?;
    let (report, objects) =
        lint::lint_variant(v, dir, version).map_err(|e| StepError::new(e.to_string()))?;
    for f in &report.findings {
        cx.log.line(&f.to_string());
    }
    let errors: Vec<&lint::Finding> = report
        .findings
        .iter()
        .filter(|f| f.severity == lint::Severity::Error)
        .collect();
    if let Some(first) = errors.first() {
        return Err(StepError::new(format!(
            "CNI variant {} fails the lint for Kubernetes {version} with {} error(s); first: {first}",
            v.name,
            errors.len()
        ))
        .with_diagnosis(first.message.clone()));
    }
    cx.note(format!(
        "lint of {} for Kubernetes {version}: {} objects, {} warning(s)",
        v.name,
        report.objects,
        report.warnings()
    ));
    let release = lint::release_index(v, version).map_err(|e| StepError::new(e.to_string()))?;
    Ok((release, objects))
}

/// Where an image missing from a node would come from.
enum Pull {
    /// Its registry has a mirror that has it, or the nodes pull from upstream registries.
    Pullable,
    /// Neither present nor pullable, and why not.
    No(String),
}

/// Whether a missing image can be pulled: through its mirror (asked, HEAD on the manifest),
/// from its upstream registry when the cluster pulls, never when everything is preloaded.
async fn pullable(cx: &StepContext<'_>, img: &str) -> Pull {
    let Some(set) = cx.job().artifacts.as_ref().map(|a| a.image_set.clone()) else {
        return Pull::No("no registry is configured".into());
    };
    if let Some(url) = set.mirror_manifest_url(img) {
        let r = cx.runner();
        let dl = crate::download::Downloader::new(
            &cx.run.settings.cache_dir,
            r.log.clone(),
            r.cancel.clone(),
        );
        return match dl.exists(&url).await {
            Ok(true) => Pull::Pullable,
            Ok(false) => Pull::No(format!("its mirror does not have it ({url} answered 404)")),
            Err(e) => Pull::No(format!(
                "its mirror did not answer: {}",
                crate::error::chain(&e)
            )),
        };
    }
    if set.agnhost_preloaded {
        Pull::No("every image is preloaded and no registry is configured (pass --registry-mirror REGISTRY=URL on a machine with a registry)".into())
    } else {
        Pull::Pullable
    }
}

/// Third-party variants: each image must be on every node or pullable. An image that is
/// neither fails the step in seconds, naming the image, what was tried and how to fix it.
async fn check_images(
    cx: &StepContext<'_>,
    c: &Cluster,
    v: &Variant,
    release: &Release,
) -> Result<(), StepError> {
    for n in &c.nodes {
        let listed = in_node(
            cx,
            c,
            &n.name,
            &["ctr", "-n", "k8s.io", "images", "ls", "-q"],
        )
        .await?;
        let have: Vec<&str> = listed.lines().collect();
        for img in &release.images {
            let wanted = canonical_image(img).map_err(|e| {
                StepError::infra(format!(
                    "failed to read image {img:?} of {} {}: {e}",
                    v.name, release.version
                ))
            })?;
            if !have.contains(&wanted.as_str()) {
                let why = match pullable(cx, img).await {
                    Pull::Pullable => continue,
                    Pull::No(why) => why,
                };
                let mut msg = format!(
                    "failed to apply {} {}: image {img} is not on node {} and cannot be pulled: {why}; preload it with: {engine} save {img} | {engine} exec -i {} ctr -n k8s.io images import -",
                    v.name, release.version, n.name, n.name, engine = c.provider.name()
                );
                if let Some(l) = &v.offline_limitation {
                    msg.push_str(&format!("\n({l})"));
                }
                return Err(StepError::infra(msg)
                    .with_diagnosis(format!("missing image {img} on node {}", n.name)));
            }
        }
    }
    Ok(())
}

/// Lint, a server-side dry run, images, server-side apply, then the variant's DaemonSet
/// rolled out.
async fn apply_manifests(
    cx: &StepContext<'_>,
    c: &Cluster,
    v: &Variant,
    kube: &kube::Client,
) -> Result<(), StepError> {
    let version = cluster_version(cx, kube).await?;
    let (i, objects) = lint_gate(cx, v, &version)?;
    let release = &v.releases[i];
    // What the real API server says of every object, before anything is persisted or the
    // image check can stop the step.
    if apply::supports_dry_run(&version) {
        let rejected = apply::dry_run(kube, &objects)
            .await
            .map_err(|e| StepError::new(apply::describe(&e)))?;
        let unchecked = rejected.iter().filter(|r| r.unchecked).count();
        let refused: Vec<String> = rejected
            .iter()
            .filter(|r| !r.unchecked)
            .map(|r| format!("{} {}: {}", r.object.kind(), r.object.name(), r.reason))
            .collect();
        let accepted = objects.len() - rejected.len();
        cx.property("cni.dry-run-accepted", accepted);
        cx.property("cni.dry-run-refused", refused.len());
        cx.property("cni.dry-run-unchecked", unchecked);
        cx.note(format!(
            "server-side dry run of {} {}: {accepted} object(s) accepted, {} refused, {unchecked} not checkable (kinds from its own CRDs)",
            v.name,
            release.version,
            refused.len()
        ));
        if !refused.is_empty() {
            return Err(StepError::new(format!(
                "the API server refused {} object(s) of {} {} in a dry run: {}",
                refused.len(),
                v.name,
                release.version,
                refused.join("; ")
            )));
        }
    }
    check_images(cx, c, v, release).await?;
    let applied = apply::apply(kube, &objects, &cx.cancel)
        .await
        .map_err(|e| StepError::new(apply::describe(&e)))?;
    cx.note(format!(
        "{} {}: {applied} objects applied (server-side apply, field manager {})",
        v.name,
        release.version,
        apply::FIELD_MANAGER
    ));
    if let Some(ds) = &v.ready.daemonset {
        cx.note(format!(
            "waiting for daemonset {}/{} to roll out",
            ds.namespace, ds.name
        ));
    }
    // Bounded by the step deadline (through cx.cancel) and by READY_WAIT.
    if let Err(why) =
        apply::wait_ready(kube, &v.ready, &cx.cancel, READY_WAIT, &|l| cx.note(l)).await
    {
        let d = diagnose_nodes(c, &cx.log).await;
        cx.log.line(&format!("# {} not ready:\n{why}", v.name));
        let first = why.lines().next().unwrap_or_default().to_string();
        return Err(StepError::new(format!(
            "condition 2/3 ({} {} applied and rolled out) not met: {first}",
            v.name, release.version
        ))
        .with_diagnosis(format!("{why}\n{d}")));
    }
    Ok(())
}

/// The longest the step waits for a variant's DaemonSet; the step deadline may end it sooner.
const READY_WAIT: Duration = Duration::from_secs(600);

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
                "lint {}'s manifests for the cluster's Kubernetes version, check its images are on the nodes, server-side apply the manifests, then wait for its DaemonSet",
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
        let pods: Api<Pod> = Api::namespaced(kube.clone(), "kube-system");
        let expected = c.node_names();

        cx.note("condition 1/3: every node registered");
        let say = |line: String| cx.note(line);
        if let Err(last) = readiness::poll_saying(&cx.cancel, POLL, &say, || async {
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
            ApplyMethod::Manifests => apply_manifests(cx, c, v, &kube).await?,
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
        let result = readiness::poll_saying(&cx.cancel, POLL, &say, check).await;
        let after = *nodes_ready_after.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = after {
            cx.property("cni.nodes-ready-seconds", format!("{:.1}", t.as_secs_f64()));
        }
        cx.property(
            "cni.all-ready-seconds",
            format!("{:.1}", started.elapsed().as_secs_f64()),
        );
        if let Err(last) = result {
            let d = diagnose_nodes(c, &cx.log).await;
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
