//! Facts about Kubernetes releases that the harness needs: versions, the kubeadm config API
//! each release serves, and the control-plane taints kubeadm applies.

pub mod bucket;
pub mod era;
pub mod mirror;
pub mod skew;
pub mod version;

pub use version::KubeVersion;

/// kubeadm config API group versions and the minor releases that accept them.
/// (group version, first minor, last minor or None while still served)
const KUBEADM_APIS: &[(&str, u32, Option<u32>)] = &[
    ("kubeadm.k8s.io/v1alpha1", 6, Some(10)),
    ("kubeadm.k8s.io/v1alpha2", 11, Some(11)),
    ("kubeadm.k8s.io/v1alpha3", 12, Some(13)),
    ("kubeadm.k8s.io/v1beta1", 13, Some(21)),
    ("kubeadm.k8s.io/v1beta2", 15, Some(26)),
    ("kubeadm.k8s.io/v1beta3", 22, None),
    ("kubeadm.k8s.io/v1beta4", 31, None),
];

/// The kubeadm config API versions a release accepts, oldest first.
pub fn kubeadm_apis_for(v: &KubeVersion) -> Vec<&'static str> {
    KUBEADM_APIS
        .iter()
        .filter(|(_, first, last)| v.minor >= *first && last.is_none_or(|l| v.minor <= l))
        .map(|(api, _, _)| *api)
        .collect()
}

/// The newest kubeadm config API a release accepts (what the harness renders by default).
pub fn default_kubeadm_api(v: &KubeVersion) -> Option<&'static str> {
    kubeadm_apis_for(v).last().copied()
}

pub const TAINT_MASTER: &str = "node-role.kubernetes.io/master";
pub const TAINT_CONTROL_PLANE: &str = "node-role.kubernetes.io/control-plane";

/// The taints kubeadm puts on control-plane nodes of a release: `master` up to 1.23,
/// both in 1.24, `control-plane` from 1.25.
pub fn control_plane_taints(v: &KubeVersion) -> Vec<&'static str> {
    match v.minor {
        ..=23 => vec![TAINT_MASTER],
        24 => vec![TAINT_MASTER, TAINT_CONTROL_PLANE],
        _ => vec![TAINT_CONTROL_PLANE],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> KubeVersion {
        s.parse().unwrap()
    }

    #[test]
    fn kubeadm_api_follows_the_release() {
        assert_eq!(
            default_kubeadm_api(&v("v1.6.13")),
            Some("kubeadm.k8s.io/v1alpha1")
        );
        assert_eq!(
            default_kubeadm_api(&v("v1.20.2")),
            Some("kubeadm.k8s.io/v1beta2")
        );
        assert_eq!(
            default_kubeadm_api(&v("1.31")),
            Some("kubeadm.k8s.io/v1beta4")
        );
        assert!(!kubeadm_apis_for(&v("1.20")).contains(&"kubeadm.k8s.io/v1alpha1"));
        assert!(kubeadm_apis_for(&v("1.5")).is_empty());
    }

    #[test]
    fn control_plane_taint_changes_at_1_24() {
        assert_eq!(control_plane_taints(&v("1.6")), vec![TAINT_MASTER]);
        assert_eq!(control_plane_taints(&v("1.23")), vec![TAINT_MASTER]);
        assert_eq!(
            control_plane_taints(&v("1.24")),
            vec![TAINT_MASTER, TAINT_CONTROL_PLANE]
        );
        assert_eq!(control_plane_taints(&v("1.30")), vec![TAINT_CONTROL_PLANE]);
    }
}
