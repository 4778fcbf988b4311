//! External etcd (`cluster.etcd: external`), after kubeadm's guide to an HA etcd cluster:
//! each member's certificates and static pod come from `kubeadm init phase` with a config
//! rendered here, and a kubelet that only runs static pods (no API server, no cluster)
//! keeps etcd running. The control planes then name the members in `etcd.external`.

use super::{check, extra_args, node_registration, ClusterParams, NodeParams, RenderError};
use std::fmt::Write;

/// The etcd CA, made on the first member and copied to the others and the control plane.
pub const CA_CERT: &str = "/etc/kubernetes/pki/etcd/ca.crt";
pub const CA_KEY: &str = "/etc/kubernetes/pki/etcd/ca.key";
/// The API server's client certificate for etcd (`kubeadm init phase certs
/// apiserver-etcd-client`), where kubeadm itself puts it.
pub const CLIENT_CERT: &str = "/etc/kubernetes/pki/apiserver-etcd-client.crt";
pub const CLIENT_KEY: &str = "/etc/kubernetes/pki/apiserver-etcd-client.key";
/// What the control planes need of the external etcd: its CA (not the key) and their
/// client certificate.
pub const FOR_CONTROL_PLANE: [&str; 3] = [CA_CERT, CLIENT_CERT, CLIENT_KEY];

/// Where a member's kubeadm config, kubelet config and kubelet drop-in go in its node.
pub const MEMBER_CONFIG_IN_NODE: &str = "/etc/shakedown/kubeadm-etcd.yaml";
pub const KUBELET_CONFIG_IN_NODE: &str = "/etc/shakedown/kubelet-etcd.yaml";
/// Sorts after the node image's `10-kubeadm.conf`, so its settings win.
pub const KUBELET_DROPIN: &str = "/etc/systemd/system/kubelet.service.d/20-etcd-member.conf";

/// One member: its node's name (the member's name too) and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub ip: String,
}

/// The client URL of each member, for `etcd.external.endpoints` and etcdctl.
pub fn endpoints(members: &[Member]) -> Vec<String> {
    members
        .iter()
        .map(|m| format!("https://{}:2379", m.ip))
        .collect()
}

/// `name=https://ip:2380,...`: every member, so all start as one new cluster.
pub fn initial_cluster(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| format!("{}=https://{}:2380", m.name, m.ip))
        .collect::<Vec<_>>()
        .join(",")
}

/// Why a release cannot have an external etcd made this way (None: it can).
pub fn unsupported(p: &ClusterParams) -> Option<String> {
    (p.version.minor < 13).then(|| {
        format!(
            "kubeadm {} has no `init phase certs etcd-*` or `init phase etcd local` (phases came in 1.13)",
            p.version
        )
    })
}

/// The config for one member's `kubeadm init phase certs etcd-{ca,server,peer,
/// healthcheck-client}`, `certs apiserver-etcd-client` and `etcd local`: the member's
/// address for its certificates and listeners, and the whole initial cluster.
pub fn member_config(p: &ClusterParams, m: &Member, all: &[Member]) -> Result<String, RenderError> {
    check(p)?;
    let v1beta4 = p.api == "kubeadm.k8s.io/v1beta4";
    let mut out = String::new();
    let _ = writeln!(out, "apiVersion: {}\nkind: InitConfiguration", p.api);
    let _ = writeln!(
        out,
        "localAPIEndpoint:\n  advertiseAddress: {}\n  bindPort: 6443",
        m.ip
    );
    node_registration(
        &mut out,
        p,
        &NodeParams {
            name: m.name.clone(),
            ip: m.ip.clone(),
            control_plane: false,
        },
    );
    let _ = writeln!(
        out,
        "---\napiVersion: {}\nkind: ClusterConfiguration",
        p.api
    );
    let _ = writeln!(out, "kubernetesVersion: {}", p.raw_version);
    let _ = writeln!(out, "imageRepository: {}", p.image_repository);
    let _ = writeln!(out, "etcd:\n  local:");
    if let Some(tag) = &p.etcd_image_tag {
        let _ = writeln!(
            out,
            "    imageRepository: {}\n    imageTag: {tag}",
            p.image_repository
        );
    }
    let _ = writeln!(
        out,
        "    serverCertSANs:\n    - \"{0}\"\n    peerCertSANs:\n    - \"{0}\"",
        m.ip
    );
    extra_args(
        &mut out,
        "    ",
        "extraArgs",
        &[
            ("initial-cluster", initial_cluster(all)),
            ("initial-cluster-state", "new".into()),
        ],
        v1beta4,
    );
    Ok(out)
}

/// The member's kubelet: static pods only, nothing listening beyond the loopback, no
/// authentication to answer (no API server exists to ask), plus what every node container
/// needs ([`super::KUBELET_CONFIGURATION`]).
pub fn kubelet_config() -> String {
    let mut out = super::KUBELET_CONFIGURATION.to_string();
    out.push_str(
        "address: 127.0.0.1\nstaticPodPath: /etc/kubernetes/manifests\nauthentication:\n  anonymous:\n    enabled: false\n  webhook:\n    enabled: false\nauthorization:\n  mode: AlwaysAllow\n",
    );
    out
}

/// The drop-in that makes the member's kubelet a static-pod runner: kubeadm's drop-in waits
/// for a `config.yaml` that no join will write, so its start condition is cleared too.
/// `--container-runtime=remote` exists until 1.26 and is required there for containerd.
pub fn kubelet_dropin(p: &ClusterParams) -> String {
    let mut flags = vec![format!("--config={KUBELET_CONFIG_IN_NODE}")];
    if p.version.minor < 27 {
        flags.push("--container-runtime=remote".into());
    }
    flags.push("--container-runtime-endpoint=unix:///run/containerd/containerd.sock".into());
    format!(
        "# An external etcd member: kubelet runs the etcd static pod and nothing else.\n[Service]\nExecStartPre=\nExecStart=\nExecStart=/usr/bin/kubelet {}\nRestart=always\n",
        flags.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::{docs, params};
    use super::*;
    use serde_yaml::Value;

    fn members() -> Vec<Member> {
        (1..=3)
            .map(|i| Member {
                name: format!("sd-etcd{i}"),
                ip: format!("172.18.0.{}", i + 10),
            })
            .collect()
    }

    #[test]
    fn a_member_config_names_its_address_and_the_whole_initial_cluster() {
        let all = members();
        let y = member_config(&params("v1.20.2", "kubeadm.k8s.io/v1beta2"), &all[1], &all).unwrap();
        let d = docs(&y);
        assert_eq!(d[0]["kind"], "InitConfiguration");
        assert_eq!(d[0]["localAPIEndpoint"]["advertiseAddress"], "172.18.0.12");
        assert_eq!(d[0]["nodeRegistration"]["name"], "sd-etcd2");
        let local = &d[1]["etcd"]["local"];
        assert_eq!(local["serverCertSANs"][0], "172.18.0.12");
        assert_eq!(local["peerCertSANs"][0], "172.18.0.12");
        assert_eq!(local["imageTag"], "3.4.23-shakedown");
        assert_eq!(
            local["extraArgs"]["initial-cluster"],
            "sd-etcd1=https://172.18.0.11:2380,sd-etcd2=https://172.18.0.12:2380,sd-etcd3=https://172.18.0.13:2380"
        );
        assert_eq!(local["extraArgs"]["initial-cluster-state"], "new");
    }

    #[test]
    fn v1beta4_members_take_extra_args_as_a_list() {
        let all = members();
        let y = member_config(&params("v1.31.0", "kubeadm.k8s.io/v1beta4"), &all[0], &all).unwrap();
        let args = &docs(&y)[1]["etcd"]["local"]["extraArgs"];
        assert_eq!(args[0]["name"], "initial-cluster");
        assert_eq!(args[1]["value"], "new");
    }

    #[test]
    fn the_control_plane_names_every_member_and_the_client_certificate() {
        let mut p = params("v1.20.2", "kubeadm.k8s.io/v1beta2");
        p.external_etcd = endpoints(&members());
        let node = NodeParams {
            name: "cp1".into(),
            ip: "172.18.0.2".into(),
            control_plane: true,
        };
        let d = docs(&super::super::init_config(&p, &node).unwrap());
        let ext = &d[1]["etcd"]["external"];
        assert_eq!(d[1]["etcd"]["local"], Value::Null);
        assert_eq!(ext["endpoints"].as_sequence().unwrap().len(), 3);
        assert_eq!(ext["endpoints"][2], "https://172.18.0.13:2379");
        assert_eq!(ext["caFile"], CA_CERT);
        assert_eq!(ext["certFile"], CLIENT_CERT);
        assert_eq!(ext["keyFile"], CLIENT_KEY);
    }

    #[test]
    fn the_member_kubelet_runs_static_pods_alone_with_era_flags() {
        let c = docs(&kubelet_config());
        assert_eq!(c[0]["staticPodPath"], "/etc/kubernetes/manifests");
        assert_eq!(c[0]["authorization"]["mode"], "AlwaysAllow");
        assert_eq!(c[0]["cgroupDriver"], "cgroupfs");
        let old = kubelet_dropin(&params("v1.20.2", "kubeadm.k8s.io/v1beta2"));
        assert!(old.contains("--container-runtime=remote "), "{old}");
        assert!(old.contains("ExecStartPre=\n"), "{old}");
        let new = kubelet_dropin(&params("v1.31.0", "kubeadm.k8s.io/v1beta4"));
        assert!(!new.contains("--container-runtime=remote"), "{new}");
        assert!(
            new.contains("--container-runtime-endpoint=unix://"),
            "{new}"
        );
        assert!(unsupported(&params("v1.12.0", "kubeadm.k8s.io/v1alpha3")).is_some());
        assert!(unsupported(&params("v1.13.0", "kubeadm.k8s.io/v1beta1")).is_none());
    }
}
