//! Scenario → matrix of jobs (provider × CNI × topology) with stable names.
//!
//! TestGrid keys history on names, so a job name depends only on the branch and the axes,
//! never on the version or the run: `release-1.20/docker/bridge`, plus `/<topology>` when
//! the topology is named.

use crate::scenario::{Accelerator, LoadedScenario, ProviderKind};
use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Topology {
    pub name: Option<String>,
    pub control_planes: u32,
    pub workers: u32,
    /// The workers' Kubernetes version when it is not the control plane's (version skew).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_version: Option<String>,
    /// Under provider `vm`: how many control planes and workers are VMs (the last ones of
    /// each role); the rest are containers on the same network. Zero for other providers.
    #[serde(skip_serializing_if = "is_zero")]
    pub vm_control_planes: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub vm_workers: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Job {
    /// Stable name, e.g. `release-1.20/docker/bridge`.
    pub name: String,
    pub branch: String,
    pub provider: ProviderKind,
    pub cni: String,
    pub topology: Topology,
    /// How qemu runs the job's VM nodes (provider vm): set by the plan from a probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accelerator: Option<Accelerator>,
}

impl Job {
    /// The job name without the branch, safe as a file-name part and free of underscores
    /// (TestGrid's JUnit file pattern forbids them in the context): `docker-bridge`.
    pub fn context(&self) -> String {
        let mut parts = vec![self.provider.as_str().to_string(), self.cni.clone()];
        parts.extend(self.topology.name.clone());
        parts
            .join("-")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    }
}

/// Expands a validated scenario into its jobs, in a stable order.
pub fn expand(s: &LoadedScenario) -> Vec<Job> {
    let sc = &s.scenario;
    let mut jobs = Vec::new();
    for provider in &sc.providers {
        for cni in &sc.cni {
            for t in &sc.topologies {
                let control_planes = t.control_planes.max(0) as u32;
                let workers = t.workers.count().max(0) as u32;
                // Validation guarantees `vms` only comes with provider vm, within range.
                let (vm_control_planes, vm_workers) = match (provider, t.vms) {
                    (ProviderKind::Vm, Some(v)) => {
                        (v.control_planes.max(0) as u32, v.workers.max(0) as u32)
                    }
                    (ProviderKind::Vm, None) => (control_planes, workers),
                    _ => (0, 0),
                };
                let mut name = format!("{}/{}/{}", sc.branch, provider, cni);
                if let Some(n) = &t.name {
                    name.push('/');
                    name.push_str(n);
                }
                jobs.push(Job {
                    name,
                    branch: sc.branch.clone(),
                    provider: *provider,
                    cni: cni.clone(),
                    topology: Topology {
                        name: t.name.clone(),
                        // Validation guarantees these are in range.
                        control_planes,
                        workers,
                        worker_version: t.workers.version().map(String::from),
                        vm_control_planes,
                        vm_workers,
                    },
                    accelerator: None,
                });
            }
        }
    }
    jobs
}

/// What `--topology` calls a scenario's unnamed topology.
pub const DEFAULT_TOPOLOGY: &str = "default";

/// Keeps the jobs matching the optional provider, CNI and topology filters (a topology by
/// its name, or [`DEFAULT_TOPOLOGY`] for the unnamed one).
pub fn filter(
    jobs: Vec<Job>,
    provider: Option<&str>,
    cni: Option<&str>,
    topology: Option<&str>,
) -> Vec<Job> {
    jobs.into_iter()
        .filter(|j| provider.is_none_or(|p| j.provider.as_str() == p))
        .filter(|j| cni.is_none_or(|c| j.cni == c))
        .filter(|j| {
            topology.is_none_or(|t| j.topology.name.as_deref().unwrap_or(DEFAULT_TOPOLOGY) == t)
        })
        .collect()
}
