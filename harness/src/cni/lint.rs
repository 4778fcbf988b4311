//! `shakedown cni lint`: checks a variant's manifests against one Kubernetes release before
//! anything is applied, so a broken variant fails in seconds with the reason instead of
//! after a readiness deadline. The checks are the ones the 1.6.0 release would have needed:
//!
//! * every DaemonSet tolerates the control-plane taint kubeadm applies in that release;
//! * a DaemonSet running under a ServiceAccount has it, and a ClusterRole bound to it;
//! * every built-in `apiVersion`/`kind` is served by that release ([`super::apis`]);
//! * every image is pinned to a tag or digest, and (for a variant) listed in `variant.yaml`
//!   so the preload check covers it;
//! * with a live cluster, a server-side dry run of every object.

use super::apis::{self, Served};
use super::apply::{self, ApplyError};
use super::manifest::{self, ManifestObject};
use super::{Catalog, Variant};
use crate::config::{self, Located};
use crate::readiness::canonical_image;
use crate::release::{control_plane_taints, KubeVersion};
use serde::Serialize;
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// The file is not readable YAML of Kubernetes objects.
    Manifest,
    /// A DaemonSet does not tolerate the control-plane taint.
    Toleration,
    /// A DaemonSet's ServiceAccount, or its ClusterRole binding, is missing.
    Rbac,
    /// The release does not serve the object's apiVersion and kind.
    ApiVersion,
    /// An image has no tag, or the moving tag `latest`.
    Image,
    /// The manifests' images and `variant.yaml`'s `images` disagree.
    ImageList,
    /// The API server rejected the object in a server-side dry run.
    DryRun,
}

/// One problem, located: file, line, object, field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub check: Check,
    pub file: PathBuf,
    pub line: usize,
    /// `DaemonSet kube-system/weave-net`; empty for the file as a whole.
    pub object: String,
    /// Dotted path inside the object, e.g. `spec.template.spec.tolerations`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}:{}: {sev}: ", self.file.display(), self.line)?;
        if !self.object.is_empty() {
            write!(f, "{}: ", self.object)?;
        }
        if !self.field.is_empty() {
            write!(f, "field `{}`: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl Finding {
    fn at(o: &ManifestObject, severity: Severity, check: Check, field: &str, msg: String) -> Self {
        Finding {
            severity,
            check,
            file: o.file.clone(),
            line: o.line_of(field),
            object: o.describe(),
            field: field.to_string(),
            message: msg,
        }
    }
}

/// Everything a lint run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Objects checked.
    pub objects: usize,
    pub files: Vec<PathBuf>,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    }

    pub fn warnings(&self) -> usize {
        self.findings.len() - self.errors()
    }

    pub fn has_errors(&self) -> bool {
        self.errors() > 0
    }

    /// Findings ordered by file and line.
    pub fn sorted(mut self) -> Report {
        self.findings
            .sort_by(|a, b| (&a.file, a.line, a.severity).cmp(&(&b.file, b.line, b.severity)));
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LintError {
    #[error("unknown CNI variant {name:?}; known variants: {known}")]
    UnknownVariant { name: String, known: String },
    #[error(
        "CNI variant {variant} has no release for Kubernetes {version}; it supports {supported}"
    )]
    NoRelease {
        variant: String,
        version: String,
        supported: String,
    },
    #[error("failed to dry-run {what} against the cluster")]
    Cluster {
        what: String,
        #[source]
        source: Box<ApplyError>,
    },
}

/// Where a pod spec sits in an object of `kind`.
fn pod_spec_path(kind: &str) -> Option<&'static str> {
    match kind {
        "DaemonSet"
        | "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "Job"
        | "ReplicationController" => Some("spec.template.spec"),
        "CronJob" => Some("spec.jobTemplate.spec.template.spec"),
        "Pod" => Some("spec"),
        _ => None,
    }
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Whether a toleration admits a pod onto nodes with `taint` (no value) and effect
/// NoSchedule: the key matches with operator Exists (or Equal and no value), or operator
/// Exists without a key matches every taint; the effect must be empty or NoSchedule.
pub fn tolerates(toleration: &Value, taint: &str) -> bool {
    let key = text(toleration, "key");
    let effect = text(toleration, "effect");
    let op = match text(toleration, "operator") {
        "" => "Equal",
        op => op,
    };
    let key_ok = match op {
        "Exists" => key.is_empty() || key == taint,
        "Equal" => key == taint && text(toleration, "value").is_empty(),
        _ => false,
    };
    key_ok && (effect.is_empty() || effect == "NoSchedule")
}

fn check_tolerations(o: &ManifestObject, v: &KubeVersion, out: &mut Vec<Finding>) {
    let field = "spec.template.spec.tolerations";
    let tolerations: Vec<Value> = o
        .get(field)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for taint in control_plane_taints(v) {
        if !tolerations.iter().any(|t| tolerates(t, taint)) {
            out.push(Finding::at(
                o,
                Severity::Error,
                Check::Toleration,
                field,
                format!(
                    "does not tolerate the control-plane taint {taint}:NoSchedule that kubeadm {v} puts on control-plane nodes; its pods cannot run there, so those nodes get no pod network and stay NotReady"
                ),
            ));
        }
    }
}

/// Roles every cluster has, which manifests may bind without creating.
fn builtin_cluster_role(name: &str) -> bool {
    name.starts_with("system:") || matches!(name, "cluster-admin" | "admin" | "edit" | "view")
}

fn check_rbac(o: &ManifestObject, all: &[ManifestObject], out: &mut Vec<Finding>) {
    // serviceAccount is the deprecated spelling of serviceAccountName.
    let Some((field, sa)) = ["serviceAccountName", "serviceAccount"]
        .iter()
        .find_map(|k| {
            let field = format!("spec.template.spec.{k}");
            let sa = o.get(&field)?.as_str()?.to_string();
            (!sa.is_empty()).then_some((field, sa))
        })
    else {
        return;
    };
    let ns = o.namespace().unwrap_or("default");
    let rbac = |x: &ManifestObject| x.gvk.group == "rbac.authorization.k8s.io";
    let has_sa = all.iter().any(|x| {
        x.gvk.group.is_empty()
            && x.kind() == "ServiceAccount"
            && x.name() == sa
            && x.namespace().unwrap_or("default") == ns
    });
    if !has_sa {
        out.push(Finding::at(
            o,
            Severity::Error,
            Check::Rbac,
            &field,
            format!("runs as ServiceAccount {ns}/{sa}, which these manifests do not create"),
        ));
    }
    let binds_sa = |b: &&ManifestObject| {
        b.get("subjects")
            .and_then(Value::as_array)
            .is_some_and(|subjects| {
                subjects.iter().any(|s| {
                    text(s, "kind") == "ServiceAccount"
                        && text(s, "name") == sa
                        && text(s, "namespace") == ns
                })
            })
    };
    let bindings: Vec<&ManifestObject> = all
        .iter()
        .filter(|b| rbac(b) && b.kind() == "ClusterRoleBinding")
        .filter(binds_sa)
        .collect();
    let bound_roles: Vec<(&ManifestObject, String)> = bindings
        .iter()
        .filter(|b| b.get("roleRef").map(|r| text(r, "kind")) == Some("ClusterRole"))
        .map(|b| {
            (
                *b,
                b.get("roleRef")
                    .map(|r| text(r, "name"))
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    let role_exists = |name: &str| {
        builtin_cluster_role(name)
            || all
                .iter()
                .any(|r| rbac(r) && r.kind() == "ClusterRole" && r.name() == name)
    };
    if bound_roles.is_empty() {
        out.push(Finding::at(
            o,
            Severity::Error,
            Check::Rbac,
            &field,
            format!(
                "ServiceAccount {ns}/{sa} is bound to no ClusterRole by a ClusterRoleBinding of these manifests; with RBAC (on by default since Kubernetes 1.6) its API requests are forbidden"
            ),
        ));
    } else if !bound_roles.iter().any(|(_, role)| role_exists(role)) {
        for (b, role) in &bound_roles {
            out.push(Finding::at(
                b,
                Severity::Error,
                Check::Rbac,
                "roleRef.name",
                format!(
                    "binds ServiceAccount {ns}/{sa} (of {}) to ClusterRole {role}, which these manifests do not create",
                    o.describe()
                ),
            ));
        }
    }
}

fn check_api(o: &ManifestObject, v: &KubeVersion, out: &mut Vec<Finding>) {
    let api = o.api_version();
    let kind = o.kind();
    let (severity, message) = match apis::served(&api, kind, v) {
        Served::Removed { last, instead } => (
            Severity::Error,
            format!(
                "{api} {kind} is not served by Kubernetes {v}: it was removed after 1.{last}; use {instead}"
            ),
        ),
        Served::NotYet { since } => (
            Severity::Error,
            format!("{api} {kind} is not served by Kubernetes {v}: it is served from 1.{since}"),
        ),
        Served::Yes {
            removed_in: Some(r),
            instead,
        } => (
            Severity::Warning,
            format!("{api} {kind} is removed in Kubernetes 1.{r}; {instead} is already served"),
        ),
        Served::Yes { .. } | Served::Unknown => return,
    };
    out.push(Finding::at(
        o,
        severity,
        Check::ApiVersion,
        "apiVersion",
        message,
    ));
}

/// Every container image of a workload, with the field that names it.
pub fn images(o: &ManifestObject) -> Vec<(String, String)> {
    let Some(spec) = pod_spec_path(o.kind()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for list in ["initContainers", "containers"] {
        let path = format!("{spec}.{list}");
        for (i, c) in o
            .get(&path)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if let Some(image) = c.get("image").and_then(Value::as_str) {
                out.push((format!("{path}[{i}].image"), image.to_string()));
            }
        }
    }
    out
}

/// `Err` with the reason when an image reference does not pin a version.
pub fn pinned(image: &str) -> Result<(), &'static str> {
    if image.contains('@') {
        return Ok(());
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, "latest")) => Err("uses the moving tag :latest"),
        Some((_, tag)) if !tag.is_empty() => Ok(()),
        _ => Err("has no tag, which means :latest"),
    }
}

fn check_images(o: &ManifestObject, out: &mut Vec<Finding>) {
    for (field, image) in images(o) {
        if let Err(why) = pinned(&image) {
            out.push(Finding::at(
                o,
                Severity::Error,
                Check::Image,
                &field,
                format!("image {image} {why}: runs are not reproducible and the image cannot be preloaded"),
            ));
        }
    }
}

/// The offline checks of `objects` for Kubernetes `v`.
pub fn lint_objects(objects: &[ManifestObject], v: &KubeVersion) -> Vec<Finding> {
    let mut out = Vec::new();
    for o in objects {
        check_api(o, v, &mut out);
        if o.kind() == "DaemonSet" {
            check_tolerations(o, v, &mut out);
            check_rbac(o, objects, &mut out);
        }
        check_images(o, &mut out);
    }
    out
}

fn parse_finding(e: &manifest::ManifestError) -> Finding {
    Finding {
        severity: Severity::Error,
        check: Check::Manifest,
        file: e.file().to_path_buf(),
        line: e.line(),
        object: String::new(),
        field: String::new(),
        message: e.to_string(),
    }
}

/// Parses `files` (each on its own) and lints their objects together.
pub fn lint_files(files: &[PathBuf], v: &KubeVersion) -> (Report, Vec<ManifestObject>) {
    let mut report = Report {
        files: files.to_vec(),
        ..Default::default()
    };
    let mut objects = Vec::new();
    for f in files {
        match manifest::load(f) {
            Ok(objs) => objects.extend(objs),
            Err(e) => report.findings.push(parse_finding(&e)),
        }
    }
    report.objects = objects.len();
    report.findings.extend(lint_objects(&objects, v));
    (report, objects)
}

/// The index of the release of `variant` that serves `v`.
pub fn release_index(variant: &Variant, v: &KubeVersion) -> Result<usize, LintError> {
    variant
        .releases
        .iter()
        .position(|r| r.kubernetes.contains(Some(v)))
        .ok_or_else(|| LintError::NoRelease {
            variant: variant.name.clone(),
            version: v.to_string(),
            supported: variant.supported_ranges(),
        })
}

/// Lints the manifests of the release of `variant` (in folder `dir`) that serves `v`, and
/// checks that the images they use are exactly the release's `images`.
pub fn lint_variant(
    variant: &Variant,
    dir: &Path,
    v: &KubeVersion,
) -> Result<(Report, Vec<ManifestObject>), LintError> {
    let i = release_index(variant, v)?;
    let release = &variant.releases[i];
    let files: Vec<PathBuf> = release.manifests.iter().map(|m| dir.join(m)).collect();
    let (mut report, objects) = lint_files(&files, v);
    let variant_file = dir.join("variant.yaml");
    let located: Option<Located> = config::load_file::<Variant>(&variant_file)
        .ok()
        .map(|(_, l)| l);
    let listed: Vec<String> = release
        .images
        .iter()
        .filter_map(|i| canonical_image(i).ok())
        .collect();
    let mut used = Vec::new();
    for o in &objects {
        for (field, image) in images(o) {
            let c = match canonical_image(&image) {
                Ok(c) => c,
                Err(e) => {
                    report.findings.push(Finding::at(
                        o,
                        Severity::Error,
                        Check::ImageList,
                        &field,
                        format!("image {image:?} is not a valid image reference: {e}"),
                    ));
                    continue;
                }
            };
            if !listed.contains(&c) {
                report.findings.push(Finding::at(
                    o,
                    Severity::Error,
                    Check::ImageList,
                    &field,
                    format!(
                        "image {image} is not in releases[{i}].images of {}, so the preload check before apply cannot report it missing",
                        variant_file.display()
                    ),
                ));
            }
            used.push(c);
        }
    }
    for (j, image) in release.images.iter().enumerate() {
        if !canonical_image(image).is_ok_and(|c| used.contains(&c)) {
            let field = format!("releases[{i}].images[{j}]");
            let line = located.as_ref().map(|l| l.position(&field).0).unwrap_or(0);
            report.findings.push(Finding {
                severity: Severity::Warning,
                check: Check::ImageList,
                file: variant_file.clone(),
                line,
                object: String::new(),
                field,
                message: format!("image {image} is listed but no manifest of the release uses it"),
            });
        }
    }
    Ok((report, objects))
}

/// Findings from a server-side dry run of `objects`. An API server too old to dry-run
/// gives one warning: only the offline checks ran.
pub async fn dry_run_findings(
    client: &kube::Client,
    objects: &[ManifestObject],
) -> Result<Vec<Finding>, ApplyError> {
    let rejected = match apply::dry_run(client, objects).await {
        Err(e @ ApplyError::DryRunUnsupported { .. }) => {
            return Ok(objects
                .first()
                .map(|o| Finding {
                    severity: Severity::Warning,
                    check: Check::DryRun,
                    file: o.file.clone(),
                    line: 0,
                    object: String::new(),
                    field: String::new(),
                    message: format!("{e}; only the offline checks ran"),
                })
                .into_iter()
                .collect())
        }
        other => other?,
    };
    Ok(rejected
        .into_iter()
        .map(|r| {
            let severity = if r.unchecked {
                Severity::Warning
            } else {
                Severity::Error
            };
            Finding::at(
                r.object,
                severity,
                Check::DryRun,
                "",
                format!("rejected by the API server: {}", r.reason),
            )
        })
        .collect())
}

/// The live check the scenario trials run: for each of `variants`, the release that serves
/// the cluster's own version, linted offline and dry-run against the cluster the kubeconfig
/// points at. Returns every finding.
pub async fn live_dry_run(
    kubeconfig: &Path,
    catalog: &Catalog,
    variants: &[&str],
) -> Result<Vec<Finding>, LintError> {
    let cluster = |what: &str| {
        let what = what.to_string();
        move |source| LintError::Cluster {
            what,
            source: Box::new(source),
        }
    };
    let client = apply::client(kubeconfig)
        .await
        .map_err(cluster("the manifests"))?;
    let version = apply::server_version(&client)
        .await
        .map_err(cluster("the manifests"))?;
    let mut findings = Vec::new();
    for name in variants {
        let (variant, dir) = match (catalog.get(name), catalog.dir(name)) {
            (Some(v), Some(d)) => (v, d),
            _ => {
                return Err(LintError::UnknownVariant {
                    name: name.to_string(),
                    known: catalog.names().join(", "),
                })
            }
        };
        let (report, objects) = lint_variant(variant, dir, &version)?;
        findings.extend(report.findings);
        findings.extend(
            dry_run_findings(&client, &objects)
                .await
                .map_err(cluster(name))?,
        );
    }
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(s: &str) -> KubeVersion {
        s.parse().unwrap()
    }

    #[test]
    fn toleration_matching_follows_the_scheduler() {
        let master = "node-role.kubernetes.io/master";
        assert!(tolerates(
            &json!({"key": master, "effect": "NoSchedule"}),
            master
        ));
        assert!(tolerates(
            &json!({"key": master, "operator": "Exists"}),
            master
        ));
        assert!(tolerates(&json!({"operator": "Exists"}), master));
        assert!(tolerates(
            &json!({"operator": "Exists", "effect": "NoSchedule"}),
            master
        ));
        assert!(!tolerates(
            &json!({"operator": "Exists", "effect": "NoExecute"}),
            master
        ));
        assert!(!tolerates(
            &json!({"key": "CriticalAddonsOnly", "operator": "Exists"}),
            master
        ));
        assert!(!tolerates(
            &json!({"key": master, "value": "true", "effect": "NoSchedule"}),
            master
        ));
        assert!(!tolerates(
            &json!({"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}),
            master
        ));
    }

    #[test]
    fn images_need_a_tag_or_digest() {
        assert!(pinned("weaveworks/weave-kube:2.8.1").is_ok());
        assert!(pinned("localhost:5000/calico/node@sha256:abc").is_ok());
        assert!(pinned("localhost:5000/calico/node:v3.19.1").is_ok());
        assert_eq!(pinned("busybox"), Err("has no tag, which means :latest"));
        assert_eq!(
            pinned("localhost:5000/busybox"),
            Err("has no tag, which means :latest"),
            "a registry port is not a tag"
        );
        assert_eq!(
            pinned("weaveworks/weave-kube:latest"),
            Err("uses the moving tag :latest")
        );
    }

    #[test]
    fn the_1_24_release_needs_both_taints_tolerated() {
        let text = "\
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: d, namespace: kube-system}
spec:
  template:
    spec:
      tolerations:
        - {key: node-role.kubernetes.io/master, operator: Exists}
";
        let objs = manifest::parse(Path::new("d.yaml"), text).unwrap();
        let found = lint_objects(&objs, &v("1.24"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0]
            .message
            .starts_with("does not tolerate the control-plane taint node-role.kubernetes.io/control-plane:NoSchedule"));
        assert_eq!(found[0].line, 8);
        assert!(lint_objects(&objs, &v("1.23")).is_empty());
    }

    #[test]
    fn findings_print_file_line_object_and_field() {
        let f = Finding {
            severity: Severity::Error,
            check: Check::Image,
            file: "m.yaml".into(),
            line: 7,
            object: "DaemonSet kube-system/x".into(),
            field: "spec.template.spec.containers[0].image".into(),
            message: "image busybox has no tag".into(),
        };
        assert_eq!(
            f.to_string(),
            "m.yaml:7: error: DaemonSet kube-system/x: field `spec.template.spec.containers[0].image`: image busybox has no tag"
        );
    }
}
