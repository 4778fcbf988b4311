//! kubeadm configuration for each release's config API. The API version and its fields
//! differ across releases: v1alpha1 `MasterConfiguration` (1.6-1.10), v1beta2 (1.15-1.21),
//! v1beta3 (1.22+), v1beta4 (1.31+, extra args become name/value lists).

pub mod etcd;

use crate::release::{self, KubeVersion};
use std::fmt::Write;

/// What the harness knows about the cluster when it renders kubeadm's config.
#[derive(Debug, Clone)]
pub struct ClusterParams {
    pub version: KubeVersion,
    /// Group version to render, e.g. `kubeadm.k8s.io/v1beta2`.
    pub api: String,
    pub image_repository: String,
    pub etcd_image_tag: Option<String>,
    /// Whether kubeadm installs its DNS addon (false where the image cannot be had).
    pub dns_addon: bool,
    /// The version as released (`v1.21.0-rc.0`), for `kubernetesVersion`.
    pub raw_version: String,
    /// The nodes' runtime: kubeadm is told its CRI socket.
    pub runtime: release::era::Runtime,
    pub pod_subnet: String,
    pub service_subnet: String,
    pub rbac: bool,
    /// Where nodes reach the API server: the first control plane, or a load balancer once
    /// there are several control planes.
    pub control_plane_endpoint: String,
    /// Extra names and addresses for the API server certificate (host access).
    pub cert_sans: Vec<String>,
    pub token: String,
    /// Several control planes: the key that encrypts the certificates `kubeadm init
    /// --upload-certs` puts in the cluster, for `join --control-plane` to fetch.
    pub certificate_key: Option<String>,
    /// The client URLs of an external etcd (empty: kubeadm runs etcd on the control
    /// planes). Its CA and the API server's client certificate are at [`etcd::CA_CERT`],
    /// [`etcd::CLIENT_CERT`] and [`etcd::CLIENT_KEY`] on the first control plane.
    pub external_etcd: Vec<String>,
    /// How joining nodes find the cluster.
    pub discovery: crate::scenario::Discovery,
}

/// A node being initialised or joined.
#[derive(Debug, Clone)]
pub struct NodeParams {
    pub name: String,
    pub ip: String,
    pub control_plane: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("failed to pick the cluster DNS address: service subnet {0:?} is not an IPv4 CIDR")]
    ServiceSubnet(String),
    #[error("failed to render the join config of control plane {0}: no certificate key (init uploads certificates only when there is a load balancer)")]
    NoCertificateKey(String),
    #[error("failed to render an HA config: kubeadm {version} with {api} cannot upload certificates for other control planes (needs kubeadm.k8s.io/v1beta2, kubeadm 1.15 or later)")]
    NoCertificateUpload { version: KubeVersion, api: String },
    #[error("failed to render file-with-token discovery: {0} has no `discovery.file` (kubeadm.k8s.io/v1beta1 or later)")]
    NoDiscoveryFile(String),
    #[error("kubeadm {version} does not accept config API {api}; it accepts {accepted}")]
    Unsupported {
        version: KubeVersion,
        api: String,
        accepted: String,
    },
}

const CRI_SOCKET: &str = "/run/containerd/containerd.sock";
/// kubelet's built-in dockershim listens here (1.6-1.23).
const DOCKERSHIM_SOCKET: &str = "/var/run/dockershim.sock";

/// containerd's socket as a URL from 1.20 on (proven on v1.20.2 here; a bare path is
/// deprecated from 1.24), a bare path before; dockershim's as kubeadm's own default names it.
fn cri_socket(p: &ClusterParams) -> String {
    match p.runtime {
        release::era::Runtime::Docker => DOCKERSHIM_SOCKET.to_string(),
        release::era::Runtime::Containerd if p.version.minor >= 20 => {
            format!("unix://{CRI_SOCKET}")
        }
        release::era::Runtime::Containerd => CRI_SOCKET.to_string(),
    }
}

/// Whether this config API carries `certificateKey` (v1beta2 on).
fn has_certificate_key(api: &str) -> bool {
    !matches!(
        api,
        "kubeadm.k8s.io/v1alpha1"
            | "kubeadm.k8s.io/v1alpha2"
            | "kubeadm.k8s.io/v1alpha3"
            | "kubeadm.k8s.io/v1beta1"
    )
}

pub(crate) fn check(p: &ClusterParams) -> Result<(), RenderError> {
    if p.certificate_key.is_some() && !has_certificate_key(&p.api) {
        return Err(RenderError::NoCertificateUpload {
            version: p.version,
            api: p.api.clone(),
        });
    }
    let accepted = release::kubeadm_apis_for(&p.version);
    if accepted.contains(&p.api.as_str()) {
        Ok(())
    } else {
        Err(RenderError::Unsupported {
            version: p.version,
            api: p.api.clone(),
            accepted: accepted.join(", "),
        })
    }
}

/// `key: value` pairs as a map (up to v1beta3) or as a name/value list (v1beta4).
pub(crate) fn extra_args(
    out: &mut String,
    indent: &str,
    key: &str,
    args: &[(&str, String)],
    as_list: bool,
) {
    if args.is_empty() {
        return;
    }
    let _ = writeln!(out, "{indent}{key}:");
    for (k, v) in args {
        if as_list {
            let _ = writeln!(out, "{indent}- name: {k}\n{indent}  value: \"{v}\"");
        } else {
            let _ = writeln!(out, "{indent}  {k}: \"{v}\"");
        }
    }
}

fn kubelet_args(p: &ClusterParams, node: &NodeParams) -> Vec<(&'static str, String)> {
    let mut a = vec![("node-ip", node.ip.clone())];
    if p.runtime == release::era::Runtime::Docker {
        // dockershim runs the CNI plugins itself; Debian installs them in /usr/lib/cni.
        a.push(("cni-bin-dir", "/usr/lib/cni".into()));
    }
    a
}

/// The `nodeRegistration` block init and join configurations share.
pub(crate) fn node_registration(out: &mut String, p: &ClusterParams, node: &NodeParams) {
    let _ = writeln!(
        out,
        "nodeRegistration:\n  name: {}\n  criSocket: {}",
        node.name,
        cri_socket(p)
    );
    let v1beta4 = p.api == "kubeadm.k8s.io/v1beta4";
    extra_args(
        out,
        "  ",
        "kubeletExtraArgs",
        &kubelet_args(p, node),
        v1beta4,
    );
}

/// Kubelet settings every node container needs: cgroupfs (the node runs no systemd cgroup
/// delegation), no swap check, and no disk-pressure evictions caused by the host's disk.
pub(crate) const KUBELET_CONFIGURATION: &str = "\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: false
# kubelet 1.20 marks a container with a startupProbe and no readinessProbe (etcd,
# kube-scheduler, kube-controller-manager) Ready only at the next full pod sync
# (kubernetes#95140): up to a minute after it started. The gates wait for those pods.
syncFrequency: 10s
imageGCHighThresholdPercent: 100
evictionHard:
  nodefs.available: \"0%\"
  nodefs.inodesFree: \"0%\"
  imagefs.available: \"0%\"
";

/// Containers may not raise nf_conntrack_max; keep kube-proxy from trying.
const KUBE_PROXY_CONFIGURATION: &str = "\
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
conntrack:
  maxPerCore: 0
";

/// The config file for `kubeadm init --config`.
pub fn init_config(p: &ClusterParams, node: &NodeParams) -> Result<String, RenderError> {
    check(p)?;
    if p.api == "kubeadm.k8s.io/v1alpha1" {
        return Ok(master_configuration(p, node));
    }
    let v1beta4 = p.api == "kubeadm.k8s.io/v1beta4";
    let mut out = String::new();
    let _ = writeln!(out, "apiVersion: {}\nkind: InitConfiguration", p.api);
    let _ = writeln!(
        out,
        "bootstrapTokens:\n- token: \"{}\"\n  ttl: 2h0m0s",
        p.token
    );
    if let Some(key) = &p.certificate_key {
        let _ = writeln!(out, "certificateKey: \"{key}\"");
    }
    let _ = writeln!(
        out,
        "localAPIEndpoint:\n  advertiseAddress: {}\n  bindPort: 6443",
        node.ip
    );
    node_registration(&mut out, p, node);
    let _ = writeln!(
        out,
        "---\napiVersion: {}\nkind: ClusterConfiguration",
        p.api
    );
    let _ = writeln!(out, "kubernetesVersion: {}", p.raw_version);
    let _ = writeln!(out, "imageRepository: {}", p.image_repository);
    let _ = writeln!(
        out,
        "controlPlaneEndpoint: \"{}\"",
        p.control_plane_endpoint
    );
    let _ = writeln!(
        out,
        "networking:\n  podSubnet: {}\n  serviceSubnet: {}\n  dnsDomain: cluster.local",
        p.pod_subnet, p.service_subnet
    );
    if !p.external_etcd.is_empty() {
        let _ = writeln!(out, "etcd:\n  external:\n    endpoints:");
        for e in &p.external_etcd {
            let _ = writeln!(out, "    - \"{e}\"");
        }
        let _ = writeln!(
            out,
            "    caFile: {}\n    certFile: {}\n    keyFile: {}",
            etcd::CA_CERT,
            etcd::CLIENT_CERT,
            etcd::CLIENT_KEY
        );
    } else if let Some(tag) = &p.etcd_image_tag {
        let _ = writeln!(
            out,
            "etcd:\n  local:\n    imageRepository: {}\n    imageTag: {tag}",
            p.image_repository
        );
    }
    let _ = writeln!(out, "apiServer:\n  certSANs:");
    for san in &p.cert_sans {
        let _ = writeln!(out, "  - \"{san}\"");
    }
    let modes = if p.rbac { "Node,RBAC" } else { "AlwaysAllow" };
    extra_args(
        &mut out,
        "  ",
        "extraArgs",
        &[("authorization-mode", modes.to_string())],
        v1beta4,
    );
    out.push_str("---\n");
    out.push_str(KUBELET_CONFIGURATION);
    out.push_str("---\n");
    out.push_str(KUBE_PROXY_CONFIGURATION);
    Ok(out)
}

/// kubeadm 1.6-1.10: one `MasterConfiguration` document.
fn master_configuration(p: &ClusterParams, node: &NodeParams) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "apiVersion: kubeadm.k8s.io/v1alpha1\nkind: MasterConfiguration"
    );
    let _ = writeln!(
        out,
        "api:\n  advertiseAddress: {}\n  bindPort: 6443",
        node.ip
    );
    let _ = writeln!(out, "kubernetesVersion: {}", p.raw_version);
    let _ = writeln!(out, "token: \"{}\"", p.token);
    let _ = writeln!(out, "nodeName: {}", node.name);
    let _ = writeln!(
        out,
        "networking:\n  podSubnet: {}\n  serviceSubnet: {}\n  dnsDomain: cluster.local",
        p.pod_subnet, p.service_subnet
    );
    // 1.6 took a single mode; 1.7 introduced the list.
    if p.version.minor == 6 {
        let _ = writeln!(
            out,
            "authorizationMode: {}",
            if p.rbac { "RBAC" } else { "AlwaysAllow" }
        );
    } else {
        let _ = writeln!(
            out,
            "authorizationModes: [{}]",
            if p.rbac { "Node, RBAC" } else { "AlwaysAllow" }
        );
    }
    if p.version.minor >= 8 {
        let _ = writeln!(out, "imageRepository: {}", p.image_repository);
    }
    let _ = writeln!(out, "apiServerCertSANs:");
    for san in &p.cert_sans {
        let _ = writeln!(out, "- \"{san}\"");
    }
    out
}

/// The config file for `kubeadm join --config` (None for releases that only take flags).
pub fn join_config(p: &ClusterParams, node: &NodeParams) -> Result<Option<String>, RenderError> {
    check(p)?;
    if p.api == "kubeadm.k8s.io/v1alpha1" {
        return Ok(None);
    }
    let mut out = String::new();
    let _ = writeln!(out, "apiVersion: {}\nkind: JoinConfiguration", p.api);
    match p.discovery {
        crate::scenario::Discovery::Token => {
            let _ = writeln!(
                out,
                "discovery:\n  bootstrapToken:\n    apiServerEndpoint: \"{}\"\n    token: \"{}\"\n    unsafeSkipCAVerification: true",
                p.control_plane_endpoint, p.token
            );
        }
        crate::scenario::Discovery::FileWithToken => {
            if !p.api.starts_with("kubeadm.k8s.io/v1beta") {
                return Err(RenderError::NoDiscoveryFile(p.api.clone()));
            }
            let _ = writeln!(
                out,
                "discovery:\n  file:\n    kubeConfigPath: {DISCOVERY_FILE_IN_NODE}\n  tlsBootstrapToken: \"{}\"",
                p.token
            );
        }
    }
    node_registration(&mut out, p, node);
    if node.control_plane {
        let key = p
            .certificate_key
            .as_deref()
            .ok_or_else(|| RenderError::NoCertificateKey(node.name.clone()))?;
        let _ = writeln!(
            out,
            "controlPlane:\n  localAPIEndpoint:\n    advertiseAddress: {}\n    bindPort: 6443\n  certificateKey: \"{key}\"",
            node.ip
        );
    }
    Ok(Some(out))
}

/// Arguments for `kubeadm init`. Preflight needs crictl, which Debian does not ship: it is
/// skipped, and so is the CoreDNS phase where its image cannot be had (phases exist 1.13+).
pub fn init_args(p: &ClusterParams, config_path: &str) -> Vec<String> {
    let mut a = vec!["init".to_string(), "--config".into(), config_path.into()];
    if p.version.minor >= 13 {
        a.push(if p.dns_addon {
            "--skip-phases=preflight".into()
        } else {
            "--skip-phases=preflight,addon/coredns".into()
        });
    } else {
        a.push("--skip-preflight-checks".into());
    }
    if p.certificate_key.is_some() {
        a.push("--upload-certs".into());
    }
    if p.version.minor >= 15 {
        a.push("--v=2".into());
    }
    a
}

/// Arguments for `kubeadm join` on a worker.
pub fn join_args(p: &ClusterParams, config_path: Option<&str>) -> Vec<String> {
    match config_path {
        Some(c) => {
            let mut a = vec!["join".to_string(), "--config".into(), c.into()];
            if p.version.minor >= 14 {
                a.push("--skip-phases=preflight".into());
            }
            a
        }
        // 1.6: token and endpoint as flags.
        None => vec![
            "join".into(),
            "--token".into(),
            p.token.clone(),
            p.control_plane_endpoint.clone(),
            "--skip-preflight-checks".into(),
        ],
    }
}

/// A key for `--upload-certs`: 32 random bytes, hex (what `kubeadm certs certificate-key`
/// prints).
pub fn new_certificate_key() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Where the kubelet drop-in lives in a node (the one the node image ships is replaced).
/// Where `file-with-token` discovery's kubeconfig goes in a joining node, and the
/// cluster's CA certificate it names (kubeadm embeds the file's content).
pub const DISCOVERY_FILE_IN_NODE: &str = "/etc/shakedown/discovery.conf";
pub const DISCOVERY_CA_IN_NODE: &str = "/etc/shakedown/discovery-ca.crt";

/// The kubeconfig of `file-with-token` discovery: the API server and the cluster's CA
/// (at [`DISCOVERY_CA_IN_NODE`]), no credentials. Shaped as kubeadm's own `cluster-info`
/// kubeconfig: one unnamed cluster and no context, which is what kubeadm's discovery takes
/// without a user (a context naming no user fails its validation).
pub fn discovery_kubeconfig(p: &ClusterParams) -> String {
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "",
            "cluster": {
                "server": format!("https://{}", p.control_plane_endpoint),
                "certificate-authority": DISCOVERY_CA_IN_NODE,
            },
        }],
        "contexts": [],
        "current-context": "",
        "users": [],
    });
    serde_yaml::to_string(&doc).expect("a JSON value serialises as YAML")
}

pub const KUBELET_DROPIN: &str = "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf";

/// The cluster DNS address kubeadm picks: the tenth address of the service subnet.
pub fn cluster_dns(service_subnet: &str) -> Option<std::net::Ipv4Addr> {
    let base: std::net::Ipv4Addr = service_subnet.split('/').next()?.parse().ok()?;
    Some(std::net::Ipv4Addr::from(u32::from(base) + 10))
}

/// The kubelet drop-in of a release whose kubelet takes flags only (1.6-1.10), every
/// setting a flag as that era's kubeadm packages wrote it. None from 1.11, where kubeadm
/// writes `config.yaml` and `kubeadm-flags.env` and the node image's drop-in reads them.
pub fn kubelet_dropin(
    p: &ClusterParams,
    runtime: release::era::Runtime,
) -> Result<Option<String>, RenderError> {
    use release::era::{kubelet_config_mode, kubelet_flags, KubeletConfigMode};
    if kubelet_config_mode(&p.version) == KubeletConfigMode::ConfigFile {
        return Ok(None);
    }
    let dns = cluster_dns(&p.service_subnet)
        .ok_or_else(|| RenderError::ServiceSubnet(p.service_subnet.clone()))?
        .to_string();
    let flags = kubelet_flags(&p.version, runtime, &dns);
    Ok(Some(format!(
        "# kubelet {v}: every setting is a flag (kubeadm {v} writes no config.yaml).\n[Service]\nEnvironment=\"KUBELET_ERA_ARGS={}\"\nEnvironmentFile=-/etc/default/kubelet\nExecStart=\nExecStart=/usr/bin/kubelet $KUBELET_ERA_ARGS $KUBELET_EXTRA_ARGS\n",
        flags.join(" "),
        v = p.version
    )))
}

/// A bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}` from the kernel's random source.
pub fn new_token() -> std::io::Result<String> {
    use std::io::Read;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 22];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let chars: String = bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    Ok(format!("{}.{}", &chars[..6], &chars[6..]))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_yaml::Value;

    /// Parameters for rendering tests (shared with `etcd`'s).
    pub(crate) fn params(version: &str, api: &str) -> ClusterParams {
        ClusterParams {
            version: version.parse().unwrap(),
            api: api.into(),
            image_repository: "shakedown.local".into(),
            etcd_image_tag: Some("3.4.23-shakedown".into()),
            dns_addon: false,
            raw_version: version.to_string(),
            runtime: release::era::Runtime::Containerd,
            pod_subnet: "10.244.0.0/16".into(),
            service_subnet: "10.96.0.0/12".into(),
            rbac: true,
            control_plane_endpoint: "172.18.0.2:6443".into(),
            cert_sans: vec!["127.0.0.1".into(), "172.18.0.2".into()],
            token: "abcdef.0123456789abcdef".into(),
            certificate_key: None,
            external_etcd: Vec::new(),
            discovery: Default::default(),
        }
    }

    fn node() -> NodeParams {
        NodeParams {
            name: "cp1".into(),
            ip: "172.18.0.2".into(),
            control_plane: true,
        }
    }

    pub(crate) fn docs(s: &str) -> Vec<Value> {
        serde_yaml::Deserializer::from_str(s)
            .map(|d| Value::deserialize(d).unwrap())
            .collect()
    }
    use serde::Deserialize;

    #[test]
    fn v1_20_renders_v1beta2_init_cluster_kubelet_and_proxy_documents() {
        let y = init_config(&params("v1.20.2", "kubeadm.k8s.io/v1beta2"), &node()).unwrap();
        let d = docs(&y);
        let kinds: Vec<&str> = d.iter().map(|x| x["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "InitConfiguration",
                "ClusterConfiguration",
                "KubeletConfiguration",
                "KubeProxyConfiguration"
            ]
        );
        assert_eq!(d[0]["apiVersion"], "kubeadm.k8s.io/v1beta2");
        assert_eq!(
            d[0]["nodeRegistration"]["criSocket"],
            "unix:///run/containerd/containerd.sock"
        );
        assert_eq!(
            d[0]["nodeRegistration"]["kubeletExtraArgs"]["node-ip"],
            "172.18.0.2"
        );
        assert_eq!(
            d[0]["bootstrapTokens"][0]["token"],
            "abcdef.0123456789abcdef"
        );
        assert_eq!(d[1]["networking"]["podSubnet"], "10.244.0.0/16");
        assert_eq!(d[1]["imageRepository"], "shakedown.local");
        assert_eq!(d[1]["etcd"]["local"]["imageTag"], "3.4.23-shakedown");
        assert_eq!(
            d[1]["apiServer"]["extraArgs"]["authorization-mode"],
            "Node,RBAC"
        );
        assert_eq!(d[2]["cgroupDriver"], "cgroupfs");
        assert_eq!(d[3]["conntrack"]["maxPerCore"], 0);
    }

    #[test]
    fn v1beta4_uses_name_value_lists_and_a_socket_url() {
        let y = init_config(&params("v1.31.0", "kubeadm.k8s.io/v1beta4"), &node()).unwrap();
        let d = docs(&y);
        assert_eq!(
            d[0]["nodeRegistration"]["criSocket"],
            "unix:///run/containerd/containerd.sock"
        );
        let args = &d[0]["nodeRegistration"]["kubeletExtraArgs"];
        assert_eq!(args[0]["name"], "node-ip");
        assert_eq!(args[0]["value"], "172.18.0.2");
        assert_eq!(
            d[1]["apiServer"]["extraArgs"][0]["name"],
            "authorization-mode"
        );
    }

    #[test]
    fn v1_6_renders_a_master_configuration_with_rbac() {
        let p = params("v1.6.13", "kubeadm.k8s.io/v1alpha1");
        let d = docs(&init_config(&p, &node()).unwrap());
        assert_eq!(d.len(), 1);
        assert_eq!(d[0]["kind"], "MasterConfiguration");
        assert_eq!(d[0]["authorizationMode"], "RBAC");
        assert_eq!(d[0]["api"]["advertiseAddress"], "172.18.0.2");
        assert!(
            d[0].get("imageRepository").is_none(),
            "1.6 has no imageRepository field"
        );
        assert_eq!(join_config(&p, &node()).unwrap(), None);
        assert_eq!(
            join_args(&p, None),
            [
                "join",
                "--token",
                "abcdef.0123456789abcdef",
                "172.18.0.2:6443",
                "--skip-preflight-checks"
            ]
        );
        assert!(init_args(&p, "/c.yaml").contains(&"--skip-preflight-checks".to_string()));
    }

    #[test]
    fn join_config_points_at_the_control_plane_endpoint() {
        let p = params("v1.20.2", "kubeadm.k8s.io/v1beta2");
        let w = NodeParams {
            name: "w1".into(),
            ip: "172.18.0.3".into(),
            control_plane: false,
        };
        let d = docs(&join_config(&p, &w).unwrap().unwrap());
        assert_eq!(d[0]["kind"], "JoinConfiguration");
        assert_eq!(
            d[0]["discovery"]["bootstrapToken"]["apiServerEndpoint"],
            "172.18.0.2:6443"
        );
        assert_eq!(d[0]["nodeRegistration"]["name"], "w1");
        assert_eq!(
            join_args(&p, Some("/j.yaml")),
            ["join", "--config", "/j.yaml", "--skip-phases=preflight"]
        );
    }

    #[test]
    fn file_discovery_names_the_ca_and_the_server_and_carries_no_credentials() {
        let mut p = params("v1.20.2", "kubeadm.k8s.io/v1beta2");
        p.discovery = crate::scenario::Discovery::FileWithToken;
        let w = NodeParams {
            name: "w1".into(),
            ip: "172.18.0.3".into(),
            control_plane: false,
        };
        let d = docs(&join_config(&p, &w).unwrap().unwrap());
        assert_eq!(
            d[0]["discovery"]["file"]["kubeConfigPath"],
            DISCOVERY_FILE_IN_NODE
        );
        assert_eq!(
            d[0]["discovery"]["tlsBootstrapToken"],
            "abcdef.0123456789abcdef"
        );
        assert!(d[0]["discovery"].get("bootstrapToken").is_none());
        let k = docs(&discovery_kubeconfig(&p));
        let cluster = &k[0]["clusters"][0]["cluster"];
        assert_eq!(cluster["server"], "https://172.18.0.2:6443");
        assert_eq!(cluster["certificate-authority"], DISCOVERY_CA_IN_NODE);
        assert_eq!(k[0]["clusters"][0]["name"], "");
        assert_eq!(k[0]["current-context"], "");
        assert!(k[0]["contexts"].as_sequence().unwrap().is_empty());
        assert!(k[0]["users"].as_sequence().unwrap().is_empty());
        assert!(!discovery_kubeconfig(&p).contains("abcdef"));
        // Before v1beta1 the join configuration has no `discovery.file`.
        let mut p = params("v1.12.10", "kubeadm.k8s.io/v1alpha3");
        p.discovery = crate::scenario::Discovery::FileWithToken;
        assert_eq!(
            join_config(&p, &w),
            Err(RenderError::NoDiscoveryFile(
                "kubeadm.k8s.io/v1alpha3".into()
            ))
        );
    }

    #[test]
    fn ha_uploads_certificates_and_control_planes_join_with_the_key() {
        let mut p = params("v1.20.2", "kubeadm.k8s.io/v1beta2");
        p.control_plane_endpoint = "172.18.0.9:6443".into();
        p.certificate_key = Some("ab12".into());
        let init = docs(&init_config(&p, &node()).unwrap());
        assert_eq!(init[0]["certificateKey"], "ab12");
        assert_eq!(init[1]["controlPlaneEndpoint"], "172.18.0.9:6443");
        assert!(init_args(&p, "/i.yaml").contains(&"--upload-certs".to_string()));
        let cp2 = NodeParams {
            name: "cp2".into(),
            ip: "172.18.0.4".into(),
            control_plane: true,
        };
        let j = docs(&join_config(&p, &cp2).unwrap().unwrap());
        assert_eq!(j[0]["controlPlane"]["certificateKey"], "ab12");
        assert_eq!(
            j[0]["controlPlane"]["localAPIEndpoint"]["advertiseAddress"],
            "172.18.0.4"
        );
        assert_eq!(
            j[0]["discovery"]["bootstrapToken"]["apiServerEndpoint"],
            "172.18.0.9:6443"
        );
        // A worker's join carries no control-plane block, and a single control plane
        // uploads nothing.
        let w = NodeParams {
            name: "w1".into(),
            ip: "172.18.0.5".into(),
            control_plane: false,
        };
        let j = docs(&join_config(&p, &w).unwrap().unwrap());
        assert!(j[0].get("controlPlane").is_none());
        let single = params("v1.20.2", "kubeadm.k8s.io/v1beta2");
        assert!(!init_args(&single, "/i.yaml").contains(&"--upload-certs".to_string()));
        assert!(docs(&init_config(&single, &node()).unwrap())[0]
            .get("certificateKey")
            .is_none());
    }

    #[test]
    fn ha_before_certificate_upload_is_refused() {
        let mut p = params("v1.14.10", "kubeadm.k8s.io/v1beta1");
        p.certificate_key = Some("ab12".into());
        let e = init_config(&p, &node()).unwrap_err();
        assert!(e.to_string().contains("cannot upload certificates"), "{e}");
    }

    #[test]
    fn an_api_the_release_does_not_serve_is_refused() {
        let e = init_config(&params("v1.20.2", "kubeadm.k8s.io/v1alpha1"), &node()).unwrap_err();
        assert!(e
            .to_string()
            .contains("does not accept config API kubeadm.k8s.io/v1alpha1"));
    }

    #[test]
    fn tokens_have_the_bootstrap_token_shape() {
        let t = new_token().unwrap();
        let (id, secret) = t.split_once('.').unwrap();
        assert_eq!((id.len(), secret.len()), (6, 16));
        assert!(t
            .chars()
            .all(|c| c == '.' || c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert_ne!(t, new_token().unwrap());
    }

    #[test]
    fn release_1_6_kubelet_is_configured_by_flags_alone() {
        let p = params("v1.6.13", "kubeadm.k8s.io/v1alpha1");
        let d = kubelet_dropin(&p, release::era::Runtime::Docker)
            .unwrap()
            .unwrap();
        // A systemd drop-in that replaces ExecStart and reads no config file.
        let exec: Vec<&str> = d.lines().filter(|l| l.starts_with("ExecStart=")).collect();
        assert_eq!(
            exec,
            [
                "ExecStart=",
                "ExecStart=/usr/bin/kubelet $KUBELET_ERA_ARGS $KUBELET_EXTRA_ARGS"
            ]
        );
        assert!(!d.contains("--config"));
        assert!(!d.contains("kubeadm-flags.env"));
        assert!(d.contains("--cluster-dns=10.96.0.10"));
        assert!(d.contains("--require-kubeconfig=true"));
        assert!(
            !d.contains("--container-runtime"),
            "1.6 uses dockershim, its default"
        );
        // From 1.11 kubeadm writes the kubelet's config itself.
        assert_eq!(
            kubelet_dropin(
                &params("v1.20.2", "kubeadm.k8s.io/v1beta2"),
                release::era::Runtime::Containerd
            ),
            Ok(None)
        );
        assert_eq!(
            cluster_dns("10.100.0.0/16").unwrap().to_string(),
            "10.100.0.10"
        );
    }
}
