//! Prow job configuration (see shared/FORMATS.md): one file per scenario holding a periodic
//! postsubmit and a presubmit for each matrix cell (and conformance shard), each with the
//! TestGrid annotations that give it a tab on the branch's dashboard and alert its owners.
//! The periodics record into the shared run history whose URL the [`HISTORY_SECRET`]
//! secret holds, so streaks, notifications and sign-off see every cell's runs; presubmits
//! run unmerged code and never see it.

use super::{Jobs, Settings};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, PodSpec, ResourceRequirements,
    SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A Prow job config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProwConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub periodics: Vec<Periodic>,
    /// Keyed by `org/repo`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub presubmits: BTreeMap<String, Vec<Presubmit>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Periodic {
    pub name: String,
    /// A Go duration, e.g. `12h`.
    pub interval: String,
    pub decorate: bool,
    pub decoration_config: DecorationConfig,
    pub extra_refs: Vec<Ref>,
    pub annotations: BTreeMap<String, String>,
    pub spec: PodSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presubmit {
    pub name: String,
    pub always_run: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_if_changed: Option<String>,
    /// Non-blocking: a failure never stops a merge.
    pub optional: bool,
    /// Always false: a non-blocking job must still report its status.
    pub skip_report: bool,
    pub decorate: bool,
    pub decoration_config: DecorationConfig,
    pub annotations: BTreeMap<String, String>,
    pub spec: PodSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecorationConfig {
    /// Go duration after which Prow interrupts the job.
    pub timeout: String,
    /// Go duration between the interrupt and SIGKILL: the harness's cleanup budget.
    pub grace_period: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ref {
    pub org: String,
    pub repo: String,
    pub base_ref: String,
    /// The job runs in this checkout.
    pub workdir: bool,
}

/// The Kubernetes secret (in the namespace Prow runs test pods in) whose [`HISTORY_KEY`]
/// holds the PostgreSQL URL of the shared run history.
pub const HISTORY_SECRET: &str = "shakedown-history";
pub const HISTORY_KEY: &str = "url";

/// The Prow config for one scenario's jobs.
pub fn config(jobs: &Jobs, settings: &Settings) -> ProwConfig {
    let mut out = ProwConfig::default();
    let decoration_config = DecorationConfig {
        timeout: go_duration(jobs.timeout),
        grace_period: go_duration(jobs.grace),
    };
    for p in &jobs.periodics {
        let mut spec = pod_spec(settings, &p.args);
        spec.containers[0].env = Some(vec![EnvVar {
            name: "SHAKEDOWN_HISTORY".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: HISTORY_SECRET.into(),
                    key: HISTORY_KEY.into(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        out.periodics.push(Periodic {
            name: p.name.clone(),
            interval: go_duration(p.interval.unwrap_or_default()),
            decorate: true,
            decoration_config: decoration_config.clone(),
            extra_refs: vec![Ref {
                org: settings.org().to_string(),
                repo: settings.repo_name().to_string(),
                base_ref: jobs.base_ref.clone(),
                workdir: true,
            }],
            annotations: p.annotations.clone(),
            spec,
        });
    }
    for p in &jobs.presubmits {
        out.presubmits
            .entry(settings.repo.clone())
            .or_default()
            .push(Presubmit {
                name: p.name.clone(),
                always_run: p.run_if_changed.is_none(),
                run_if_changed: p.run_if_changed.clone(),
                optional: true,
                skip_report: false,
                decorate: true,
                decoration_config: decoration_config.clone(),
                annotations: p.annotations.clone(),
                spec: pod_spec(settings, &p.args),
            });
    }
    out
}

/// A privileged container that runs `cargo run -- <args>`; `host-setup` starts dockerd in
/// it, with its storage on an emptyDir (overlay on overlay does not work).
fn pod_spec(settings: &Settings, args: &[String]) -> PodSpec {
    let q = |s: &str| Quantity(s.to_string());
    let resources = BTreeMap::from([("cpu".to_string(), q("4")), ("memory".into(), q("8Gi"))]);
    PodSpec {
        containers: vec![Container {
            name: "test".into(),
            image: Some(settings.image.clone()),
            command: Some(vec!["cargo".into()]),
            args: Some(
                ["run", "--locked", "--"]
                    .iter()
                    .map(|s| s.to_string())
                    .chain(args.iter().cloned())
                    .collect(),
            ),
            security_context: Some(SecurityContext {
                privileged: Some(true),
                ..Default::default()
            }),
            resources: Some(ResourceRequirements {
                requests: Some(resources.clone()),
                limits: Some(resources),
                ..Default::default()
            }),
            volume_mounts: Some(vec![VolumeMount {
                name: "docker-graph".into(),
                mount_path: "/var/lib/docker".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }],
        volumes: Some(vec![Volume {
            name: "docker-graph".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// A duration as Go's `time.ParseDuration` reads it: `2h5m10s`, zero parts left out.
pub fn go_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || out.is_empty() {
        out.push_str(&format!("{sec}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn go_durations_leave_out_zero_parts() {
        assert_eq!(go_duration(Duration::from_secs(12 * 3600)), "12h");
        assert_eq!(go_duration(Duration::from_secs(2 * 3600 + 310)), "2h5m10s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }
}
