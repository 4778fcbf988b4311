//! Where a cluster's images come from, and the names every component uses for them: kubeadm's
//! `imageRepository`, containerd's sandbox image and registry mirrors, the agnhost image smoke
//! runs. Three shapes: everything preloaded from this machine's build (`shakedown.local/*`),
//! everything pulled under upstream names (through mirrors where given), or a release's
//! control-plane images preloaded from its server tarball and the rest pulled.

use crate::release::mirror::{path_in_registry, registry_of, Mirror};
use std::fmt::Write;
use std::path::PathBuf;

/// The containerd configuration baked into the node image.
pub const NODE_CONTAINERD_CONFIG: &str =
    include_str!("../../assets/node/etc/containerd/config.toml");
/// Where containerd reads per-registry `hosts.toml` files once configured to.
pub const CERTS_D: &str = "/etc/containerd/certs.d";

/// Whether kubeadm installs its DNS addon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsAddon {
    Install,
    /// Skipped, and why (the image can be neither loaded nor pulled).
    Skip(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSet {
    /// kubeadm's `imageRepository`.
    pub repository: String,
    /// kubeadm's `etcd.local.imageTag`, where the etcd image is not the one kubeadm picks.
    pub etcd_tag: Option<String>,
    /// The pod sandbox image (containerd's `sandbox_image`).
    pub pause: String,
    /// The image smoke checks run.
    pub agnhost: String,
    /// A `docker save` tarball every node imports (None: every image is pulled).
    pub preload: Option<PathBuf>,
    /// Whether agnhost is in `preload`.
    pub agnhost_preloaded: bool,
    pub mirrors: Vec<Mirror>,
    pub dns: DnsAddon,
}

impl ImageSet {
    /// Everything preloaded from this machine's build, named `shakedown.local/*`.
    pub fn local(preload: PathBuf) -> ImageSet {
        ImageSet {
            repository: super::IMAGE_REPO.into(),
            etcd_tag: Some(super::ETCD_TAG.into()),
            pause: format!("{}/pause:{}", super::IMAGE_REPO, super::PAUSE_TAG),
            agnhost: format!("{}/agnhost:{}", super::IMAGE_REPO, super::AGNHOST_TAG),
            preload: Some(preload),
            agnhost_preloaded: true,
            mirrors: Vec::new(),
            // No CoreDNS image can be built on this machine.
            dns: DnsAddon::Skip("no CoreDNS image can be built on this machine".into()),
        }
    }

    /// The pull policy for smoke pods: preloaded images are never pulled, so a missing one
    /// fails at once instead of waiting on a registry.
    pub fn pull_policy(&self) -> &'static str {
        if self.agnhost_preloaded {
            "Never"
        } else {
            "IfNotPresent"
        }
    }

    /// Whether nodes need a containerd configuration other than the one baked in.
    pub fn needs_node_config(&self) -> bool {
        !self.mirrors.is_empty() || !baked_sandbox_line().contains(&format!("\"{}\"", self.pause))
    }

    /// The mirror serving `image`, if any.
    pub fn mirror_for(&self, image: &str) -> Option<&Mirror> {
        let reg = registry_of(image);
        self.mirrors.iter().find(|m| m.registry == reg)
    }

    /// The URL of `image`'s manifest on its mirror (for a reachability probe).
    pub fn mirror_manifest_url(&self, image: &str) -> Option<String> {
        let m = self.mirror_for(image)?;
        let path = path_in_registry(image);
        let (repo, tag) = path.rsplit_once(':')?;
        Some(format!("{}/v2/{repo}/manifests/{tag}", m.endpoint))
    }

    /// Files to write into every node: containerd's config and a `hosts.toml` per mirror.
    pub fn node_files(&self) -> Vec<(String, String)> {
        let mut files = vec![(
            "/etc/containerd/config.toml".to_string(),
            containerd_config(&self.pause, !self.mirrors.is_empty()),
        )];
        for m in &self.mirrors {
            files.push((
                format!("{CERTS_D}/{}/hosts.toml", m.registry),
                hosts_toml(m),
            ));
        }
        files
    }
}

fn baked_sandbox_line() -> &'static str {
    NODE_CONTAINERD_CONFIG
        .lines()
        .find(|l| l.trim_start().starts_with("sandbox_image"))
        .unwrap_or("")
}

/// The node's containerd config with another sandbox image and, with mirrors, the folder of
/// `hosts.toml` files.
pub fn containerd_config(pause: &str, mirrors: bool) -> String {
    let mut out = String::new();
    for line in NODE_CONTAINERD_CONFIG.lines() {
        if line.trim_start().starts_with("sandbox_image") {
            let indent = &line[..line.len() - line.trim_start().len()];
            let _ = writeln!(out, "{indent}sandbox_image = \"{pause}\"");
        } else {
            let _ = writeln!(out, "{line}");
        }
    }
    if mirrors {
        let _ = write!(
            out,
            "\n  [plugins.\"io.containerd.grpc.v1.cri\".registry]\n    config_path = \"{CERTS_D}\"\n"
        );
    }
    out
}

/// A registry's `hosts.toml`: the mirror is the only place pulls go (`server` is the mirror
/// too), so nothing falls back to the upstream registry.
pub fn hosts_toml(m: &Mirror) -> String {
    format!(
        "# {m}: pulls of {reg} go to the mirror only.\nserver = \"{ep}\"\n\n[host.\"{ep}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        reg = m.registry,
        ep = m.endpoint
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pulled() -> ImageSet {
        ImageSet {
            repository: "k8s.gcr.io".into(),
            etcd_tag: None,
            pause: "k8s.gcr.io/pause:3.2".into(),
            agnhost: "k8s.gcr.io/e2e-test-images/agnhost:2.21".into(),
            preload: None,
            agnhost_preloaded: false,
            mirrors: vec!["k8s.gcr.io=http://172.17.0.1:5000".parse().unwrap()],
            dns: DnsAddon::Install,
        }
    }

    #[test]
    fn containerd_config_swaps_the_sandbox_and_adds_the_mirror_folder() {
        let c = containerd_config("k8s.gcr.io/pause:3.2", true);
        let v: toml::Table = c.parse().unwrap();
        let cri = &v["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(cri["sandbox_image"].as_str(), Some("k8s.gcr.io/pause:3.2"));
        assert_eq!(cri["registry"]["config_path"].as_str(), Some(CERTS_D));
        // Everything else of the baked config stays.
        assert!(c.contains("restrict_oom_score_adj = true"));
        assert!(c.contains("SystemdCgroup = false"));
        let plain = containerd_config("shakedown.local/pause:3.4.1", false);
        assert!(!plain.contains("config_path"));
    }

    #[test]
    fn hosts_toml_never_falls_back_upstream() {
        let h = hosts_toml(&"docker.io=http://10.0.0.1:5000".parse().unwrap());
        let t: toml::Table = h.parse().unwrap();
        assert_eq!(t["server"].as_str(), Some("http://10.0.0.1:5000"));
        assert_eq!(
            t["host"]["http://10.0.0.1:5000"]["capabilities"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        assert!(h.contains("server = \"http://10.0.0.1:5000\""));
        assert!(h.contains("[host.\"http://10.0.0.1:5000\"]"));
    }

    #[test]
    fn pulled_sets_configure_nodes_and_pull_if_absent() {
        let s = pulled();
        assert!(s.needs_node_config());
        assert_eq!(s.pull_policy(), "IfNotPresent");
        let files = s.node_files();
        assert_eq!(files.len(), 2);
        assert_eq!(files[1].0, "/etc/containerd/certs.d/k8s.gcr.io/hosts.toml");
        assert_eq!(
            s.mirror_manifest_url("k8s.gcr.io/coredns:1.7.0").as_deref(),
            Some("http://172.17.0.1:5000/v2/coredns/manifests/1.7.0")
        );
        assert_eq!(
            s.mirror_manifest_url("docker.io/weaveworks/weave-kube:2.8.1"),
            None
        );
    }

    #[test]
    fn the_baked_set_needs_no_node_config() {
        let s = ImageSet::local("/cache/images.tar".into());
        assert!(!s.needs_node_config());
        assert_eq!(s.pull_policy(), "Never");
    }
}
