//! Registry mirrors: `REGISTRY=URL`, e.g. `registry.k8s.io=http://172.17.0.1:5000`. Pulls of
//! images named under REGISTRY go to URL instead, and only there: a node never falls back to
//! the upstream registry, so a trial with a local mirror never leaves the machine.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Mirror {
    /// The registry host images are named under, e.g. `k8s.gcr.io` or `docker.io`.
    pub registry: String,
    /// Where pulls go instead: `http://HOST:PORT` or `https://HOST[:PORT]`.
    pub endpoint: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("failed to read registry mirror {0:?}: expected REGISTRY=URL without user or password, e.g. registry.k8s.io=http://172.17.0.1:5000")]
pub struct MirrorError(pub String);

impl FromStr for Mirror {
    type Err = MirrorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MirrorError(s.to_string());
        let (registry, endpoint) = s.split_once('=').ok_or_else(err)?;
        let (registry, endpoint) = (registry.trim(), endpoint.trim().trim_end_matches('/'));
        let host_ok = !registry.is_empty()
            && registry
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
        let rest = endpoint
            .strip_prefix("http://")
            .or_else(|| endpoint.strip_prefix("https://"))
            .ok_or_else(err)?;
        if !host_ok || rest.is_empty() || rest.contains(['/', ' ', '"', '\'', '@']) {
            return Err(err());
        }
        Ok(Mirror {
            registry: registry.to_string(),
            endpoint: endpoint.to_string(),
        })
    }
}

impl TryFrom<String> for Mirror {
    type Error = MirrorError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Mirror> for String {
    fn from(m: Mirror) -> String {
        m.to_string()
    }
}

impl fmt::Display for Mirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.registry, self.endpoint)
    }
}

/// Mirrors as one line: `a=URL, b=URL`.
pub fn list(mirrors: &[Mirror]) -> String {
    mirrors
        .iter()
        .map(|m| m.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The registry host of an image reference, as containerd and docker read it: the first
/// path part when it has a dot or a port (or is `localhost`), else `docker.io`.
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// The repository path inside its registry, with the tag: `kube-apiserver:v1.20.2` for
/// `k8s.gcr.io/kube-apiserver:v1.20.2`, `library/busybox:1.29` for `busybox:1.29`.
pub fn path_in_registry(image: &str) -> String {
    let reg = registry_of(image);
    let rest = image
        .strip_prefix(reg)
        .map(|r| r.trim_start_matches('/'))
        .unwrap_or(image);
    if reg == "docker.io" && !rest.contains('/') {
        format!("library/{rest}")
    } else {
        rest.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_parse_and_print_back() {
        let m: Mirror = "registry.k8s.io=http://172.17.0.1:5000/".parse().unwrap();
        assert_eq!(m.registry, "registry.k8s.io");
        assert_eq!(m.endpoint, "http://172.17.0.1:5000");
        assert_eq!(m.to_string(), "registry.k8s.io=http://172.17.0.1:5000");
        for bad in [
            "registry.k8s.io",
            "=http://x",
            "k8s.gcr.io=ftp://x",
            "k8s.gcr.io=http://",
            "k8s.gcr.io=http://x/path",
            "a b=http://x",
            "k8s.gcr.io=http://x\"y",
            "k8s.gcr.io=http://user:pw@x",
        ] {
            assert!(bad.parse::<Mirror>().is_err(), "{bad}");
        }
    }

    #[test]
    fn registries_and_paths_as_containerd_reads_them() {
        assert_eq!(registry_of("k8s.gcr.io/pause:3.2"), "k8s.gcr.io");
        assert_eq!(registry_of("busybox:1.29"), "docker.io");
        assert_eq!(registry_of("weaveworks/weave-kube:2.8.1"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000/x:1"), "127.0.0.1:5000");
        assert_eq!(path_in_registry("busybox:1.29"), "library/busybox:1.29");
        assert_eq!(
            path_in_registry("k8s.gcr.io/e2e-test-images/agnhost:2.21"),
            "e2e-test-images/agnhost:2.21"
        );
        assert_eq!(
            path_in_registry("docker.io/calico/node:v3.17.1"),
            "calico/node:v3.17.1"
        );
    }
}
