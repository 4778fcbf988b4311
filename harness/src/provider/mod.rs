//! Cluster providers: where nodes come from. `docker` (node containers) is built in; kind
//! and VM providers plug in behind the same types.

pub mod docker;

use crate::scenario::ProviderKind;

pub const LABEL_MANAGED: &str = "io.shakedown.managed";
pub const LABEL_RUN: &str = "io.shakedown.run";
pub const LABEL_CLUSTER: &str = "io.shakedown.cluster";
pub const LABEL_ROLE: &str = "io.shakedown.role";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    ControlPlane,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
        }
    }
}

#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Container name, hostname and Kubernetes node name.
    pub name: String,
    pub role: Role,
    pub ip: String,
}

/// Why a job cannot run for real on this machine, if it cannot.
pub fn unavailable_here(provider: ProviderKind) -> Option<String> {
    match provider {
        ProviderKind::Docker => None,
        ProviderKind::Kind => Some("provider kind needs the kind binary and its node image, which cannot be obtained offline".into()),
        ProviderKind::Vm => Some("provider vm needs a bootable node disk image; none can be built here yet (qemu runs only under TCG)".into()),
    }
}
