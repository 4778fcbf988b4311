//! Putting a variant's manifests on a cluster: every object is resolved to a served resource
//! through API discovery and sent as a server-side apply (field manager `shakedown`), or as a
//! server-side dry run of the same request. No kubectl is involved.
//!
//! Release branches reach back before both features: server-side apply is on by default
//! from Kubernetes 1.16, server-side dry run from 1.13. Older API servers get a create, or a
//! merge patch when the object exists, and no dry run (the offline lint still runs).

use super::manifest::ManifestObject;
use super::Readiness;
use crate::process::Deadline;
use crate::readiness;
use crate::release::KubeVersion;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::discovery::{ApiCapabilities, Discovery, Scope};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const FIELD_MANAGER: &str = "shakedown";

/// First minor release with server-side apply on by default (beta).
pub const SERVER_SIDE_APPLY_SINCE: u32 = 16;
/// First minor release with server-side dry run on by default (beta).
pub const DRY_RUN_SINCE: u32 = 13;

/// How objects are sent to an API server of version `v`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    ServerSideApply,
    /// Create, or merge patch an object that exists.
    CreateOrMerge,
}

impl Method {
    pub fn for_version(v: &KubeVersion) -> Method {
        if v.major > 1 || v.minor >= SERVER_SIDE_APPLY_SINCE {
            Method::ServerSideApply
        } else {
            Method::CreateOrMerge
        }
    }
}

/// Whether an API server of version `v` can dry-run requests.
pub fn supports_dry_run(v: &KubeVersion) -> bool {
    v.major > 1 || v.minor >= DRY_RUN_SINCE
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("failed to read kubeconfig {}", path.display())]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("failed to reach the API server")]
    Connect(#[source] kube::Error),
    #[error("failed to read the API server's version {reported:?}")]
    Version {
        reported: String,
        #[source]
        source: crate::release::version::VersionError,
    },
    #[error("failed to dry-run: the API server is Kubernetes {version}, and server-side dry run needs 1.{DRY_RUN_SINCE} or later")]
    DryRunUnsupported { version: KubeVersion },
    #[error("failed to discover the resources the API server serves")]
    Discovery(#[source] kube::Error),
    #[error("failed to apply {object}: {api_version} {kind} is not served by this cluster")]
    NotServed {
        object: String,
        api_version: String,
        kind: String,
    },
    #[error("failed to apply {object} ({}:{line})", file.display())]
    Apply {
        object: String,
        file: PathBuf,
        line: usize,
        #[source]
        source: kube::Error,
    },
}

/// A client for the cluster a kubeconfig file points at (its current context).
pub async fn client(kubeconfig: &Path) -> Result<kube::Client, ApplyError> {
    let err = |source: Box<dyn std::error::Error + Send + Sync>| ApplyError::Kubeconfig {
        path: kubeconfig.to_path_buf(),
        source,
    };
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| err(Box::new(e)))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| err(Box::new(e)))?;
    kube::Client::try_from(cfg).map_err(|e| err(Box::new(e)))
}

/// The version the API server reports.
pub async fn server_version(client: &kube::Client) -> Result<KubeVersion, ApplyError> {
    let info = client
        .apiserver_version()
        .await
        .map_err(ApplyError::Connect)?;
    info.git_version
        .parse()
        .or_else(|_| format!("{}.{}", info.major, info.minor.trim_end_matches('+')).parse())
        .map_err(|source| ApplyError::Version {
            reported: info.git_version.clone(),
            source,
        })
}

/// Finds the served resource for a group, version and kind.
pub trait KindResolver {
    fn resolve(&self, gvk: &GroupVersionKind) -> Option<(ApiResource, ApiCapabilities)>;
}

impl KindResolver for Discovery {
    fn resolve(&self, gvk: &GroupVersionKind) -> Option<(ApiResource, ApiCapabilities)> {
        self.resolve_gvk(gvk)
    }
}

/// An object matched to the resource that serves it, with the namespace it goes to.
#[derive(Debug, Clone)]
pub struct Resolved<'a> {
    pub object: &'a ManifestObject,
    pub resource: ApiResource,
    /// `None` for cluster-scoped resources; `default` when a namespaced object names none.
    pub namespace: Option<String>,
}

/// Namespaces first, then CustomResourceDefinitions, then everything else in file order, so
/// that what later objects need exists when they arrive.
pub fn apply_order(objects: &[ManifestObject]) -> Vec<&ManifestObject> {
    let rank = |o: &ManifestObject| match (o.gvk.group.as_str(), o.kind()) {
        ("", "Namespace") => 0,
        ("apiextensions.k8s.io", "CustomResourceDefinition") => 1,
        _ => 2,
    };
    let mut ordered: Vec<&ManifestObject> = objects.iter().collect();
    ordered.sort_by_key(|o| rank(o));
    ordered
}

/// Resolves one object; `Err` when the cluster does not serve its kind at its version.
pub fn resolve<'a>(
    object: &'a ManifestObject,
    resolver: &dyn KindResolver,
) -> Result<Resolved<'a>, &'a ManifestObject> {
    let (resource, caps) = resolver.resolve(&object.gvk).ok_or(object)?;
    let namespace = match caps.scope {
        Scope::Cluster => None,
        Scope::Namespaced => Some(object.namespace().unwrap_or("default").to_string()),
    };
    Ok(Resolved {
        object,
        resource,
        namespace,
    })
}

/// Whether one of `objects` is a CustomResourceDefinition that defines `o`'s kind.
pub fn defined_by_crd(o: &ManifestObject, objects: &[ManifestObject]) -> bool {
    objects.iter().any(|c| {
        c.kind() == "CustomResourceDefinition"
            && c.get("spec.group").and_then(|g| g.as_str()) == Some(o.gvk.group.as_str())
            && c.get("spec.names.kind").and_then(|k| k.as_str()) == Some(o.kind())
    })
}

fn params(dry_run: bool) -> PatchParams {
    let p = PatchParams::apply(FIELD_MANAGER).force();
    if dry_run {
        p.dry_run()
    } else {
        p
    }
}

async fn send(
    client: &kube::Client,
    r: &Resolved<'_>,
    method: Method,
    dry_run: bool,
) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> = match &r.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &r.resource),
        None => Api::all_with(client.clone(), &r.resource),
    };
    let mut body = r.object.obj.clone();
    body.metadata.namespace = r.namespace.clone();
    let name = r.object.name();
    match method {
        Method::ServerSideApply => api
            .patch(name, &params(dry_run), &Patch::Apply(&body))
            .await
            .map(|_| ()),
        Method::CreateOrMerge => {
            let pp = PostParams {
                dry_run,
                field_manager: Some(FIELD_MANAGER.to_string()),
            };
            match api.create(&pp, &body).await {
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    let patch = PatchParams {
                        dry_run,
                        ..Default::default()
                    };
                    api.patch(name, &patch, &Patch::Merge(&body))
                        .await
                        .map(|_| ())
                }
                other => other.map(|_| ()),
            }
        }
    }
}

async fn discover(client: &kube::Client) -> Result<Discovery, ApplyError> {
    Discovery::new(client.clone())
        .run()
        .await
        .map_err(ApplyError::Discovery)
}

/// `e` and its causes, each once: a rejected request ends with the server's own words
/// rather than kube's debug dump of them.
pub fn describe(e: &ApplyError) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(k) = s.downcast_ref::<kube::Error>() {
            msg.push_str(&format!(": {}", reason(k)));
            break;
        }
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

/// The server's own words for a failed request.
pub fn reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(r) if !r.message.is_empty() => format!("{} ({})", r.message, r.reason),
        other => other.to_string(),
    }
}

/// Server-side applies every object; stops at the first the server rejects. Kinds defined by
/// a CustomResourceDefinition of the same manifests are resolved again once it is served.
pub async fn apply(
    client: &kube::Client,
    objects: &[ManifestObject],
    cancel: &CancellationToken,
) -> Result<usize, ApplyError> {
    let method = Method::for_version(&server_version(client).await?);
    let mut discovery = discover(client).await?;
    let mut applied = 0;
    for o in apply_order(objects) {
        let mut resolved = resolve(o, &discovery);
        let mut tries = 0;
        while resolved.is_err() && defined_by_crd(o, objects) && tries < 30 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = cancel.cancelled() => break,
            }
            discovery = discover(client).await?;
            resolved = resolve(o, &discovery);
            tries += 1;
        }
        let r = resolved.map_err(|o| ApplyError::NotServed {
            object: o.describe(),
            api_version: o.api_version(),
            kind: o.kind().to_string(),
        })?;
        send(client, &r, method, false)
            .await
            .map_err(|source| ApplyError::Apply {
                object: o.describe(),
                file: o.file.clone(),
                line: o.line,
                source,
            })?;
        applied += 1;
    }
    Ok(applied)
}

/// What the server said of one object in a dry run.
#[derive(Debug, Clone)]
pub struct Rejection<'a> {
    pub object: &'a ManifestObject,
    pub reason: String,
    /// The kind is defined by a CustomResourceDefinition that was itself only dry-run, so
    /// the object could not be checked.
    pub unchecked: bool,
}

/// Server-side dry run of every object: nothing is persisted. Returns each object the server
/// would not accept, with its reason.
pub async fn dry_run<'a>(
    client: &kube::Client,
    objects: &'a [ManifestObject],
) -> Result<Vec<Rejection<'a>>, ApplyError> {
    let version = server_version(client).await?;
    if !supports_dry_run(&version) {
        return Err(ApplyError::DryRunUnsupported { version });
    }
    let method = Method::for_version(&version);
    let discovery = discover(client).await?;
    let mut out = Vec::new();
    for o in apply_order(objects) {
        match resolve(o, &discovery) {
            Err(o) if defined_by_crd(o, objects) => out.push(Rejection {
                object: o,
                reason: format!(
                    "{} {} is defined by a CustomResourceDefinition of these manifests, which a dry run does not create; not checked",
                    o.api_version(),
                    o.kind()
                ),
                unchecked: true,
            }),
            Err(o) => out.push(Rejection {
                object: o,
                reason: format!("{} {} is not served by this cluster", o.api_version(), o.kind()),
                unchecked: false,
            }),
            Ok(r) => {
                if let Err(e) = send(client, &r, method, true).await {
                    out.push(Rejection {
                        object: o,
                        reason: reason(&e),
                        unchecked: false,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Every reason the variant is not ready yet: its DaemonSet's rollout, the conditions of the
/// DaemonSet's pods, and the nodes' Ready conditions. `Ok` once the DaemonSet is rolled out
/// and every node is Ready.
pub async fn not_ready_reasons(client: &kube::Client, ready: &Readiness) -> Result<(), String> {
    let mut why = Vec::new();
    if let Some(ds) = &ready.daemonset {
        let api: Api<DaemonSet> = Api::namespaced(client.clone(), &ds.namespace);
        match api.get_opt(&ds.name).await {
            Ok(None) => why.push(format!(
                "daemonset {}/{} does not exist",
                ds.namespace, ds.name
            )),
            Ok(Some(d)) => {
                if let Err(e) = readiness::daemonset_rolled_out(&d) {
                    why.push(e);
                    let selector = d
                        .spec
                        .as_ref()
                        .and_then(|s| s.selector.match_labels.as_ref())
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| format!("{k}={v}"))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default();
                    let pods: Api<Pod> = Api::namespaced(client.clone(), &ds.namespace);
                    match pods.list(&ListParams::default().labels(&selector)).await {
                        Ok(list) => why.extend(
                            list.items
                                .iter()
                                .filter_map(|p| readiness::pod_ready(p).err()),
                        ),
                        Err(e) => why.push(format!(
                            "failed to list the pods of daemonset {}: {e}",
                            ds.name
                        )),
                    }
                }
            }
            Err(e) => why.push(format!(
                "failed to get daemonset {}/{}: {e}",
                ds.namespace, ds.name
            )),
        }
    }
    let nodes: Api<Node> = Api::all(client.clone());
    match nodes.list(&ListParams::default()).await {
        Ok(list) => why.extend(
            list.items
                .iter()
                .filter_map(|n| readiness::node_ready(n).err()),
        ),
        Err(e) => why.push(format!("failed to list nodes: {e}")),
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join("\n"))
    }
}

/// Waits until the variant is ready, at most `timeout` and never past `cancel`, saying
/// what it waits on every [`readiness::SAY_EVERY`]; otherwise returns the last reasons, one
/// per line.
pub async fn wait_ready(
    client: &kube::Client,
    ready: &Readiness,
    cancel: &CancellationToken,
    timeout: Duration,
    say: &(dyn Fn(String) + Sync),
) -> Result<(), String> {
    let bound = Deadline::new(cancel, timeout);
    readiness::poll_saying(bound.token(), Duration::from_secs(2), say, || {
        not_ready_reasons(client, ready)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::manifest;
    use std::collections::HashMap;

    /// A cluster's discovery as a table: (group, version, kind) → (plural, namespaced).
    struct Table(HashMap<(String, String, String), (String, bool)>);

    impl Table {
        fn new(rows: &[(&str, &str, &str, &str, bool)]) -> Table {
            Table(
                rows.iter()
                    .map(|(g, v, k, p, ns)| {
                        (
                            (g.to_string(), v.to_string(), k.to_string()),
                            (p.to_string(), *ns),
                        )
                    })
                    .collect(),
            )
        }
    }

    impl KindResolver for Table {
        fn resolve(&self, gvk: &GroupVersionKind) -> Option<(ApiResource, ApiCapabilities)> {
            let (plural, namespaced) =
                self.0
                    .get(&(gvk.group.clone(), gvk.version.clone(), gvk.kind.clone()))?;
            Some((
                ApiResource::from_gvk_with_plural(gvk, plural),
                ApiCapabilities {
                    scope: if *namespaced {
                        Scope::Namespaced
                    } else {
                        Scope::Cluster
                    },
                    subresources: vec![],
                    operations: vec![],
                },
            ))
        }
    }

    const MANIFEST: &str = "\
apiVersion: v1
kind: ServiceAccount
metadata: {name: calico-node, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: calico-node, namespace: kube-system}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: no-namespace}
---
apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata: {name: default-pool}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: ippools.crd.projectcalico.org}
spec:
  group: crd.projectcalico.org
  names: {kind: IPPool, plural: ippools}
---
apiVersion: extensions/v1beta1
kind: DaemonSet
metadata: {name: calico-node, namespace: kube-system}
---
apiVersion: v1
kind: Namespace
metadata: {name: calico-system}
";

    fn objects() -> Vec<ManifestObject> {
        manifest::parse(Path::new("m.yaml"), MANIFEST).unwrap()
    }

    fn cluster_1_20() -> Table {
        Table::new(&[
            ("", "v1", "ServiceAccount", "serviceaccounts", true),
            ("", "v1", "ConfigMap", "configmaps", true),
            ("", "v1", "Namespace", "namespaces", false),
            (
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRole",
                "clusterroles",
                false,
            ),
            (
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
            ),
            ("apps", "v1", "DaemonSet", "daemonsets", true),
        ])
    }

    #[test]
    fn namespaces_and_crds_go_first_and_the_rest_keeps_file_order() {
        let objs = objects();
        let order: Vec<String> = apply_order(&objs).iter().map(|o| o.describe()).collect();
        assert_eq!(
            order,
            vec![
                "Namespace calico-system",
                "CustomResourceDefinition ippools.crd.projectcalico.org",
                "ServiceAccount kube-system/calico-node",
                "ClusterRole kube-system/calico-node",
                "ConfigMap no-namespace",
                "IPPool default-pool",
                "DaemonSet kube-system/calico-node",
            ]
        );
    }

    #[test]
    fn resolution_gives_resource_and_namespace_by_scope() {
        let objs = objects();
        let table = cluster_1_20();
        let sa = resolve(&objs[0], &table).unwrap();
        assert_eq!(sa.resource.plural, "serviceaccounts");
        assert_eq!(sa.namespace.as_deref(), Some("kube-system"));
        let role = resolve(&objs[1], &table).unwrap();
        assert_eq!(
            role.namespace, None,
            "a cluster-scoped object drops the namespace it names"
        );
        assert_eq!(role.resource.api_version, "rbac.authorization.k8s.io/v1");
        let cm = resolve(&objs[2], &table).unwrap();
        assert_eq!(cm.namespace.as_deref(), Some("default"));
    }

    #[test]
    fn unserved_kinds_do_not_resolve_and_crd_kinds_are_recognised() {
        let objs = objects();
        let table = cluster_1_20();
        let ds = resolve(&objs[5], &table).unwrap_err();
        assert_eq!(ds.describe(), "DaemonSet kube-system/calico-node");
        assert!(!defined_by_crd(ds, &objs));
        let pool = resolve(&objs[3], &table).unwrap_err();
        assert!(defined_by_crd(pool, &objs));
    }

    #[test]
    fn old_api_servers_get_create_or_merge_and_no_dry_run() {
        let v = |s: &str| s.parse::<KubeVersion>().unwrap();
        assert_eq!(Method::for_version(&v("1.6")), Method::CreateOrMerge);
        assert_eq!(Method::for_version(&v("v1.15.12")), Method::CreateOrMerge);
        assert_eq!(Method::for_version(&v("1.16")), Method::ServerSideApply);
        assert_eq!(Method::for_version(&v("v1.20.2")), Method::ServerSideApply);
        assert!(!supports_dry_run(&v("1.12")));
        assert!(supports_dry_run(&v("1.13")));
    }

    #[test]
    fn dry_run_and_apply_use_the_shakedown_field_manager() {
        let p = params(true);
        assert_eq!(p.field_manager.as_deref(), Some(FIELD_MANAGER));
        assert!(p.dry_run && p.force);
        assert!(!params(false).dry_run);
    }
}
