//! Multi-document manifests as the API server sees them: each document (and each item of a
//! `kind: List`) becomes a [`DynamicObject`] with its group, version and kind, and keeps its
//! location so a finding can name the line of any field.
//!
//! Documents are split at YAML's document markers (`---` or `...` at the start of a line,
//! which the YAML spec forbids inside any scalar); each document is then read by serde_yaml
//! for the object and, for positions, by marked-yaml through [`Located`]. marked-yaml is
//! stricter than the Go parser Kubernetes uses (it rejects the quoted-scalar indentation of
//! Calico's CRD descriptions, for example), so a document it cannot read is still applied
//! and linted, with findings at the document's first line.

use crate::config::Located;
use kube::api::{DynamicObject, GroupVersionKind, TypeMeta};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One Kubernetes object from a manifest file.
#[derive(Debug, Clone)]
pub struct ManifestObject {
    pub file: PathBuf,
    pub obj: DynamicObject,
    pub gvk: GroupVersionKind,
    /// Where the object sits in its document: empty, or `items[3]` inside a `kind: List`.
    pub prefix: String,
    /// The line the object starts on.
    pub line: usize,
    located: Option<Arc<Located>>,
}

impl ManifestObject {
    pub fn kind(&self) -> &str {
        &self.gvk.kind
    }

    pub fn api_version(&self) -> String {
        if self.gvk.group.is_empty() {
            self.gvk.version.clone()
        } else {
            format!("{}/{}", self.gvk.group, self.gvk.version)
        }
    }

    pub fn name(&self) -> &str {
        self.obj.metadata.name.as_deref().unwrap_or("<unnamed>")
    }

    pub fn namespace(&self) -> Option<&str> {
        self.obj.metadata.namespace.as_deref()
    }

    /// `DaemonSet kube-system/weave-net`, or `ClusterRole weave-net` without a namespace.
    pub fn describe(&self) -> String {
        match self.namespace() {
            Some(ns) => format!("{} {ns}/{}", self.kind(), self.name()),
            None => format!("{} {}", self.kind(), self.name()),
        }
    }

    /// The line of `field` (a dotted path inside the object such as
    /// `spec.template.spec.tolerations`), or of its deepest existing parent.
    pub fn line_of(&self, field: &str) -> usize {
        match &self.located {
            Some(l) => {
                let full = match (self.prefix.is_empty(), field.is_empty()) {
                    (true, _) => field.to_string(),
                    (false, true) => self.prefix.clone(),
                    (false, false) => format!("{}.{field}", self.prefix),
                };
                l.position(&full).0
            }
            None => self.line,
        }
    }

    /// The value at a dotted path of the object's body (everything but apiVersion, kind and
    /// metadata), e.g. `spec.template.spec`.
    pub fn get(&self, path: &str) -> Option<&Value> {
        path.split('.')
            .filter(|p| !p.is_empty())
            .try_fold(&self.obj.data, |v, key| v.get(key))
    }
}

/// A manifest that cannot be read or is not a list of Kubernetes objects.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("failed to read manifest {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: invalid YAML: {message}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}:{line}: not a Kubernetes object: {message}", file.display())]
    NotAnObject {
        file: PathBuf,
        line: usize,
        message: String,
    },
}

impl ManifestError {
    pub fn file(&self) -> &Path {
        match self {
            ManifestError::Read { path, .. } => path,
            ManifestError::Syntax { file, .. } | ManifestError::NotAnObject { file, .. } => file,
        }
    }

    pub fn line(&self) -> usize {
        match self {
            ManifestError::Read { .. } => 0,
            ManifestError::Syntax { line, .. } | ManifestError::NotAnObject { line, .. } => *line,
        }
    }
}

/// Reads and parses a manifest file.
pub fn load(path: &Path) -> Result<Vec<ManifestObject>, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Reads every file, in order.
pub fn load_all(paths: &[PathBuf]) -> Result<Vec<ManifestObject>, ManifestError> {
    let mut out = Vec::new();
    for p in paths {
        out.extend(load(p)?);
    }
    Ok(out)
}

/// Whether `line` is a document marker: `---` or `...` at column 0, alone or followed by
/// whitespace (`--- # comment`, `--- !tag`).
fn is_marker(line: &str) -> bool {
    let line = line.trim_end_matches(['\n', '\r']);
    ["---", "..."].iter().any(|m| {
        line.strip_prefix(m)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
    })
}

/// The documents of `text`: (index of its first line, its text). A `---` line belongs to the
/// document it opens, where it is valid YAML; a `...` line ends the one before.
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut docs: Vec<(usize, String)> = vec![(0, String::new())];
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if is_marker(line) {
            if line.starts_with("...") {
                docs.push((i + 1, String::new()));
                continue;
            }
            docs.push((i, String::new()));
        }
        if let Some((_, doc)) = docs.last_mut() {
            doc.push_str(line);
        }
    }
    docs
}

/// Parses the objects of a multi-document manifest named `file`. Empty documents are
/// skipped; a `kind: List` contributes its items.
pub fn parse(file: &Path, text: &str) -> Result<Vec<ManifestObject>, ManifestError> {
    let mut out = Vec::new();
    for (first, doc) in documents(text) {
        let value: serde_yaml::Value =
            serde_yaml::from_str(&doc).map_err(|e| ManifestError::Syntax {
                file: file.to_path_buf(),
                line: first + e.location().map(|l| l.line()).unwrap_or(1),
                message: e.to_string(),
            })?;
        if value.is_null() {
            continue;
        }
        // The line of the document's first content, past its marker and comments.
        let start = first
            + 1
            + doc
                .lines()
                .position(|l| {
                    let t = l.trim_start();
                    !(t.is_empty() || t.starts_with('#') || is_marker(l))
                })
                .unwrap_or(0);
        let json = serde_json::to_value(&value).map_err(|e| ManifestError::NotAnObject {
            file: file.to_path_buf(),
            line: start,
            message: e.to_string(),
        })?;
        // Positions are a convenience: a document marked-yaml cannot read (anchors, tags)
        // is still applied and linted, with findings at its first line.
        let located = Located::parse(file, &doc, first).ok().map(Arc::new);
        let is_list = json.get("kind").and_then(Value::as_str) == Some("List")
            && json.get("apiVersion").and_then(Value::as_str) == Some("v1");
        if is_list {
            let items = json
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (j, item) in items.into_iter().enumerate() {
                let prefix = format!("items[{j}]");
                let line = located
                    .as_ref()
                    .map(|l| l.position(&prefix).0)
                    .unwrap_or(start);
                out.push(object(file, item, prefix, line, located.clone())?);
            }
        } else {
            out.push(object(file, json, String::new(), start, located)?);
        }
    }
    Ok(out)
}

fn object(
    file: &Path,
    json: Value,
    prefix: String,
    line: usize,
    located: Option<Arc<Located>>,
) -> Result<ManifestObject, ManifestError> {
    let bad = |message: String| ManifestError::NotAnObject {
        file: file.to_path_buf(),
        line,
        message,
    };
    if !json.is_object() {
        return Err(bad("the document is not a mapping".into()));
    }
    let obj: DynamicObject =
        serde_json::from_value(json).map_err(|e| bad(format!("failed to read metadata: {e}")))?;
    let types: &TypeMeta = obj
        .types
        .as_ref()
        .filter(|t| !t.api_version.is_empty() && !t.kind.is_empty())
        .ok_or_else(|| bad("apiVersion and kind are required".into()))?;
    let gvk = GroupVersionKind::try_from(types).map_err(|e| bad(e.to_string()))?;
    Ok(ManifestObject {
        file: file.to_path_buf(),
        obj,
        gvk,
        prefix,
        line,
        located,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MULTI: &str = "\
# leading comment
apiVersion: v1
kind: ServiceAccount
metadata:
  name: calico-node
  namespace: kube-system
---
# Source: calico/templates/calico-etcd-secrets.yaml
---
kind: DaemonSet
apiVersion: apps/v1
metadata:
  name: calico-node
  namespace: kube-system
spec:
  template:
    spec:
      tolerations:
        - effect: NoSchedule
          operator: Exists
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: ippools.crd.projectcalico.org
";

    #[test]
    fn documents_become_dynamic_objects_with_their_gvk() {
        let objs = parse(Path::new("calico.yaml"), MULTI).unwrap();
        let got: Vec<(String, String, String, String)> = objs
            .iter()
            .map(|o| {
                (
                    o.gvk.group.clone(),
                    o.gvk.version.clone(),
                    o.gvk.kind.clone(),
                    o.describe(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "".into(),
                    "v1".into(),
                    "ServiceAccount".into(),
                    "ServiceAccount kube-system/calico-node".into()
                ),
                (
                    "apps".into(),
                    "v1".into(),
                    "DaemonSet".into(),
                    "DaemonSet kube-system/calico-node".into()
                ),
                (
                    "apiextensions.k8s.io".into(),
                    "v1".into(),
                    "CustomResourceDefinition".into(),
                    "CustomResourceDefinition ippools.crd.projectcalico.org".into()
                ),
            ],
            "the comment-only document is skipped"
        );
        assert_eq!(objs[1].api_version(), "apps/v1");
        assert_eq!(objs[0].api_version(), "v1");
    }

    #[test]
    fn lines_are_lines_of_the_file() {
        let objs = parse(Path::new("calico.yaml"), MULTI).unwrap();
        assert_eq!(objs[0].line, 2, "first document starts after the comment");
        assert_eq!(
            objs[1].line, 10,
            "an object starts at its first line after the ---"
        );
        assert_eq!(objs[1].line_of("spec.template.spec.tolerations"), 19);
        assert_eq!(objs[1].line_of("metadata.name"), 13);
        assert_eq!(
            objs[1].line_of("spec.template.spec.nodeSelector"),
            18,
            "a missing field falls back to its deepest existing parent"
        );
        assert_eq!(
            objs[1].get("spec.template.spec.tolerations").unwrap()[0]["operator"],
            "Exists"
        );
    }

    #[test]
    fn list_items_are_objects_with_an_item_prefix() {
        let text = "\
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: ServiceAccount
    metadata:
      name: weave-net
      namespace: kube-system
  - apiVersion: extensions/v1beta1
    kind: DaemonSet
    metadata:
      name: weave-net
      namespace: kube-system
    spec:
      template:
        spec:
          serviceAccountName: weave-net
";
        let objs = parse(Path::new("weave.yaml"), text).unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[1].prefix, "items[1]");
        assert_eq!(
            objs[1].gvk,
            GroupVersionKind::gvk("extensions", "v1beta1", "DaemonSet")
        );
        assert_eq!(objs[1].line, 9);
        assert_eq!(objs[1].line_of("spec.template.spec.serviceAccountName"), 17);
        assert_eq!(objs[0].line_of(""), 4);
    }

    #[test]
    fn broken_documents_are_located_errors() {
        let e = parse(Path::new("x.yaml"), "apiVersion: v1\nkind: [unclosed\n").unwrap_err();
        assert!(matches!(e, ManifestError::Syntax { line: 3, .. }), "{e}");
        let e = parse(
            Path::new("x.yaml"),
            "apiVersion: v1\nkind: ConfigMap\n---\nmetadata: {name: x}\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.yaml:4: not a Kubernetes object: apiVersion and kind are required"
        );
        let e = parse(Path::new("x.yaml"), "- a\n- b\n").unwrap_err();
        assert!(e.to_string().contains("not a mapping"), "{e}");
    }

    #[test]
    fn markers_split_documents_only_at_the_start_of_a_line() {
        let text = "\
a: 1
--- # first
b: '--- not a marker'
c: |
  ---
...
d: 2
---
";
        let docs: Vec<(usize, String)> = documents(text)
            .into_iter()
            .filter(|(_, d)| !d.is_empty())
            .collect();
        assert_eq!(docs.len(), 4, "{docs:?}");
        assert_eq!(docs[0], (0, "a: 1\n".to_string()));
        assert_eq!(docs[1].0, 1);
        assert!(
            docs[1].1.contains("  ---\n"),
            "indented --- stays in its block scalar"
        );
        assert_eq!(docs[2], (6, "d: 2\n".to_string()), "... ends a document");
        assert_eq!(docs[3], (7, "---\n".to_string()));
        let objs = parse(Path::new("x.yaml"), text).unwrap_err();
        assert!(
            objs.to_string()
                .starts_with("x.yaml:1: not a Kubernetes object"),
            "documents are parsed one by one: {objs}"
        );
    }

    #[test]
    fn documents_marked_yaml_rejects_still_parse() {
        // Calico's CRDs continue quoted scalars at the key's own indentation; Kubernetes
        // (go-yaml) and serde_yaml accept it, marked-yaml does not.
        let text = "\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: x.crd.projectcalico.org
spec:
  versions:
    - schema:
        openAPIV3Schema:
          properties:
            apiVersion:
              description: 'APIVersion defines the versioned schema of this representation
              of an object.'
              type: string
";
        let objs = parse(Path::new("crd.yaml"), text).unwrap();
        assert_eq!(objs[0].name(), "x.crd.projectcalico.org");
        assert_eq!(
            objs[0]
                .get("spec.versions")
                .and_then(
                    |v| v[0]["schema"]["openAPIV3Schema"]["properties"]["apiVersion"]
                        ["description"]
                        .as_str()
                ),
            Some("APIVersion defines the versioned schema of this representation of an object.")
        );
    }

    #[test]
    fn anchors_still_parse_without_positions() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: &m\n  name: x\ndata:\n  a: b\n";
        let objs = parse(Path::new("x.yaml"), text).unwrap();
        assert_eq!(objs[0].name(), "x");
        assert_eq!(
            objs[0].line_of("data.a"),
            1,
            "no positions: the object's line"
        );
    }
}
