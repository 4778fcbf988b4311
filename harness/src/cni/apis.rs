//! Which built-in `apiVersion`/`kind` pairs each Kubernetes minor release serves, from the
//! API introductions and removals recorded in the Kubernetes deprecation guide and release
//! notes. Kinds of other groups (custom resources) and alpha APIs (off by default) are not
//! judged here; only a live dry run can tell whether a cluster serves them.

use crate::release::KubeVersion;

/// Every kind of a group version.
const ALL: &[&str] = &[];

/// (group/version, kinds (empty: every kind), first minor served, last minor served, what
/// to use instead once it is gone).
type Row = (
    &'static str,
    &'static [&'static str],
    u32,
    Option<u32>,
    &'static str,
);

const TABLE: &[Row] = &[
    ("v1", ALL, 0, None, ""),
    // extensions/v1beta1: workloads and NetworkPolicy and PodSecurityPolicy gone in 1.16,
    // Ingress in 1.22.
    (
        "extensions/v1beta1",
        &["DaemonSet", "Deployment", "ReplicaSet"],
        2,
        Some(15),
        "apps/v1",
    ),
    (
        "extensions/v1beta1",
        &["NetworkPolicy"],
        3,
        Some(15),
        "networking.k8s.io/v1",
    ),
    (
        "extensions/v1beta1",
        &["PodSecurityPolicy"],
        3,
        Some(15),
        "policy/v1beta1",
    ),
    (
        "extensions/v1beta1",
        &["Ingress"],
        1,
        Some(21),
        "networking.k8s.io/v1",
    ),
    ("apps/v1beta1", &["StatefulSet"], 5, Some(15), "apps/v1"),
    ("apps/v1beta1", &["Deployment"], 6, Some(15), "apps/v1"),
    (
        "apps/v1beta1",
        &["ControllerRevision"],
        7,
        Some(15),
        "apps/v1",
    ),
    ("apps/v1beta2", ALL, 8, Some(15), "apps/v1"),
    ("apps/v1", ALL, 9, None, ""),
    (
        "rbac.authorization.k8s.io/v1beta1",
        ALL,
        6,
        Some(21),
        "rbac.authorization.k8s.io/v1",
    ),
    ("rbac.authorization.k8s.io/v1", ALL, 8, None, ""),
    (
        "apiextensions.k8s.io/v1beta1",
        &["CustomResourceDefinition"],
        7,
        Some(21),
        "apiextensions.k8s.io/v1",
    ),
    (
        "apiextensions.k8s.io/v1",
        &["CustomResourceDefinition"],
        16,
        None,
        "",
    ),
    (
        "apiregistration.k8s.io/v1beta1",
        &["APIService"],
        7,
        Some(21),
        "apiregistration.k8s.io/v1",
    ),
    ("apiregistration.k8s.io/v1", &["APIService"], 10, None, ""),
    (
        "admissionregistration.k8s.io/v1beta1",
        &[
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        ],
        9,
        Some(21),
        "admissionregistration.k8s.io/v1",
    ),
    (
        "admissionregistration.k8s.io/v1",
        &[
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        ],
        16,
        None,
        "",
    ),
    ("networking.k8s.io/v1", &["NetworkPolicy"], 7, None, ""),
    (
        "networking.k8s.io/v1",
        &["Ingress", "IngressClass"],
        19,
        None,
        "",
    ),
    (
        "networking.k8s.io/v1beta1",
        &["Ingress"],
        14,
        Some(21),
        "networking.k8s.io/v1",
    ),
    (
        "networking.k8s.io/v1beta1",
        &["IngressClass"],
        18,
        Some(21),
        "networking.k8s.io/v1",
    ),
    (
        "policy/v1beta1",
        &["PodDisruptionBudget"],
        5,
        Some(24),
        "policy/v1",
    ),
    (
        "policy/v1beta1",
        &["PodSecurityPolicy"],
        10,
        Some(24),
        "Pod Security Admission",
    ),
    ("policy/v1", &["PodDisruptionBudget"], 21, None, ""),
    ("batch/v1", &["Job"], 2, None, ""),
    ("batch/v1", &["CronJob"], 21, None, ""),
    ("batch/v1beta1", &["CronJob"], 8, Some(24), "batch/v1"),
    ("autoscaling/v1", &["HorizontalPodAutoscaler"], 2, None, ""),
    (
        "autoscaling/v2beta1",
        &["HorizontalPodAutoscaler"],
        8,
        Some(24),
        "autoscaling/v2",
    ),
    (
        "autoscaling/v2beta2",
        &["HorizontalPodAutoscaler"],
        12,
        Some(25),
        "autoscaling/v2",
    ),
    ("autoscaling/v2", &["HorizontalPodAutoscaler"], 23, None, ""),
    (
        "scheduling.k8s.io/v1beta1",
        &["PriorityClass"],
        11,
        Some(21),
        "scheduling.k8s.io/v1",
    ),
    ("scheduling.k8s.io/v1", &["PriorityClass"], 14, None, ""),
    (
        "coordination.k8s.io/v1beta1",
        &["Lease"],
        12,
        Some(21),
        "coordination.k8s.io/v1",
    ),
    ("coordination.k8s.io/v1", &["Lease"], 14, None, ""),
    (
        "certificates.k8s.io/v1beta1",
        &["CertificateSigningRequest"],
        4,
        Some(21),
        "certificates.k8s.io/v1",
    ),
    (
        "certificates.k8s.io/v1",
        &["CertificateSigningRequest"],
        19,
        None,
        "",
    ),
    ("storage.k8s.io/v1", &["StorageClass"], 6, None, ""),
    ("storage.k8s.io/v1", &["VolumeAttachment"], 13, None, ""),
    ("storage.k8s.io/v1", &["CSINode"], 17, None, ""),
    ("storage.k8s.io/v1", &["CSIDriver"], 18, None, ""),
    (
        "storage.k8s.io/v1beta1",
        &["StorageClass"],
        4,
        Some(21),
        "storage.k8s.io/v1",
    ),
    (
        "storage.k8s.io/v1beta1",
        &["VolumeAttachment"],
        10,
        Some(21),
        "storage.k8s.io/v1",
    ),
    (
        "storage.k8s.io/v1beta1",
        &["CSINode", "CSIDriver"],
        14,
        Some(21),
        "storage.k8s.io/v1",
    ),
    (
        "discovery.k8s.io/v1beta1",
        &["EndpointSlice"],
        17,
        Some(24),
        "discovery.k8s.io/v1",
    ),
    ("discovery.k8s.io/v1", &["EndpointSlice"], 21, None, ""),
    (
        "events.k8s.io/v1beta1",
        &["Event"],
        8,
        Some(24),
        "events.k8s.io/v1",
    ),
    ("events.k8s.io/v1", &["Event"], 19, None, ""),
    (
        "node.k8s.io/v1beta1",
        &["RuntimeClass"],
        14,
        Some(24),
        "node.k8s.io/v1",
    ),
    ("node.k8s.io/v1", &["RuntimeClass"], 20, None, ""),
];

/// Whether a release serves an API, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// Served; `removed_in` is set when a later release drops it and its replacement is
    /// already served, so the manifest could move now.
    Yes {
        removed_in: Option<u32>,
        instead: &'static str,
    },
    /// Introduced in a later minor release.
    NotYet { since: u32 },
    /// Served up to `last`, no longer.
    Removed { last: u32, instead: &'static str },
    /// Not a built-in API the table knows (a custom resource, or an alpha API).
    Unknown,
}

fn row(api_version: &str, kind: &str) -> Option<&'static Row> {
    TABLE
        .iter()
        .find(|(gv, kinds, ..)| *gv == api_version && (kinds.is_empty() || kinds.contains(&kind)))
}

/// Whether Kubernetes `v` serves `kind` at `api_version`.
pub fn served(api_version: &str, kind: &str, v: &KubeVersion) -> Served {
    let Some(&(_, _, since, last, instead)) = row(api_version, kind) else {
        return Served::Unknown;
    };
    let minor = if v.major > 1 { u32::MAX } else { v.minor };
    if minor < since {
        return Served::NotYet { since };
    }
    match last {
        Some(last) if minor > last => Served::Removed { last, instead },
        Some(last) => {
            let replacement_served =
                instead.contains('/') && matches!(served(instead, kind, v), Served::Yes { .. });
            Served::Yes {
                removed_in: replacement_served.then_some(last + 1),
                instead,
            }
        }
        None => Served::Yes {
            removed_in: None,
            instead: "",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> KubeVersion {
        s.parse().unwrap()
    }

    #[test]
    fn extensions_daemonsets_are_gone_in_1_16() {
        assert!(matches!(
            served("extensions/v1beta1", "DaemonSet", &v("1.15")),
            Served::Yes { .. }
        ));
        assert_eq!(
            served("extensions/v1beta1", "DaemonSet", &v("1.20")),
            Served::Removed {
                last: 15,
                instead: "apps/v1"
            }
        );
        assert_eq!(
            served("apps/v1beta2", "DaemonSet", &v("v1.16.0")),
            Served::Removed {
                last: 15,
                instead: "apps/v1"
            }
        );
    }

    #[test]
    fn new_apis_are_not_served_before_their_release() {
        assert_eq!(
            served("apps/v1", "DaemonSet", &v("1.6")),
            Served::NotYet { since: 9 }
        );
        assert_eq!(
            served("rbac.authorization.k8s.io/v1", "ClusterRole", &v("1.7")),
            Served::NotYet { since: 8 }
        );
        assert_eq!(
            served("policy/v1", "PodDisruptionBudget", &v("1.20")),
            Served::NotYet { since: 21 }
        );
        assert_eq!(
            served(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                &v("1.15")
            ),
            Served::NotYet { since: 16 }
        );
    }

    #[test]
    fn removals_of_1_22_and_1_25() {
        for (gv, kind) in [
            ("rbac.authorization.k8s.io/v1beta1", "ClusterRoleBinding"),
            ("apiextensions.k8s.io/v1beta1", "CustomResourceDefinition"),
        ] {
            assert!(matches!(
                served(gv, kind, &v("1.22")),
                Served::Removed { last: 21, .. }
            ));
        }
        for (gv, kind) in [
            ("policy/v1beta1", "PodDisruptionBudget"),
            ("policy/v1beta1", "PodSecurityPolicy"),
            ("batch/v1beta1", "CronJob"),
        ] {
            assert!(matches!(
                served(gv, kind, &v("1.25")),
                Served::Removed { last: 24, .. }
            ));
            assert!(matches!(served(gv, kind, &v("1.24")), Served::Yes { .. }));
        }
    }

    #[test]
    fn a_removal_is_announced_only_once_the_replacement_is_served() {
        assert_eq!(
            served(
                "rbac.authorization.k8s.io/v1beta1",
                "ClusterRole",
                &v("1.6")
            ),
            Served::Yes {
                removed_in: None,
                instead: "rbac.authorization.k8s.io/v1"
            },
            "1.6 has no rbac v1 to move to"
        );
        assert_eq!(
            served(
                "rbac.authorization.k8s.io/v1beta1",
                "ClusterRole",
                &v("1.20")
            ),
            Served::Yes {
                removed_in: Some(22),
                instead: "rbac.authorization.k8s.io/v1"
            }
        );
        assert_eq!(
            served("policy/v1beta1", "PodDisruptionBudget", &v("1.20")),
            Served::Yes {
                removed_in: None,
                instead: "policy/v1"
            },
            "policy/v1 only arrives in 1.21"
        );
    }

    #[test]
    fn core_is_always_served_and_custom_groups_are_unknown() {
        assert!(matches!(
            served("v1", "ConfigMap", &v("1.6")),
            Served::Yes { .. }
        ));
        assert_eq!(
            served("crd.projectcalico.org/v1", "IPPool", &v("1.20")),
            Served::Unknown
        );
        assert_eq!(
            served("extensions/v1beta1", "Scale", &v("1.20")),
            Served::Unknown,
            "a kind the table does not list is not judged"
        );
    }
}
