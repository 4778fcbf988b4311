//! What a scenario step can do: one enum. Each action knows its coverage stage, what its
//! failure means, and which actions must run before it in a job, so a scenario whose steps
//! are out of order is refused when it is loaded.

use serde::{Deserialize, Serialize};

/// The part of a cluster bring-up a step exercises. Every run reports each stage, so a job
/// that only ever exercised init and join cannot look green (the 1.6.0 lesson).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Init,
    Join,
    Cni,
    Smoke,
    Storage,
    Soak,
    Conformance,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Init,
        Stage::Join,
        Stage::Cni,
        Stage::Smoke,
        Stage::Storage,
        Stage::Soak,
        Stage::Conformance,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Init => "init",
            Stage::Join => "join",
            Stage::Cni => "cni",
            Stage::Smoke => "smoke",
            Stage::Storage => "storage",
            Stage::Soak => "soak",
            Stage::Conformance => "conformance",
        }
    }
}

/// What a failure of the step means for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// Prepares what the test needs; a failure is an infrastructure error.
    Setup,
    /// Exercises the system under test; a failure is a test failure.
    Test,
    /// Collects logs or removes resources; a failure is an infrastructure error.
    Teardown,
}

/// Every action a scenario step may name (`action: kubeadm-init`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    Exec,
    HostSetup,
    ImageBuild,
    ClusterUp,
    EtcdUp,
    KubeadmInit,
    KubeadmJoin,
    Cni,
    NodeChecks,
    Smoke,
    Storage,
    NodeLoss,
    Soak,
    Conformance,
    ControlPlaneLoss,
    EtcdMemberLoss,
    EtcdBackup,
    Upgrade,
    NodeReboot,
    ExportLogs,
    ClusterDown,
}

impl ActionKind {
    pub const ALL: [ActionKind; 21] = [
        ActionKind::Exec,
        ActionKind::HostSetup,
        ActionKind::ImageBuild,
        ActionKind::ClusterUp,
        ActionKind::EtcdUp,
        ActionKind::KubeadmInit,
        ActionKind::KubeadmJoin,
        ActionKind::Cni,
        ActionKind::NodeChecks,
        ActionKind::Smoke,
        ActionKind::Storage,
        ActionKind::NodeLoss,
        ActionKind::Soak,
        ActionKind::Conformance,
        ActionKind::ControlPlaneLoss,
        ActionKind::EtcdMemberLoss,
        ActionKind::EtcdBackup,
        ActionKind::Upgrade,
        ActionKind::NodeReboot,
        ActionKind::ExportLogs,
        ActionKind::ClusterDown,
    ];

    /// The name a scenario uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Exec => "exec",
            ActionKind::HostSetup => "host-setup",
            ActionKind::ImageBuild => "image-build",
            ActionKind::ClusterUp => "cluster-up",
            ActionKind::EtcdUp => "etcd-up",
            ActionKind::KubeadmInit => "kubeadm-init",
            ActionKind::KubeadmJoin => "kubeadm-join",
            ActionKind::Cni => "cni",
            ActionKind::NodeChecks => "node-checks",
            ActionKind::Smoke => "smoke",
            ActionKind::Storage => "storage",
            ActionKind::NodeLoss => "node-loss",
            ActionKind::Soak => "soak",
            ActionKind::Conformance => "conformance",
            ActionKind::ControlPlaneLoss => "control-plane-loss",
            ActionKind::EtcdMemberLoss => "etcd-member-loss",
            ActionKind::EtcdBackup => "etcd-backup",
            ActionKind::Upgrade => "upgrade",
            ActionKind::NodeReboot => "node-reboot",
            ActionKind::ExportLogs => "export-logs",
            ActionKind::ClusterDown => "cluster-down",
        }
    }

    pub fn kind(self) -> StepKind {
        use ActionKind::*;
        match self {
            HostSetup | ImageBuild | ClusterUp => StepKind::Setup,
            Exec | EtcdUp | KubeadmInit | KubeadmJoin | Cni | NodeChecks | Smoke | Storage
            | NodeLoss | Soak | Conformance | ControlPlaneLoss | EtcdMemberLoss | EtcdBackup
            | Upgrade | NodeReboot => StepKind::Test,
            ExportLogs | ClusterDown => StepKind::Teardown,
        }
    }

    pub fn stage(self) -> Option<Stage> {
        use ActionKind::*;
        match self {
            KubeadmInit => Some(Stage::Init),
            KubeadmJoin => Some(Stage::Join),
            Cni => Some(Stage::Cni),
            NodeChecks | Smoke | ControlPlaneLoss | EtcdMemberLoss | NodeReboot => {
                Some(Stage::Smoke)
            }
            Storage | NodeLoss => Some(Stage::Storage),
            Soak => Some(Stage::Soak),
            Conformance => Some(Stage::Conformance),
            Exec | HostSetup | ImageBuild | ClusterUp | EtcdUp | ExportLogs | ClusterDown
            | EtcdBackup | Upgrade => None,
        }
    }

    /// One line on what the action does.
    pub fn summary(self) -> &'static str {
        use ActionKind::*;
        match self {
            Exec => "run a command (program relative to the repository root)",
            HostSetup => "install the Debian packages real clusters need and start dockerd",
            ImageBuild => "build or reuse Kubernetes binaries, component images and the node image, cached by content",
            ClusterUp => "create the job's nodes with its provider",
            EtcdUp => "external etcd (cluster.etcd: external): certificates and static pods from `kubeadm init phase` on three etcd nodes, TLS throughout, until every member is healthy",
            KubeadmInit => "render the kubeadm config for the version and run kubeadm init on the first control plane",
            KubeadmJoin => "join the other nodes, in parallel",
            Cni => "apply the CNI variant, then wait in order for: nodes registered, CNI applied, nodes and kube-system pods Ready",
            NodeChecks => "tier 1: kernel features, cgroups, container runtime and swap on every node",
            Storage => "the storage tier: pods sharing one Secret volume at scale, clean teardown, a claim deleted before its pod, data kept through a force-delete mid-write",
            NodeLoss => "the storage tier's node loss: a Deployment's pod on the last worker uses a volume every node can reach; the worker stops and its Node is deleted; the pod must run again on the first control plane and find the volume's data (the worker is started again afterwards; place it after the steps that need every node)",
            Soak => "the soak tier: churn namespaces, Deployments, Services, ConfigMaps and Secret volumes for soak.duration with the API and a Service probed, then diff the cluster's state against before (objects, namespaces, endpoints, iptables rules, mounts, RSS and fds) and fail on leaks beyond soak.max_growth",
            Smoke => "short cluster validation through the API: nodes, scheduling, pod and Service traffic, namespaces",
            Conformance => "run e2e.test conformance with the scenario's mode, focus and skip",
            EtcdBackup => "save an etcd snapshot (never exported) and restore it into a throwaway etcd, comparing key counts with the live cluster",
            Upgrade => "one hop of the upgrade chain (upgrade.through): etcd backup, kubeadm upgrade plan/apply/node, drain, swap kubelet, uncordon node by node, then the gates, with API and Service disruption measured",
            EtcdMemberLoss => "stop the last external etcd member and measure the API's unavailability against disruption.api_max; the others must keep a quorum",
            NodeReboot => "reboot the last worker (a VM for real, a container by restart) and check it boots again, turns Ready by a fresh kubelet status, and runs its pinned pod again",
            ControlPlaneLoss => "stop the last control plane and measure the API's unavailability through the load balancer against disruption.api_max",
            ExportLogs => "export node journals, pod logs, manifests and cluster objects (best effort, bounded)",
            ClusterDown => "remove every resource the job created (unless --keep-cluster)",
        }
    }

    /// Actions that must come earlier in the same job's steps. Work on nodes needs a
    /// cluster (made, or for the `existing` provider attached, by `cluster-up`); joins need
    /// the control plane `kubeadm-init` made.
    pub fn requires(self) -> &'static [ActionKind] {
        use ActionKind::*;
        match self {
            Exec | HostSetup | ImageBuild | ClusterUp | ExportLogs | ClusterDown => &[],
            EtcdUp | KubeadmInit | NodeChecks | Cni | Smoke | Storage | Conformance => &[ClusterUp],
            Soak => &[Cni],
            KubeadmJoin => &[KubeadmInit],
            ControlPlaneLoss => &[KubeadmJoin],
            EtcdMemberLoss => &[EtcdUp, KubeadmInit],
            Upgrade => &[KubeadmJoin, Cni],
            NodeReboot | NodeLoss => &[KubeadmJoin, Cni],
            EtcdBackup => &[KubeadmInit],
        }
    }
}

impl std::fmt::Display for ActionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde() {
        for a in ActionKind::ALL {
            let yaml = serde_yaml::to_string(&a).unwrap();
            assert_eq!(yaml.trim(), a.as_str());
            let back: ActionKind = serde_yaml::from_str(a.as_str()).unwrap();
            assert_eq!(back, a);
            assert!(!a.summary().is_empty());
            assert!(!a.requires().contains(&a), "{a} requires itself");
        }
    }
}
