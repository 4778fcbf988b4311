//! CNI variants as data: `cni-variants/<name>/variant.yaml` says which Kubernetes versions a
//! variant supports, which manifests and images each release range uses, and how to tell it
//! is ready. Third-party manifests live in `cni-variants/<name>/<version>/`, vendored from
//! the projects' releases.

pub mod apis;
pub mod apply;
pub mod bridge;
pub mod lint;
pub mod manifest;

use crate::config::{self, ConfigErrors, Located};
use crate::release::KubeVersion;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// False for variants the harness renders itself (bridge).
    pub third_party: bool,
    /// How the variant is put on a cluster.
    pub apply: ApplyMethod,
    pub pod_cidr: PodCidr,
    pub ready: Readiness,
    /// Release ranges; the first whose range contains the version is used.
    pub releases: Vec<Release>,
    /// Why its pods cannot run on a machine without a registry, if so.
    #[serde(default)]
    pub offline_limitation: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApplyMethod {
    /// The harness writes a bridge conflist on each node and routes between nodes.
    RenderedBridge,
    /// Nothing is applied: nodes must stay NotReady (reproduces the 1.6.0 hang on purpose).
    Nothing,
    /// The release's manifests are applied through the API server.
    Manifests,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PodCidr {
    /// The variant allocates pod addresses from each node's `spec.podCIDR`, so kubeadm must
    /// set `networking.podSubnet`.
    pub uses_node_cidrs: bool,
    /// The range the variant uses by default when it allocates on its own.
    #[serde(default)]
    pub default: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Readiness {
    #[serde(default)]
    pub daemonset: Option<NamespacedName>,
    /// Node condition that must be True on every node.
    pub node_condition: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NamespacedName {
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub kubernetes: VersionRange,
    /// The variant's own release, e.g. `2.8.1`; `builtin` for rendered variants.
    pub version: String,
    /// Where the manifests were published.
    #[serde(default)]
    pub source: Option<String>,
    /// Manifest files, relative to the variant folder.
    #[serde(default)]
    pub manifests: Vec<PathBuf>,
    #[serde(default)]
    pub images: Vec<String>,
}

/// Inclusive range of minor releases; `max` unset means "and later".
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VersionRange {
    pub min: String,
    #[serde(default)]
    pub max: Option<String>,
}

impl VersionRange {
    pub fn contains(&self, v: Option<&KubeVersion>) -> bool {
        let (Ok(min), max) = (self.min.parse::<KubeVersion>(), self.max.as_deref()) else {
            return false;
        };
        let max = max.and_then(|m| m.parse::<KubeVersion>().ok());
        match v {
            // An unresolved marker such as `latest`: only an open-ended range covers it.
            None => max.is_none(),
            Some(v) => {
                let v = v.minor_line();
                v >= min.minor_line() && max.is_none_or(|m| v <= m.minor_line())
            }
        }
    }
}

impl std::fmt::Display for VersionRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.max {
            Some(max) => write!(f, "{}..={}", self.min, max),
            None => write!(f, "{} and later", self.min),
        }
    }
}

impl Variant {
    /// The release range that serves `v` (`None` = the newest, unresolved version).
    pub fn release_for(&self, v: Option<&KubeVersion>) -> Option<&Release> {
        self.releases.iter().find(|r| r.kubernetes.contains(v))
    }

    pub fn supported_ranges(&self) -> String {
        self.releases
            .iter()
            .map(|r| r.kubernetes.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// All variants found under `cni-variants/`.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub variants: BTreeMap<String, (Variant, PathBuf)>,
}

impl Catalog {
    pub fn load(dir: &Path) -> Result<Catalog, ConfigErrors> {
        let mut catalog = Catalog::default();
        let mut errors = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|e| {
            ConfigErrors::single(config::ConfigError {
                file: dir.to_path_buf(),
                line: 0,
                column: 0,
                field: String::new(),
                message: format!("failed to read CNI variants folder: {e}"),
            })
        })?;
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("variant.yaml").is_file())
            .collect();
        dirs.sort();
        for d in dirs {
            let file = d.join("variant.yaml");
            match config::load_file::<Variant>(&file) {
                Ok((v, loc)) => {
                    errors.extend(check_variant(&v, &d, &loc));
                    catalog.variants.insert(v.name.clone(), (v, d));
                }
                Err(e) => errors.extend(e.0),
            }
        }
        if errors.is_empty() {
            Ok(catalog)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    pub fn get(&self, name: &str) -> Option<&Variant> {
        self.variants.get(name).map(|(v, _)| v)
    }

    pub fn dir(&self, name: &str) -> Option<&Path> {
        self.variants.get(name).map(|(_, d)| d.as_path())
    }

    pub fn names(&self) -> Vec<&str> {
        self.variants.keys().map(String::as_str).collect()
    }
}

fn check_variant(v: &Variant, dir: &Path, loc: &Located) -> Vec<config::ConfigError> {
    let mut errors = Vec::new();
    let folder = dir.file_name().and_then(|f| f.to_str()).unwrap_or_default();
    if v.name != folder {
        errors.push(loc.error(
            "name",
            format!("variant name {:?} must match its folder {folder:?}", v.name),
        ));
    }
    for (i, r) in v.releases.iter().enumerate() {
        for (field, val) in [
            ("min", Some(&r.kubernetes.min)),
            ("max", r.kubernetes.max.as_ref()),
        ] {
            if let Some(val) = val {
                if let Err(e) = val.parse::<KubeVersion>() {
                    errors.push(
                        loc.error(&format!("releases[{i}].kubernetes.{field}"), e.to_string()),
                    );
                }
            }
        }
        for (j, m) in r.manifests.iter().enumerate() {
            let field = format!("releases[{i}].manifests[{j}]");
            if !dir.join(m).is_file() {
                errors.push(loc.error(
                    &field,
                    format!("manifest {} does not exist", dir.join(m).display()),
                ));
            }
            let mut parts = m.components();
            let in_version_folder = matches!(
                (parts.next(), parts.next()),
                (Some(std::path::Component::Normal(first)), Some(_)) if first == r.version.as_str()
            );
            if !in_version_folder {
                errors.push(loc.error(
                    &field,
                    format!(
                        "manifest {} must be in the release's own folder: {}/<file>",
                        m.display(),
                        r.version
                    ),
                ));
            }
        }
        if v.apply == ApplyMethod::Manifests && r.manifests.is_empty() {
            errors.push(loc.error(
                &format!("releases[{i}].manifests"),
                "a variant applied from manifests needs at least one manifest per release",
            ));
        }
        if v.third_party && r.images.is_empty() {
            errors.push(loc.error(
                &format!("releases[{i}].images"),
                "a third-party release must list its images, so missing ones fail before apply",
            ));
        }
    }
    if v.apply == ApplyMethod::Manifests && v.ready.daemonset.is_none() {
        errors.push(loc.error(
            "ready.daemonset",
            "a variant applied from manifests needs the DaemonSet that says it is ready",
        ));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(min: &str, max: Option<&str>) -> VersionRange {
        VersionRange {
            min: min.into(),
            max: max.map(Into::into),
        }
    }

    fn check(dir: &Path, yaml: &str) -> Vec<String> {
        let file = dir.join("variant.yaml");
        std::fs::write(&file, yaml).unwrap();
        let (v, loc) = config::load_file::<Variant>(&file).unwrap();
        check_variant(&v, dir, &loc)
            .into_iter()
            .map(|e| format!("{}:{}: {}", e.line, e.field, e.message))
            .collect()
    }

    #[test]
    fn manifests_live_in_their_release_folder_and_need_a_daemonset_to_wait_for() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("flannel");
        std::fs::create_dir_all(dir.join("v0.13.0")).unwrap();
        std::fs::write(dir.join("v0.13.0/kube-flannel.yaml"), "").unwrap();
        std::fs::write(dir.join("kube-flannel.yaml"), "").unwrap();
        let base = "name: flannel\nthird_party: true\napply: manifests\npod_cidr: {uses_node_cidrs: true}\n";
        let good = format!(
            "{base}ready: {{daemonset: {{namespace: kube-system, name: kube-flannel-ds}}, node_condition: Ready}}\nreleases:\n  - kubernetes: {{min: \"1.17\"}}\n    version: v0.13.0\n    manifests: [v0.13.0/kube-flannel.yaml]\n    images: [quay.io/coreos/flannel:v0.13.0]\n"
        );
        assert_eq!(check(&dir, &good), Vec::<String>::new());
        let bad = format!(
            "{base}ready: {{node_condition: Ready}}\nreleases:\n  - kubernetes: {{min: \"1.17\"}}\n    version: v0.13.0\n    manifests: [kube-flannel.yaml]\n  - kubernetes: {{min: \"1.6\", max: \"1.7\"}}\n    version: v0.7.0\n    images: [quay.io/coreos/flannel:v0.7.0]\n"
        );
        assert_eq!(
            check(&dir, &bad),
            vec![
                "9:releases[0].manifests[0]: manifest kube-flannel.yaml must be in the release's own folder: v0.13.0/<file>",
                "7:releases[0].images: a third-party release must list its images, so missing ones fail before apply",
                "10:releases[1].manifests: a variant applied from manifests needs at least one manifest per release",
                "5:ready.daemonset: a variant applied from manifests needs the DaemonSet that says it is ready",
            ]
        );
    }

    #[test]
    fn ranges_compare_minor_lines() {
        let r = range("1.6", Some("1.7"));
        let v = |s: &str| s.parse::<KubeVersion>().unwrap();
        assert!(r.contains(Some(&v("v1.6.13"))));
        assert!(r.contains(Some(&v("1.7"))));
        assert!(!r.contains(Some(&v("1.8"))));
        assert!(!r.contains(Some(&v("1.5.9"))));
        assert!(!r.contains(None), "a closed range cannot cover `latest`");
        assert!(range("1.11", None).contains(None));
        assert!(range("1.11", None).contains(Some(&v("1.30"))));
    }
}
