//! Multi-document manifests as the API server sees them: each document (and each item of a
//! `kind: List`) becomes a [`DynamicObject`] with its group, version and kind, and keeps its
//! location so a finding can name the line of any field.
//!
//! Document boundaries come from the YAML parser's events (yaml-rust2, which marked-yaml is
//! built on); each document is then read twice: by serde_yaml for the object and by
//! marked-yaml (through [`Located`]) for positions.

use crate::config::Located;
use kube::api::{DynamicObject, GroupVersionKind, TypeMeta};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

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

/// Collects the line each document starts on.
struct DocumentStarts(Vec<usize>);

impl MarkedEventReceiver for DocumentStarts {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if ev == Event::DocumentStart {
            self.0.push(mark.line());
        }
    }
}

/// The 1-based first line of every document of `text`.
fn document_starts(file: &Path, text: &str) -> Result<Vec<usize>, ManifestError> {
    let mut starts = DocumentStarts(Vec::new());
    Parser::new_from_str(text)
        .load(&mut starts, true)
        .map_err(|e| ManifestError::Syntax {
            file: file.to_path_buf(),
            line: e.marker().line(),
            message: e.info().to_string(),
        })?;
    Ok(starts.0)
}

/// Parses the objects of a multi-document manifest named `file`. Empty documents are
/// skipped; a `kind: List` contributes its items.
pub fn parse(file: &Path, text: &str) -> Result<Vec<ManifestObject>, ManifestError> {
    let starts = document_starts(file, text)?;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out = Vec::new();
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(lines.len() + 1);
        let first = start.saturating_sub(1).min(lines.len());
        let last = end.saturating_sub(1).clamp(first, lines.len());
        let doc: String = lines[first..last].concat();
        let value: serde_yaml::Value =
            serde_yaml::from_str(&doc).map_err(|e| ManifestError::Syntax {
                file: file.to_path_buf(),
                line: first + e.location().map(|l| l.line()).unwrap_or(1),
                message: e.to_string(),
            })?;
        if value.is_null() {
            continue;
        }
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
        assert_eq!(objs[1].line, 9, "a document starts at its ---");
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
            "x.yaml:3: not a Kubernetes object: apiVersion and kind are required"
        );
        let e = parse(Path::new("x.yaml"), "- a\n- b\n").unwrap_err();
        assert!(e.to_string().contains("not a mapping"), "{e}");
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
