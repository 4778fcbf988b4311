//! What changes between Kubernetes releases that the harness renders for: the registry and
//! image names kubeadm pulls, the container runtime, how kubelet is configured, and cgroup
//! rules. One table of facts, each with its source in `shared/ERAS.md`; everything rendered
//! reads from here, never from guesses at the call site.

use super::KubeVersion;

/// How the node's kubelet talks to containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// Docker through kubelet's built-in dockershim (1.6-1.23; the only choice in 1.6).
    Docker,
    /// containerd's CRI plugin (from 1.10 with containerd 1.1+; the only choice from 1.24).
    Containerd,
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
        })
    }
}

/// The runtimes a release's kubelet can use: dockershim was removed in 1.24; containerd's
/// CRI needs 1.10+ (1.7-1.9 needed the separate cri-containerd, which nodes do not carry).
pub fn runtimes_for(v: &KubeVersion) -> Vec<Runtime> {
    let mut r = Vec::new();
    if v.minor <= 23 {
        r.push(Runtime::Docker);
    }
    if v.minor >= 10 {
        r.push(Runtime::Containerd);
    }
    r
}

/// The runtime a release uses when the scenario does not say: containerd where it exists.
pub fn default_runtime(v: &KubeVersion) -> Runtime {
    if v.minor >= 10 {
        Runtime::Containerd
    } else {
        Runtime::Docker
    }
}

/// The registry kubeadm pulls from by default: `gcr.io/google_containers` up to 1.9,
/// `k8s.gcr.io` 1.10-1.24, `registry.k8s.io` from 1.25 (late 1.22-1.24 patches switched too,
/// e.g. v1.23.15, v1.24.9, v1.22.17).
pub fn default_registry(v: &KubeVersion) -> &'static str {
    let late_patch =
        |minor: u32, patch: u32| v.minor == minor && v.patch.is_some_and(|p| p >= patch);
    match v.minor {
        ..=9 => "gcr.io/google_containers",
        25.. => "registry.k8s.io",
        _ if late_patch(22, 17) || late_patch(23, 15) || late_patch(24, 9) => "registry.k8s.io",
        _ => "k8s.gcr.io",
    }
}

/// The name kubeadm gives a control-plane image: `kube-apiserver-amd64` up to 1.11, no
/// architecture suffix from 1.12 (manifest lists).
pub fn control_plane_image_name(v: &KubeVersion, component: &str) -> String {
    if v.minor <= 11 {
        format!("{component}-amd64")
    } else {
        component.to_string()
    }
}

/// An image tag for a version: tags cannot hold `+`, the release tooling writes `_`.
pub fn image_tag(raw_version: &str) -> String {
    raw_version.replace('+', "_")
}

/// The full reference kubeadm pulls for a control-plane component.
pub fn control_plane_image(
    v: &KubeVersion,
    raw_version: &str,
    repository: &str,
    component: &str,
) -> String {
    format!(
        "{repository}/{}:{}",
        control_plane_image_name(v, component),
        image_tag(raw_version)
    )
}

/// The pause image tag of releases whose kubeadm cannot list its images (before 1.11; later
/// releases are asked with `kubeadm config images list`): 3.0 up to 1.9, 3.1 in 1.10.
pub fn pause_tag_before_1_11(v: &KubeVersion) -> Option<&'static str> {
    match v.minor {
        ..=9 => Some("3.0"),
        10 => Some("3.1"),
        _ => None,
    }
}

/// The agnhost image smoke checks pull when images are not preloaded. It is a workload,
/// not part of the release, so one tag serves every release; only the registry follows the
/// era (`k8s.gcr.io` is frozen; `registry.k8s.io` serves the same images).
pub fn agnhost_image(v: &KubeVersion, tag: &str) -> String {
    let registry = if v.minor >= 25 {
        "registry.k8s.io"
    } else {
        "k8s.gcr.io"
    };
    format!("{registry}/e2e-test-images/agnhost:{tag}")
}

/// How kubelet gets its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeletConfigMode {
    /// Every setting is a flag in the systemd drop-in (1.6-1.10): kubeadm writes no
    /// `/var/lib/kubelet/config.yaml` and no `kubeadm-flags.env`.
    FlagsOnly,
    /// kubeadm writes `/var/lib/kubelet/config.yaml` and `kubeadm-flags.env` (1.11+).
    ConfigFile,
}

pub fn kubelet_config_mode(v: &KubeVersion) -> KubeletConfigMode {
    if v.minor >= 11 {
        KubeletConfigMode::ConfigFile
    } else {
        KubeletConfigMode::FlagsOnly
    }
}

/// The kubelet drop-in's `ExecStart` flags for a flags-only release (1.6-1.10), as the
/// kubeadm packages of that era shipped them: `--require-kubeconfig` until 1.9 (removed in
/// 1.10), bootstrap and certificate rotation from 1.8, `--cadvisor-port=0` throughout.
/// `cgroup-driver` and `fail-swap-on` as a container node needs them (`--fail-swap-on`
/// exists from 1.8 only).
pub fn kubelet_flags(v: &KubeVersion, runtime: Runtime, cluster_dns: &str) -> Vec<String> {
    let mut f: Vec<String> = Vec::new();
    if v.minor >= 8 {
        f.push("--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf".into());
    }
    f.push("--kubeconfig=/etc/kubernetes/kubelet.conf".into());
    if v.minor <= 9 {
        f.push("--require-kubeconfig=true".into());
    }
    f.extend([
        "--pod-manifest-path=/etc/kubernetes/manifests".to_string(),
        "--allow-privileged=true".into(),
        "--network-plugin=cni".into(),
        "--cni-conf-dir=/etc/cni/net.d".into(),
        // Debian's containernetworking-plugins, in the node image (weave and calico add
        // their own there too).
        "--cni-bin-dir=/usr/lib/cni".into(),
        format!("--cluster-dns={cluster_dns}"),
        "--cluster-domain=cluster.local".into(),
        "--authorization-mode=Webhook".into(),
        "--client-ca-file=/etc/kubernetes/pki/ca.crt".into(),
        "--cadvisor-port=0".into(),
        "--cgroup-driver=cgroupfs".into(),
    ]);
    if v.minor >= 8 {
        f.extend([
            "--rotate-certificates=true".to_string(),
            "--cert-dir=/var/lib/kubelet/pki".into(),
            "--fail-swap-on=false".into(),
        ]);
    }
    if runtime == Runtime::Containerd {
        f.extend([
            "--container-runtime=remote".to_string(),
            "--container-runtime-endpoint=unix:///run/containerd/containerd.sock".into(),
        ]);
    }
    f
}

/// Whether kubelet refuses a cgroup v1 host unless `failCgroupV1: false` is set (1.35+).
pub fn refuses_cgroup_v1(v: &KubeVersion) -> bool {
    v.minor >= 35
}

/// kubeadm's default cgroup driver: `systemd` from 1.22. Nodes here run `cgroupfs`, so it
/// is always set explicitly.
pub fn kubeadm_default_cgroup_driver(v: &KubeVersion) -> &'static str {
    if v.minor >= 22 {
        "systemd"
    } else {
        "cgroupfs"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> KubeVersion {
        s.parse().unwrap()
    }

    #[test]
    fn release_1_6_needs_dockershim() {
        assert_eq!(runtimes_for(&v("v1.6.13")), vec![Runtime::Docker]);
        assert_eq!(default_runtime(&v("v1.6.13")), Runtime::Docker);
        assert_eq!(
            runtimes_for(&v("v1.20.2")),
            vec![Runtime::Docker, Runtime::Containerd]
        );
        assert_eq!(runtimes_for(&v("v1.24.0")), vec![Runtime::Containerd]);
    }

    #[test]
    fn release_1_6_image_names_are_those_kubeadm_1_6_pulls() {
        let r = v("v1.6.13");
        let repo = default_registry(&r);
        assert_eq!(repo, "gcr.io/google_containers");
        assert_eq!(
            control_plane_image(&r, "v1.6.13", repo, "kube-apiserver"),
            "gcr.io/google_containers/kube-apiserver-amd64:v1.6.13"
        );
        assert_eq!(
            control_plane_image(&r, "v1.6.13", repo, "kube-proxy"),
            "gcr.io/google_containers/kube-proxy-amd64:v1.6.13"
        );
        let n = v("v1.20.2");
        assert_eq!(
            control_plane_image(&n, "v1.20.2", default_registry(&n), "kube-scheduler"),
            "k8s.gcr.io/kube-scheduler:v1.20.2"
        );
        assert_eq!(
            image_tag("v1.21.0-rc.0.12+abcdef"),
            "v1.21.0-rc.0.12_abcdef"
        );
    }

    #[test]
    fn registries_by_era() {
        assert_eq!(default_registry(&v("v1.9.11")), "gcr.io/google_containers");
        assert_eq!(default_registry(&v("v1.10.0")), "k8s.gcr.io");
        assert_eq!(default_registry(&v("v1.23.14")), "k8s.gcr.io");
        assert_eq!(default_registry(&v("v1.23.15")), "registry.k8s.io");
        assert_eq!(default_registry(&v("v1.25.0")), "registry.k8s.io");
        assert_eq!(
            control_plane_image_name(&v("v1.11.0"), "etcd"),
            "etcd-amd64"
        );
        assert_eq!(control_plane_image_name(&v("v1.12.0"), "etcd"), "etcd");
    }

    #[test]
    fn release_1_6_kubelet_takes_flags_only() {
        let r = v("v1.6.13");
        assert_eq!(kubelet_config_mode(&r), KubeletConfigMode::FlagsOnly);
        assert_eq!(
            kubelet_config_mode(&v("v1.11.0")),
            KubeletConfigMode::ConfigFile
        );
        let f = kubelet_flags(&r, Runtime::Docker, "10.96.0.10");
        for want in [
            "--kubeconfig=/etc/kubernetes/kubelet.conf",
            "--require-kubeconfig=true",
            "--pod-manifest-path=/etc/kubernetes/manifests",
            "--allow-privileged=true",
            "--network-plugin=cni",
            "--cluster-dns=10.96.0.10",
            "--cadvisor-port=0",
        ] {
            assert!(f.iter().any(|x| x == want), "missing {want}: {f:?}");
        }
        // Flags 1.6 does not know would stop it from starting.
        for absent in [
            "--fail-swap-on",
            "--bootstrap-kubeconfig",
            "--rotate-certificates",
            "--config",
            "--container-runtime",
        ] {
            assert!(
                !f.iter().any(|x| x.starts_with(absent)),
                "{absent} in {f:?}"
            );
        }
        // 1.8-1.10 bootstrap; 1.10 lost --require-kubeconfig.
        let f10 = kubelet_flags(&v("v1.10.13"), Runtime::Containerd, "10.96.0.10");
        assert!(f10.iter().any(|x| x.starts_with("--bootstrap-kubeconfig")));
        assert!(!f10.iter().any(|x| x.starts_with("--require-kubeconfig")));
        assert!(f10.iter().any(|x| x == "--container-runtime=remote"));
    }

    #[test]
    fn images_kubeadm_cannot_list() {
        assert_eq!(pause_tag_before_1_11(&v("v1.6.13")), Some("3.0"));
        assert_eq!(pause_tag_before_1_11(&v("v1.10.0")), Some("3.1"));
        assert_eq!(pause_tag_before_1_11(&v("v1.20.2")), None);
        assert_eq!(
            agnhost_image(&v("v1.20.2"), "2.21"),
            "k8s.gcr.io/e2e-test-images/agnhost:2.21"
        );
        assert!(agnhost_image(&v("v1.30.0"), "2.21").starts_with("registry.k8s.io/"));
    }

    #[test]
    fn cgroup_rules() {
        assert!(!refuses_cgroup_v1(&v("v1.34.0")));
        assert!(refuses_cgroup_v1(&v("v1.35.0")));
        assert_eq!(kubeadm_default_cgroup_driver(&v("v1.21.0")), "cgroupfs");
        assert_eq!(kubeadm_default_cgroup_driver(&v("v1.22.0")), "systemd");
    }
}
