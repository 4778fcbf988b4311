//! The scenario file: one YAML document per release branch.
//!
//! Every struct rejects unknown fields, so a typo is an error with a location rather than a
//! silently ignored setting.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// A release-branch scenario, as written in `scenarios/<branch>.yaml`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Release branch this scenario tests, e.g. `release-1.20`; also the scenario's name.
    pub branch: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Where the Kubernetes under test comes from.
    pub kubernetes: KubernetesSpec,
    /// Cluster providers to run on (matrix axis).
    pub providers: Vec<ProviderKind>,
    /// Cluster shapes to run (matrix axis).
    pub topologies: Vec<TopologySpec>,
    /// CNI variants to apply, by name of a folder in `cni-variants/` (matrix axis).
    pub cni: Vec<String>,
    /// Era-specific cluster settings.
    #[serde(default)]
    pub cluster: ClusterSpec,
    pub conformance: ConformanceSpec,
    /// Ordered steps every matrix job runs.
    pub steps: Vec<StepSpec>,
    /// Deadline for the whole run; `always` steps still run after it passes.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub run_deadline: Option<Duration>,
    /// The CI jobs this scenario feeds.
    #[serde(default, skip_serializing_if = "CiSpec::is_empty")]
    pub ci: CiSpec,
    /// How much unavailability users may feel during a control-plane loss (and upgrades).
    #[serde(default, skip_serializing_if = "DisruptionSpec::is_default")]
    pub disruption: DisruptionSpec,
    /// The upgrade chain the `upgrade` steps walk, one hop per version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeSpec>,
    /// How VM nodes are made (provider `vm`).
    #[serde(default, skip_serializing_if = "VmSpec::is_default")]
    pub vm: VmSpec,
    /// The `storage` step's checks.
    #[serde(default, skip_serializing_if = "StorageSpec::is_default")]
    pub storage: StorageSpec,
    /// The `soak` step: how long it churns, and what it may leave behind.
    #[serde(default, skip_serializing_if = "SoakSpec::is_default")]
    pub soak: SoakSpec,
}

/// The soak tier (`soak` steps): churn for `duration`, one cycle at most every
/// `churn_every`, then compare the cluster with how it was before.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SoakSpec {
    #[serde(with = "humantime_serde", default = "default_soak_duration")]
    pub duration: Duration,
    #[serde(with = "humantime_serde", default = "default_churn_every")]
    pub churn_every: Duration,
    /// How many churn namespaces live at once (older ones are deleted).
    #[serde(default = "default_soak_live")]
    pub live_namespaces: u32,
    #[serde(default)]
    pub max_growth: SoakLimits,
}

/// What a soak may leave behind: counts as absolute growth, RSS and descriptors in percent.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SoakLimits {
    #[serde(default)]
    pub iptables_rules: i64,
    #[serde(default)]
    pub mounts: i64,
    #[serde(default)]
    pub objects: i64,
    /// By process (`kube-apiserver`, `kubelet`, `etcd`); one not named is only reported.
    #[serde(default = "default_rss_percent")]
    pub rss_percent: std::collections::BTreeMap<String, f64>,
    #[serde(default = "default_fds_percent")]
    pub fds_percent: f64,
}

fn default_soak_duration() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_churn_every() -> Duration {
    Duration::from_secs(5)
}

fn default_soak_live() -> u32 {
    2
}

fn default_rss_percent() -> std::collections::BTreeMap<String, f64> {
    ["kube-apiserver", "kubelet", "etcd"]
        .iter()
        .map(|p| (p.to_string(), 20.0))
        .collect()
}

fn default_fds_percent() -> f64 {
    50.0
}

impl Default for SoakLimits {
    fn default() -> Self {
        SoakLimits {
            iptables_rules: 0,
            mounts: 0,
            objects: 0,
            rss_percent: default_rss_percent(),
            fds_percent: default_fds_percent(),
        }
    }
}

impl Default for SoakSpec {
    fn default() -> Self {
        SoakSpec {
            duration: default_soak_duration(),
            churn_every: default_churn_every(),
            live_namespaces: default_soak_live(),
            max_growth: SoakLimits::default(),
        }
    }
}

impl SoakSpec {
    fn is_default(&self) -> bool {
        *self == SoakSpec::default()
    }
}

/// The storage tier (`storage` steps): how many pods share one Secret volume, and how long
/// they may take to all run.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSpec {
    #[serde(default = "default_shared_secret_pods")]
    pub shared_secret_pods: u32,
    #[serde(with = "humantime_serde", default = "default_running_within")]
    pub running_within: Duration,
}

fn default_shared_secret_pods() -> u32 {
    30
}

fn default_running_within() -> Duration {
    Duration::from_secs(180)
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            shared_secret_pods: default_shared_secret_pods(),
            running_within: default_running_within(),
        }
    }
}

impl StorageSpec {
    fn is_default(&self) -> bool {
        *self == StorageSpec::default()
    }
}

/// VM nodes (provider `vm`): their size, and how much longer steps may take when qemu has
/// no KVM and emulates the CPU (TCG).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    #[serde(default = "default_vm_memory_mb")]
    pub memory_mb: u32,
    #[serde(default = "default_vm_cpus")]
    pub cpus: u32,
    /// Every deadline of a VM job is multiplied by this under TCG (not under KVM).
    #[serde(default = "default_tcg_deadline_factor")]
    pub tcg_deadline_factor: f64,
    /// The Debian package whose kernel VM nodes boot.
    #[serde(default = "default_kernel_package")]
    pub kernel_package: String,
}

fn default_vm_memory_mb() -> u32 {
    2048
}
fn default_vm_cpus() -> u32 {
    2
}
fn default_tcg_deadline_factor() -> f64 {
    3.0
}
fn default_kernel_package() -> String {
    "linux-image-cloud-amd64".into()
}

impl Default for VmSpec {
    fn default() -> Self {
        VmSpec {
            memory_mb: default_vm_memory_mb(),
            cpus: default_vm_cpus(),
            tcg_deadline_factor: default_tcg_deadline_factor(),
            kernel_package: default_kernel_package(),
        }
    }
}

impl VmSpec {
    fn is_default(&self) -> bool {
        *self == VmSpec::default()
    }
}

/// How qemu runs a VM node's CPU: KVM when `/dev/kvm` really works (probed with a tiny
/// boot), else TCG, software emulation, many times slower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accelerator {
    Kvm,
    Tcg,
}

impl Accelerator {
    pub fn as_str(self) -> &'static str {
        match self {
            Accelerator::Kvm => "kvm",
            Accelerator::Tcg => "tcg",
        }
    }
}

/// An upgrade chain: the cluster starts at `kubernetes` (the `from`), then each `upgrade`
/// step takes it one hop further through `through`, in order.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeSpec {
    /// Where the chain starts; when set it must name what `kubernetes` names (it is there
    /// to make the chain readable in one place).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The versions to pass through, oldest first, e.g. `[v1.19.16, v1.20.15]`: fixed
    /// versions, or release markers with `source: release`. Obtained as `kubernetes` says:
    /// from the release bucket, or for `debian-source` the same source tree built again
    /// under this version string.
    pub through: Vec<String>,
    /// Workers upgraded at once (drained together); control planes always go one at a time.
    #[serde(default = "one")]
    pub max_unavailable: u32,
    /// Fault injection: images of the target left out of the nodes (by name, e.g.
    /// `kube-proxy`), to prove a broken hop is caught by its gate within its deadline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub omit_images: Vec<String>,
}

fn one() -> u32 {
    1
}

/// Thresholds on measured unavailability; each becomes a pass or a failure naming the
/// window.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DisruptionSpec {
    /// The longest the API may go unanswered through the load balancer.
    #[serde(with = "humantime_serde", default = "default_api_max")]
    pub api_max: Duration,
    /// The longest a Service may go unanswered from a pod in the cluster (upgrades).
    #[serde(with = "humantime_serde", default = "default_service_max")]
    pub service_max: Duration,
}

fn default_service_max() -> Duration {
    Duration::from_secs(5)
}

fn default_api_max() -> Duration {
    Duration::from_secs(5)
}

impl Default for DisruptionSpec {
    fn default() -> Self {
        DisruptionSpec {
            api_max: default_api_max(),
            service_max: default_service_max(),
        }
    }
}

impl DisruptionSpec {
    fn is_default(&self) -> bool {
        *self == DisruptionSpec::default()
    }
}

/// Exactly one of `version` or `marker` names the version; `source` says how to obtain it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSpec {
    /// A fixed version, e.g. `v1.20.2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// A release marker, e.g. `stable-1.20` or `latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
    pub source: SourceKind,
    /// For `source: binaries`: the folder holding kubeadm, kubelet, kubectl, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binaries: Option<PathBuf>,
    /// For `source: debian-source`: the Debian source package version to build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debian_version: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// Build from Debian's `kubernetes` source package (works offline on this machine).
    DebianSource,
    /// Official release binaries for the version or marker (needs network access to the release bucket).
    Release,
    /// A local folder of binaries (`binaries:`), e.g. from `make quick-release`.
    Binaries,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Built-in: docker containers as nodes.
    Docker,
    /// podman containers as nodes, the same node image.
    Podman,
    /// A cluster someone else made, reached through `--kubeconfig`.
    Existing,
    /// kind clusters (needs the `kind` binary).
    Kind,
    /// Virtual machines under qemu.
    Vm,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Docker => "docker",
            ProviderKind::Podman => "podman",
            ProviderKind::Existing => "existing",
            ProviderKind::Kind => "kind",
            ProviderKind::Vm => "vm",
        }
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySpec {
    /// Appended to the job name when set; leave unset for the single default shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub control_planes: i64,
    /// A count (`workers: 2`), or a group pinned to another Kubernetes version than the
    /// control plane's (`workers: {count: 1, version: v1.19.16}`) to test version skew.
    pub workers: WorkersSpec,
    /// Which nodes are VMs under provider `vm` (the rest are containers on the same
    /// network): e.g. `{workers: 1}` for a container control plane and one VM worker.
    /// Unset: every node is a VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vms: Option<VmNodes>,
}

/// How many of a topology's nodes are VMs: the last ones of each role.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VmNodes {
    #[serde(default)]
    pub control_planes: i64,
    #[serde(default)]
    pub workers: i64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum WorkersSpec {
    Count(i64),
    Group(WorkerGroup),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerGroup {
    pub count: i64,
    /// Their kubelet, kubeadm and kubectl: a fixed version, obtained as `kubernetes` says.
    pub version: String,
}

/// By hand, not `untagged`: the YAML loader hands scalars over as text, and an untagged
/// enum's error ("did not match any variant") would not say what was wrong.
impl<'de> Deserialize<'de> for WorkersSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = WorkersSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a worker count, or {count, version}")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<WorkersSpec, E> {
                Ok(WorkersSpec::Count(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<WorkersSpec, E> {
                i64::try_from(v)
                    .map(WorkersSpec::Count)
                    .map_err(|_| E::custom(format!("{v} workers is too many")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<WorkersSpec, E> {
                v.trim().parse().map(WorkersSpec::Count).map_err(|_| {
                    E::custom(format!(
                        "expected a worker count, or {{count, version}}, got {v:?}"
                    ))
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<WorkersSpec, A::Error> {
                WorkerGroup::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(WorkersSpec::Group)
            }
        }
        d.deserialize_any(V)
    }
}

impl WorkersSpec {
    pub fn count(&self) -> i64 {
        match self {
            WorkersSpec::Count(n) => *n,
            WorkersSpec::Group(g) => g.count,
        }
    }
    pub fn version(&self) -> Option<&str> {
        match self {
            WorkersSpec::Count(_) => None,
            WorkersSpec::Group(g) => Some(&g.version),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// kubeadm config API group version; derived from the Kubernetes version when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeadm_api: Option<String>,
    /// Taint kubeadm puts on control-plane nodes; derived from the version when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_taint: Option<String>,
    #[serde(default = "yes")]
    pub rbac: bool,
    #[serde(default = "default_pod_subnet")]
    pub pod_subnet: String,
    #[serde(default = "default_service_subnet")]
    pub service_subnet: String,
    /// The nodes' container runtime: `containerd`, or `docker` through kubelet's dockershim
    /// (1.6-1.23; 1.6-1.9 need it). Derived from the version when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<crate::release::era::Runtime>,
    /// Registry mirrors, `REGISTRY=URL` (e.g. `registry.k8s.io=http://10.0.0.2:5000`): pulls
    /// of that registry go to URL only, and images are pulled instead of preloaded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registry_mirrors: Vec<crate::release::mirror::Mirror>,
    /// What the HA gate does when API watches opened before etcd lost its leader (as it
    /// does while stacked control planes join) no longer deliver events. Unset: the gate
    /// fails. Either way it is reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_watch_remedy: Option<StaleWatchRemedy>,
    /// Where etcd runs: `stacked` on the control planes (kubeadm's default), or
    /// `external`: a 3-member etcd with TLS on nodes of its own, made by an `etcd-up` step.
    #[serde(default, skip_serializing_if = "EtcdMode::is_stacked")]
    pub etcd: EtcdMode,
    /// How `kubeadm join` finds the cluster, named as kinder's `--discovery-mode`:
    /// `token` (the default) or `file-with-token` (1.13 or later).
    #[serde(default, skip_serializing_if = "Discovery::is_token")]
    pub discovery: Discovery,
}

/// How a joining node finds and trusts the cluster (`cluster.discovery`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Discovery {
    /// `discovery.bootstrapToken`: kubeadm reads the `cluster-info` ConfigMap until the
    /// controller manager's bootstrap signer has signed it for the token, the path most
    /// users take.
    #[default]
    Token,
    /// `discovery.file` with `tlsBootstrapToken`: a kubeconfig naming the API server and
    /// the cluster's CA (no credentials), the token only for the kubelet's TLS bootstrap.
    /// The node does not wait for the bootstrap signer.
    FileWithToken,
}

impl Discovery {
    pub fn is_token(&self) -> bool {
        *self == Discovery::Token
    }
}

/// Where etcd runs (`cluster.etcd`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EtcdMode {
    /// One member on each control plane, managed by kubeadm.
    #[default]
    Stacked,
    /// [`EXTERNAL_ETCD_MEMBERS`] members on nodes of their own, following kubeadm's guide
    /// to an HA etcd: certificates and static pods from `kubeadm init phase`, a kubelet
    /// that only runs static pods, and `etcd.external` in the cluster's configuration.
    External,
}

/// The size of an external etcd: three tolerate the loss of one member.
pub const EXTERNAL_ETCD_MEMBERS: u32 = 3;

impl EtcdMode {
    pub fn is_stacked(&self) -> bool {
        *self == EtcdMode::Stacked
    }
    /// How many etcd nodes a provider makes for it.
    pub fn nodes(self) -> u32 {
        match self {
            EtcdMode::Stacked => 0,
            EtcdMode::External => EXTERNAL_ETCD_MEMBERS,
        }
    }
}

/// A remedy for stale API watches after control planes joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StaleWatchRemedy {
    /// Restart each API server in turn (the load balancer keeps the API up), so every
    /// client opens its watches again.
    RestartApiServers,
}

fn yes() -> bool {
    true
}
fn is_false(b: &bool) -> bool {
    !*b
}
fn default_pod_subnet() -> String {
    "10.244.0.0/16".into()
}
fn default_service_subnet() -> String {
    "10.96.0.0/12".into()
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            kubeadm_api: None,
            control_plane_taint: None,
            rbac: true,
            pod_subnet: default_pod_subnet(),
            service_subnet: default_service_subnet(),
            runtime: None,
            registry_mirrors: Vec::new(),
            stale_watch_remedy: None,
            etcd: EtcdMode::Stacked,
            discovery: Discovery::Token,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// Tier 1: per-node validation.
    Node,
    /// Tier 2: short cluster validation (about five minutes).
    Smoke,
    /// Tier 3: e2e.test conformance.
    Conformance,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConformanceMode {
    ConformanceLite,
    NonDisruptive,
    Certified,
}

/// Where e2e.test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConformanceRunner {
    /// On this machine, one e2e.test process per spec, each with its own deadline.
    #[default]
    Host,
    /// The conformance image as a Pod in the cluster, as sonobuoy and hydrophone run it.
    InCluster,
}

impl ConformanceRunner {
    pub fn as_str(self) -> &'static str {
        match self {
            ConformanceRunner::Host => "host",
            ConformanceRunner::InCluster => "in-cluster",
        }
    }
}

/// `conformance.parallel`: a fixed number of specs at once, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parallel {
    Fixed(u32),
    /// [`Parallel::PER_NODE`] specs per node that takes pods, within [`Parallel::MAX`]:
    /// conformance specs mostly wait on pods, so the cluster, not this machine's CPU, is
    /// what limits them.
    Auto,
}

impl Parallel {
    /// Specs at once per schedulable node under `auto`.
    pub const PER_NODE: u32 = 6;
    /// The most specs at once under `auto`.
    pub const MAX: u32 = 16;

    /// How many specs run at once on a cluster with `schedulable` nodes that take pods.
    pub fn width(self, schedulable: usize) -> u32 {
        match self {
            Parallel::Fixed(n) => n.max(1),
            Parallel::Auto => (Parallel::PER_NODE * schedulable.max(1) as u32).min(Parallel::MAX),
        }
    }
}

impl std::fmt::Display for Parallel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Parallel::Fixed(n) => write!(f, "{n}"),
            Parallel::Auto => f.write_str("auto"),
        }
    }
}

impl Serialize for Parallel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Parallel::Fixed(n) => s.serialize_u32(*n),
            Parallel::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for Parallel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Parallel, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Parallel;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of specs at once (1 or more), or `auto`")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Parallel, E> {
                match u32::try_from(n) {
                    Ok(n) if n >= 1 => Ok(Parallel::Fixed(n)),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Unsigned(n), &self)),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Parallel, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::invalid_value(serde::de::Unexpected::Signed(n), &self)),
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Parallel, E> {
                // A YAML reader may hand a plain scalar over as text.
                match v {
                    "auto" => Ok(Parallel::Auto),
                    _ => match v.parse::<u64>() {
                        Ok(n) => self.visit_u64(n),
                        Err(_) => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                    },
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConformanceSpec {
    pub tier: Tier,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ConformanceMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub focus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<String>,
    /// How many specs run at once (host runner): a number, or `auto` for what the cluster
    /// carries (see [`Parallel::width`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<Parallel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flake_attempts: Option<u32>,
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub spec_deadline: Option<Duration>,
    /// A disabled tier must say why and until when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<Disabled>,
    /// `host` (default) or `in-cluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<ConformanceRunner>,
    /// For `runner: in-cluster`: the conformance image to run, e.g.
    /// `registry.k8s.io/conformance:v1.20.2`. Unset: built here from the same e2e.test and
    /// loaded into the nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// e2e.test (and ginkgo) from this folder or test tarball
    /// (`kubernetes-test-linux-amd64.tar.gz`) instead of the cluster's own build; relative
    /// to the repository root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2e_binaries: Option<PathBuf>,
    /// How long each spec took on a measured run (`shakedown history --spec-durations`
    /// writes one), relative to the scenario's folder: the order a run without history
    /// starts specs in, longest first. What the run history recorded takes precedence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durations: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Disabled {
    pub reason: String,
    /// `YYYY-MM-DD`; after this date the scenario no longer validates.
    pub expires: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub name: String,
    /// One of the actions `shakedown` knows ([`crate::scenario::ActionKind`]).
    pub action: crate::scenario::ActionKind,
    /// Hard deadline; the step's process groups get SIGTERM, then SIGKILL after `grace`.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub grace: Option<Duration>,
    /// Report the step as slow every this often while it runs.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub slow_after: Option<Duration>,
    /// Runs even after an earlier failure or an interruption (log export, teardown).
    #[serde(default, skip_serializing_if = "is_false")]
    pub always: bool,
    /// A failure is reported but neither skips later steps nor fails the run.
    #[serde(default, skip_serializing_if = "is_false")]
    pub non_blocking: bool,
    /// For `action: exec`: the command and its arguments; a relative program path is
    /// resolved against the repository root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CiSpec {
    /// A periodic postsubmit job that runs the scenario against its branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub periodic: Option<PeriodicSpec>,
    /// A non-blocking presubmit job that always reports a status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presubmit: Option<PresubmitSpec>,
    /// TestGrid dashboards and alerting for both jobs; required when either job is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub testgrid: Option<TestgridSpec>,
    /// Who hears about a red postsubmit, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifySpec>,
    /// Run conformance as this many shards, each a job of its own per cell
    /// (`--conformance-shard K/N`), so that Prow spreads them over pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<u32>,
}

impl CiSpec {
    pub fn is_empty(&self) -> bool {
        self.periodic.is_none()
            && self.presubmit.is_none()
            && self.testgrid.is_none()
            && self.notify.is_none()
            && self.shards.is_none()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodicSpec {
    /// How often the postsubmit runs against the branch, e.g. `12h`.
    pub interval: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PresubmitSpec {
    /// Only run when files matching this regex change; unset runs on every change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_if_changed: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TestgridSpec {
    pub dashboards: Vec<String>,
    pub alert_email: String,
    pub num_failures_to_alert: u32,
    pub alert_stale_results_hours: u32,
    /// Columns TestGrid summarises a tab's recent state from; presubmits always get at
    /// least 20. Default 10 for the periodic job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_columns_recent: Option<u32>,
    /// Owning SIG, e.g. `sig-cluster-lifecycle`.
    pub owner: String,
}

/// Notification when a postsubmit job keeps failing, and again when it recovers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySpec {
    /// Consecutive failed runs of one job that trigger one notification for the streak.
    pub failure_streak: u32,
    /// Webhook that receives a JSON POST (Slack incoming-webhook compatible: a `text` field).
    /// Webhook URLs are secrets: prefer `webhook_env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Environment variable holding the webhook URL; default `SHAKEDOWN_NOTIFY_WEBHOOK`.
    /// Used when `webhook` is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_env: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_is_a_number_or_auto_which_scales_with_schedulable_nodes() {
        let p: Parallel = serde_yaml::from_str("4").unwrap();
        assert_eq!(p, Parallel::Fixed(4));
        assert_eq!(p.width(10), 4);
        let auto: Parallel = serde_yaml::from_str("auto").unwrap();
        assert_eq!(auto, Parallel::Auto);
        assert_eq!(auto.width(0), Parallel::PER_NODE);
        assert_eq!(auto.width(1), Parallel::PER_NODE);
        assert_eq!(auto.width(2), 2 * Parallel::PER_NODE);
        assert_eq!(auto.width(100), Parallel::MAX);
        for bad in ["0", "lots", "-3"] {
            assert!(serde_yaml::from_str::<Parallel>(bad).is_err(), "{bad}");
        }
        assert_eq!(serde_yaml::to_string(&auto).unwrap().trim(), "auto");
        assert_eq!(serde_yaml::to_string(&p).unwrap().trim(), "4");
    }
}
