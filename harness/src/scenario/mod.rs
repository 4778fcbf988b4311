//! Release-branch scenarios: loading and validation.

pub mod action;
pub mod durations;
mod model;
pub mod new;
pub mod schedule;

pub use action::{ActionKind, Stage, StepKind};
pub use model::*;

use crate::cni::Catalog;
use crate::config::{self, ConfigError, ConfigErrors, Located};
use crate::release::{self, version::marker_minor, KubeVersion};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use time::Date;

/// The most conformance shards `ci.shards` may ask for: each is a job per cell.
pub const MAX_CI_SHARDS: u32 = 16;

/// A scenario that parsed and validated, with facts derived from it.
#[derive(Debug, Clone)]
pub struct LoadedScenario {
    pub path: PathBuf,
    pub scenario: Scenario,
    /// The version under test: the fixed version, or the minor line a marker names;
    /// `None` for `latest` (newest, resolved at run time).
    pub version: Option<KubeVersion>,
    pub located: Located,
    /// The spec duration table `conformance.durations` names, read once when the scenario
    /// loaded (empty without one).
    pub spec_durations: std::collections::BTreeMap<String, std::time::Duration>,
}

impl LoadedScenario {
    pub fn name(&self) -> &str {
        &self.scenario.branch
    }

    /// The version string recorded in reports (`job-version`).
    pub fn version_label(&self) -> String {
        let k = &self.scenario.kubernetes;
        match (&k.version, &k.marker) {
            (Some(v), _) => v.clone(),
            (None, Some(m)) => m.clone(),
            _ => "unknown".into(),
        }
    }

    /// The kubeadm config API the cluster is rendered with.
    pub fn kubeadm_api(&self) -> Option<String> {
        self.scenario.cluster.kubeadm_api.clone().or_else(|| {
            self.version
                .as_ref()
                .and_then(release::default_kubeadm_api)
                .map(String::from)
        })
    }
}

/// Today's date in UTC, for waiver expiry.
pub fn today() -> Date {
    time::OffsetDateTime::now_utc().date()
}

/// A scenario by name (`release-1.20`, found in `<root>/scenarios/`) or by path.
pub fn path_of(root: &Path, name: &str) -> PathBuf {
    if name.ends_with(".yaml") || name.ends_with(".yml") || name.contains('/') {
        PathBuf::from(name)
    } else {
        root.join("scenarios").join(format!("{name}.yaml"))
    }
}

/// Why a scenario named on the command line could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error("no scenario {name:?} ({} does not exist); known scenarios: {known}", path.display())]
    Missing {
        name: String,
        path: PathBuf,
        known: String,
    },
    #[error(transparent)]
    Invalid(#[from] ConfigErrors),
}

/// The CNI catalog of `root` and the scenario `name` (see [`path_of`]), validated against it.
pub fn load_named(root: &Path, name: &str) -> Result<(LoadedScenario, Catalog), FindError> {
    let catalog = Catalog::load(&root.join("cni-variants"))?;
    let path = path_of(root, name);
    if !path.is_file() {
        let known = files_in(&root.join("scenarios"))
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(FindError::Missing {
            name: name.to_string(),
            path,
            known,
        });
    }
    let s = load(&path, &catalog, today())?;
    Ok((s, catalog))
}

/// Loads and validates one scenario file.
pub fn load(path: &Path, catalog: &Catalog, today: Date) -> Result<LoadedScenario, ConfigErrors> {
    let (scenario, located) = config::load_file::<Scenario>(path)?;
    finish(path, scenario, located, catalog, today)
}

/// Loads and validates scenario text (named `path` in errors).
pub fn load_str(
    path: &Path,
    text: &str,
    catalog: &Catalog,
    today: Date,
) -> Result<LoadedScenario, ConfigErrors> {
    let (scenario, located) = config::load_str::<Scenario>(path, text)?;
    finish(path, scenario, located, catalog, today)
}

/// Validates a loaded scenario again after it was changed in memory (command-line
/// overrides): errors still name the file, line and field.
pub fn recheck(
    s: LoadedScenario,
    catalog: &Catalog,
    today: Date,
) -> Result<LoadedScenario, ConfigErrors> {
    finish(&s.path, s.scenario, s.located, catalog, today)
}

fn finish(
    path: &Path,
    scenario: Scenario,
    located: Located,
    catalog: &Catalog,
    today: Date,
) -> Result<LoadedScenario, ConfigErrors> {
    let (version, errors) = validate(path, &scenario, &located, catalog, today);
    let mut errors = errors;
    let mut spec_durations = Default::default();
    if let Some(d) = &scenario.conformance.durations {
        let file = path.parent().unwrap_or(Path::new(".")).join(d);
        match durations::read_duration_table(&file) {
            Ok(t) => spec_durations = t,
            Err(e) => errors.push(located.error("conformance.durations", crate::error::chain(&e))),
        }
    }
    if errors.is_empty() {
        Ok(LoadedScenario {
            path: path.to_path_buf(),
            scenario,
            version,
            located,
            spec_durations,
        })
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Finds every `*.yaml` in `dir`, sorted by name.
pub fn files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

fn validate(
    path: &Path,
    s: &Scenario,
    loc: &Located,
    catalog: &Catalog,
    today: Date,
) -> (Option<KubeVersion>, Vec<ConfigError>) {
    let mut errs = Vec::new();
    let mut err = |field: &str, msg: String| errs.push(loc.error(field, msg));

    // The file is named after its branch, so `shakedown scenario <branch>` finds it.
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if s.branch.trim().is_empty() {
        err("branch", "must not be empty".into());
    } else if stem != s.branch {
        err(
            "branch",
            format!("branch {:?} must match the file name {stem:?}", s.branch),
        );
    }

    // Kubernetes source.
    let k = &s.kubernetes;
    let mut version = None;
    match (&k.version, &k.marker) {
        (Some(_), Some(_)) => err(
            "kubernetes.marker",
            "set either `version` or `marker`, not both".into(),
        ),
        (None, None) => err(
            "kubernetes",
            "one of `version` (e.g. v1.20.2) or `marker` (e.g. stable-1.20) is required".into(),
        ),
        (Some(v), None) => match v.parse::<KubeVersion>() {
            Ok(v) if v.patch.is_some() => version = Some(v),
            Ok(_) => err(
                "kubernetes.version",
                format!("{v:?} is a minor line; a fixed version needs a patch (e.g. {v}.0) or use `marker: stable-{}`", v.trim_start_matches('v')),
            ),
            Err(e) => err("kubernetes.version", e.to_string()),
        },
        (None, Some(m)) => {
            if m != "latest" {
                match marker_minor(m) {
                    Some(v) => version = Some(v),
                    None => err(
                        "kubernetes.marker",
                        format!("unknown release marker {m:?}: expected latest, stable-<major>.<minor> or latest-<major>.<minor>"),
                    ),
                }
            }
        }
    }
    match k.source {
        SourceKind::DebianSource => {
            if k.debian_version.is_none() {
                err(
                    "kubernetes.debian_version",
                    "source debian-source needs the Debian source version to build (e.g. 1.20.5+really1.20.2-1.1+deb12u1)".into(),
                );
            }
            if k.version.is_none() {
                err(
                    "kubernetes.version",
                    "source debian-source needs the fixed version the package contains".into(),
                );
            }
        }
        SourceKind::Binaries if k.binaries.is_none() => err(
            "kubernetes.binaries",
            "source binaries needs the folder holding kubeadm, kubelet and kubectl".into(),
        ),
        _ => {}
    }
    if k.binaries.is_some() && k.source != SourceKind::Binaries {
        err(
            "kubernetes.binaries",
            "only used with `source: binaries`".into(),
        );
    }

    // Matrix axes.
    if s.providers.is_empty() {
        err("providers", "at least one provider is required".into());
    }
    let mut seen = HashSet::new();
    for (i, p) in s.providers.iter().enumerate() {
        if !seen.insert(*p) {
            err(
                &format!("providers[{i}]"),
                format!("duplicate provider {p}"),
            );
        }
    }
    if s.topologies.is_empty() {
        err("topologies", "at least one topology is required".into());
    }
    let mut names = HashSet::new();
    for (i, t) in s.topologies.iter().enumerate() {
        if t.control_planes < 1 {
            err(
                &format!("topologies[{i}].control_planes"),
                format!("must be at least 1, got {}", t.control_planes),
            );
        }
        // Several control planes join with certificates kubeadm uploads (1.15+).
        if let Some(v) = version.filter(|v| t.control_planes > 1 && v.minor < 15) {
            err(
                &format!("topologies[{i}].control_planes"),
                format!(
                    "{} control planes need kubeadm 1.15 or later (`init --upload-certs`, `join --control-plane`); {v} has no certificate upload",
                    t.control_planes
                ),
            );
        }
        if t.workers.count() < 0 {
            err(
                &format!("topologies[{i}].workers"),
                format!("must not be negative, got {}", t.workers.count()),
            );
        }
        if let Some(vms) = t.vms {
            let f = format!("topologies[{i}].vms");
            if !s.providers.iter().all(|p| *p == ProviderKind::Vm) {
                err(
                    &f,
                    "says which nodes are VMs, so it needs `providers: [vm]` (other providers would make every node a container)".into(),
                );
            }
            if vms.control_planes < 0 || vms.control_planes > t.control_planes {
                err(
                    &format!("{f}.control_planes"),
                    format!(
                        "must be between 0 and the topology's {} control planes, got {}",
                        t.control_planes, vms.control_planes
                    ),
                );
            }
            if vms.workers < 0 || vms.workers > t.workers.count() {
                err(
                    &format!("{f}.workers"),
                    format!(
                        "must be between 0 and the topology's {} workers, got {}",
                        t.workers.count(),
                        vms.workers
                    ),
                );
            }
            if vms.control_planes + vms.workers == 0 {
                err(
                    &f,
                    "names no VM node; drop it, or use another provider".into(),
                );
            }
        }
        match &t.name {
            Some(n) if !names.insert(n.clone()) => err(
                &format!("topologies[{i}].name"),
                format!("duplicate topology name {n:?}"),
            ),
            Some(n) if !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') => err(
                &format!("topologies[{i}].name"),
                format!(
                    "{n:?} may only hold letters, digits and '-' (it becomes part of job names)"
                ),
            ),
            None if s.topologies.len() > 1 => err(
                &format!("topologies[{i}].name"),
                "with more than one topology each needs a name, to keep job names distinct".into(),
            ),
            _ => {}
        }
    }
    if s.vm.memory_mb < 512 {
        err(
            "vm.memory_mb",
            format!(
                "must be at least 512 (kubelet and containerd need it), got {}",
                s.vm.memory_mb
            ),
        );
    }
    if s.vm.cpus < 1 {
        err("vm.cpus", "must be at least 1".into());
    }
    if !(s.vm.tcg_deadline_factor >= 1.0 && s.vm.tcg_deadline_factor <= 100.0) {
        err(
            "vm.tcg_deadline_factor",
            format!(
                "must be between 1 and 100, got {}",
                s.vm.tcg_deadline_factor
            ),
        );
    }
    if s.cni.is_empty() {
        err("cni", "at least one CNI variant is required".into());
    }
    let mut seen = HashSet::new();
    for (i, c) in s.cni.iter().enumerate() {
        let field = format!("cni[{i}]");
        if !seen.insert(c) {
            err(&field, format!("duplicate CNI variant {c:?}"));
            continue;
        }
        match catalog.get(c) {
            None => err(
                &field,
                format!(
                    "unknown CNI variant {c:?}; known variants: {}",
                    catalog.names().join(", ")
                ),
            ),
            Some(v) => {
                let ok = match (&k.marker, version) {
                    (Some(m), None) if m == "latest" => v.release_for(None).is_some(),
                    (_, Some(ver)) => v.release_for(Some(&ver)).is_some(),
                    _ => true, // the version itself is already reported invalid
                };
                if !ok {
                    err(
                        &field,
                        format!(
                            "CNI variant {c:?} does not support Kubernetes {}; it supports {}",
                            version
                                .map(|v| v.to_string())
                                .unwrap_or_else(|| "latest".into()),
                            v.supported_ranges()
                        ),
                    );
                }
            }
        }
    }

    // Era-specific cluster settings.
    if let Some(v) = version {
        if let Some(api) = &s.cluster.kubeadm_api {
            let served = release::kubeadm_apis_for(&v);
            if !served.contains(&api.as_str()) {
                err(
                    "cluster.kubeadm_api",
                    format!(
                        "kubeadm {v} does not accept {api}; it accepts {}",
                        served.join(", ")
                    ),
                );
            }
        }
        if let Some(rt) = s.cluster.runtime {
            let runtimes = release::era::runtimes_for(&v);
            if !runtimes.contains(&rt) {
                err(
                    "cluster.runtime",
                    format!(
                        "kubelet {v} cannot use the {rt} runtime; it can use {}",
                        runtimes
                            .iter()
                            .map(|r| r.to_string())
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ),
                );
            }
        }
        if let Some(t) = &s.cluster.control_plane_taint {
            let taints = release::control_plane_taints(&v);
            if !taints.contains(&t.as_str()) {
                err(
                    "cluster.control_plane_taint",
                    format!(
                        "kubeadm {v} taints control planes with {}, not {t}",
                        taints.join(" and ")
                    ),
                );
            }
        }
    }
    for (field, cidr) in [
        ("cluster.pod_subnet", &s.cluster.pod_subnet),
        ("cluster.service_subnet", &s.cluster.service_subnet),
    ] {
        if !is_ipv4_cidr(cidr) {
            err(
                field,
                format!("{cidr:?} is not an IPv4 CIDR such as 10.244.0.0/16"),
            );
        }
    }

    // Conformance.
    let c = &s.conformance;
    if c.mode.is_some() && c.tier != Tier::Conformance {
        err(
            "conformance.mode",
            "a mode only applies to tier `conformance`".into(),
        );
    }
    if c.image.is_some() && c.runner != Some(ConformanceRunner::InCluster) {
        err(
            "conformance.image",
            "an image only applies to `runner: in-cluster`".into(),
        );
    }
    if c.runner == Some(ConformanceRunner::InCluster) && c.spec_deadline.is_some() {
        err(
            "conformance.spec_deadline",
            "`runner: in-cluster` runs every spec in one pod under the step's deadline; a per-spec deadline needs `runner: host`".into(),
        );
    }
    if c.runner == Some(ConformanceRunner::InCluster) && c.flake_attempts.is_some_and(|n| n > 1) {
        err(
            "conformance.flake_attempts",
            "the conformance image's entry script passes no retry flag to ginkgo, so `runner: in-cluster` runs each spec once; flake attempts need `runner: host`".into(),
        );
    }
    if let Some(d) = &c.disabled {
        if d.reason.trim().is_empty() {
            err(
                "conformance.disabled.reason",
                "a disabled tier must say why it is disabled".into(),
            );
        }
        match Date::parse(&d.expires, time::macros::format_description!("[year]-[month]-[day]")) {
            Err(_) => err(
                "conformance.disabled.expires",
                format!("{:?} is not a date (YYYY-MM-DD)", d.expires),
            ),
            Ok(date) if date < today => err(
                "conformance.disabled.expires",
                format!(
                    "the waiver expired on {date}: re-enable conformance or renew the waiver with a new reason and date"
                ),
            ),
            Ok(_) => {}
        }
    }

    // Steps.
    if s.steps.is_empty() {
        err("steps", "at least one step is required".into());
    }
    let mut step_names = HashSet::new();
    for (i, st) in s.steps.iter().enumerate() {
        let f = |x: &str| format!("steps[{i}].{x}");
        if st.name.trim().is_empty() {
            err(&f("name"), "must not be empty".into());
        } else if !step_names.insert(st.name.as_str()) {
            err(&f("name"), format!("duplicate step name {:?}", st.name));
        }
        let exec = st.action == ActionKind::Exec;
        if exec && st.command.is_empty() {
            err(&f("command"), "action exec needs a command".into());
        }
        if !exec && !st.command.is_empty() {
            err(
                &f("command"),
                format!("only action exec takes a command, not {}", st.action),
            );
        }
        // Each action's prerequisites must come earlier in the job (a conformance step
        // that never runs, disabled or outside the tier, needs nothing).
        let never_runs = st.action == ActionKind::Conformance
            && (s.conformance.disabled.is_some() || s.conformance.tier != Tier::Conformance);
        for need in st.action.requires().iter().filter(|_| !never_runs) {
            if !s.steps[..i].iter().any(|earlier| earlier.action == *need) {
                err(
                    &f("action"),
                    format!(
                        "{} needs {need} to run before it (step {:?} comes too early)",
                        st.action, st.name
                    ),
                );
            }
        }
        if st.deadline.is_zero() {
            err(&f("deadline"), "must be longer than zero".into());
        }
        // Losing one of two stacked etcd members loses quorum: the API cannot stay up.
        // Three or more control planes keep it; with an external etcd, two do.
        if st.action == ActionKind::ControlPlaneLoss {
            let (min, why) = match s.cluster.etcd {
                EtcdMode::Stacked => (3, "with 2, losing one loses etcd's quorum"),
                EtcdMode::External => (2, "with 1, nothing is left to fail over to"),
            };
            if let Some((j, t)) = s
                .topologies
                .iter()
                .enumerate()
                .find(|(_, t)| t.control_planes < min)
            {
                err(
                    &f("action"),
                    format!(
                        "control-plane-loss needs at least {min} control planes in every topology; topologies[{j}] has {} ({why})",
                        t.control_planes
                    ),
                );
            }
        }
    }

    validate_etcd(s, version, &mut err);
    validate_discovery(s, version, &mut err);
    validate_versions(s, &mut err);
    validate_ci(s, &mut err);
    (version, errs)
}

/// The scenario's release line (its version, else its marker's) when it is older than
/// 1.13: kubeadm's phases and its v1beta1 configuration came with 1.13.
fn before_1_13(s: &Scenario, version: Option<KubeVersion>) -> Option<KubeVersion> {
    version
        .or_else(|| s.kubernetes.marker.as_deref().and_then(marker_minor))
        .filter(|v| v.minor < 13)
}

/// `cluster.discovery: file-with-token` needs `discovery.file` in the join configuration,
/// which kubeadm has from 1.13 (`kubeadm.k8s.io/v1beta1`).
fn validate_discovery(
    s: &Scenario,
    version: Option<KubeVersion>,
    err: &mut impl FnMut(&str, String),
) {
    if s.cluster.discovery.is_token() {
        return;
    }
    if let Some(v) = before_1_13(s, version) {
        err(
            "cluster.discovery",
            format!("file-with-token discovery is `discovery.file` in kubeadm's JoinConfiguration, which kubeadm {v} lacks (1.13 or later)"),
        );
    }
}

/// `cluster.etcd: external` and the `etcd-up` step go together, before `kubeadm-init`, on
/// releases and runtimes that can have one.
fn validate_etcd(s: &Scenario, version: Option<KubeVersion>, err: &mut impl FnMut(&str, String)) {
    let ups: Vec<usize> = s
        .steps
        .iter()
        .enumerate()
        .filter(|(_, st)| st.action == ActionKind::EtcdUp)
        .map(|(i, _)| i)
        .collect();
    let init = s
        .steps
        .iter()
        .position(|st| st.action == ActionKind::KubeadmInit);
    match (s.cluster.etcd, ups.as_slice()) {
        (EtcdMode::Stacked, [i, ..]) => err(
            &format!("steps[{i}].action"),
            "etcd-up makes an external etcd: it needs `cluster.etcd: external`".into(),
        ),
        (EtcdMode::External, []) => err(
            "cluster.etcd",
            "an external etcd needs an `etcd-up` step before kubeadm-init to make it".into(),
        ),
        (EtcdMode::External, [_, second, ..]) => err(
            &format!("steps[{second}].action"),
            "one etcd-up step makes the whole external etcd; remove this one".into(),
        ),
        (EtcdMode::External, [i]) => {
            if let Some(j) = init.filter(|j| j < i) {
                err(
                    &format!("steps[{i}].action"),
                    format!("etcd-up must come before kubeadm-init (steps[{j}]): the control plane is configured to use it"),
                );
            }
        }
        (EtcdMode::Stacked, []) => {}
    }
    if s.cluster.etcd != EtcdMode::External {
        if let Some(i) = s
            .steps
            .iter()
            .position(|st| st.action == ActionKind::EtcdMemberLoss)
        {
            err(
                &format!("steps[{i}].action"),
                "etcd-member-loss stops an external etcd member: it needs `cluster.etcd: external` (with stacked etcd, control-plane-loss loses a member)".into(),
            );
        }
        return;
    }
    if let Some(v) = before_1_13(s, version) {
        err(
            "cluster.etcd",
            format!("an external etcd is made with `kubeadm init phase certs etcd-*` and `init phase etcd local`, which kubeadm {v} lacks (1.13 or later)"),
        );
    }
    if s.cluster.runtime == Some(crate::release::era::Runtime::Docker) {
        err(
            "cluster.etcd",
            "an external etcd's members run etcd through containerd; `cluster.runtime: docker` has no containerd for their kubelet".into(),
        );
    }
    if let Some(i) = s
        .providers
        .iter()
        .position(|p| *p == ProviderKind::Existing)
    {
        err(
            &format!("providers[{i}]"),
            "an existing cluster has its etcd already; `cluster.etcd: external` makes one on new nodes".into(),
        );
    }
    if let Some(i) = s.providers.iter().position(|p| *p == ProviderKind::Kind) {
        err(
            &format!("providers[{i}]"),
            "kind makes its cluster with stacked etcd; `cluster.etcd: external` needs nodes shakedown makes".into(),
        );
    }
}

/// A source build of another version is the same tree stamped again: only a version of the
/// tree's own minor says what it is. (A hop to "v1.21.0" would run 1.20 code.)
fn same_tree(k: &crate::scenario::KubernetesSpec, other: &str) -> Option<String> {
    if k.source != SourceKind::DebianSource {
        return None;
    }
    let tree: KubeVersion = k.version.as_deref()?.parse().ok()?;
    let v: KubeVersion = other.parse().ok()?;
    ((v.major, v.minor) != (tree.major, tree.minor)).then(|| {
        format!(
            "{other} is not of the source tree's minor ({}.{}): a debian-source build stamps the same tree with another version string, so another minor would run {}.{} code under its name; use `source: release` for other minors",
            tree.major, tree.minor, tree.major, tree.minor
        )
    })
}

/// The upgrade chain and version-skewed node groups: obtainable, and allowed to meet.
fn validate_versions(s: &Scenario, err: &mut impl FnMut(&str, String)) {
    use crate::release::skew;
    let k = &s.kubernetes;
    let upgrade_steps: Vec<usize> = s
        .steps
        .iter()
        .enumerate()
        .filter(|(_, st)| st.action == ActionKind::Upgrade)
        .map(|(i, _)| i)
        .collect();
    match (&s.upgrade, upgrade_steps.as_slice()) {
        (None, [i, ..]) => err(
            &format!("steps[{i}].action"),
            "an upgrade step needs an `upgrade:` block naming the versions to pass through".into(),
        ),
        (Some(_), []) => err(
            "upgrade",
            "no step has `action: upgrade`, so the chain would never run".into(),
        ),
        (Some(_), [_, second, ..]) => err(
            &format!("steps[{second}].action"),
            "one upgrade step walks the whole chain (one hop each, planned as its own step); remove this one".into(),
        ),
        _ => {}
    }
    let others = k.source == SourceKind::Binaries;
    if let Some(u) = &s.upgrade {
        if others {
            err(
                "upgrade",
                "an upgrade needs `source: debian-source` or `release` to obtain the other versions; `binaries` holds one".into(),
            );
        }
        if u.through.is_empty() {
            err(
                "upgrade.through",
                "name at least one version to upgrade to".into(),
            );
        }
        if u.max_unavailable == 0 {
            err("upgrade.max_unavailable", "must be at least 1".into());
        }
        if let Some(from) = &u.from {
            if Some(from) != k.version.as_ref() && Some(from) != k.marker.as_ref() {
                err(
                    "upgrade.from",
                    format!("{from:?} must be what `kubernetes` names (the cluster starts there)"),
                );
            }
        }
        let mut prev = k.version.clone();
        for (i, to) in u.through.iter().enumerate() {
            let fixed = skew::parse(to).is_ok();
            if let Some(e) = same_tree(k, to) {
                err(&format!("upgrade.through[{i}]"), e);
            }
            // `latest` names no minor, so no hop could be checked: a minor line's marker can.
            if !fixed && (k.source != SourceKind::Release || marker_minor(to).is_none()) {
                err(
                    &format!("upgrade.through[{i}]"),
                    format!(
                        "{to:?} must be a fixed version like v1.20.3{}",
                        if k.source == SourceKind::Release {
                            " or a release marker"
                        } else {
                            " (a source build needs one)"
                        }
                    ),
                );
            }
            match (&prev, fixed) {
                (Some(p), true) => {
                    if let Err(e) = skew::check_hop(p, to) {
                        err(&format!("upgrade.through[{i}]"), e);
                    }
                    prev = Some(to.clone());
                }
                _ => prev = fixed.then(|| to.clone()),
            }
        }
    }
    for (i, t) in s.topologies.iter().enumerate() {
        let Some(wv) = t.workers.version() else {
            continue;
        };
        let f = format!("topologies[{i}].workers.version");
        if let Some(e) = same_tree(k, wv) {
            err(&f, e);
        }
        if others {
            err(
                &f,
                "workers on another version need `source: debian-source` or `release` to obtain it"
                    .into(),
            );
        }
        match &k.version {
            Some(cp) => {
                if let Err(e) = skew::check_kubelet(cp, wv) {
                    err(&f, e);
                }
            }
            None => match k.marker.as_deref().and_then(marker_minor) {
                Some(line) => {
                    let m = k.marker.as_deref().unwrap_or_default();
                    if let Err(e) = skew::check_kubelet_on_line(m, line.major, line.minor, wv) {
                        err(&f, e);
                    }
                }
                None => err(&f, "version skew needs `kubernetes.version` fixed, or a minor line's marker (stable-1.20), to check the pairing against the skew policy".into()),
            },
        }
    }
}

/// The `ci` block: everything `shakedown ci generate` and the notifier rely on.
fn validate_ci(s: &Scenario, err: &mut impl FnMut(&str, String)) {
    let ci = &s.ci;
    if let Some(p) = &ci.periodic {
        match humantime::parse_duration(&p.interval) {
            Err(e) => err(
                "ci.periodic.interval",
                format!("{:?} is not a duration: {e}", p.interval),
            ),
            Ok(d) => {
                if let Err(e) = schedule::cron(d, &s.branch) {
                    err("ci.periodic.interval", e);
                }
            }
        }
    }
    if let Some(re) = ci
        .presubmit
        .as_ref()
        .and_then(|p| p.run_if_changed.as_ref())
    {
        if let Err(e) = regex::Regex::new(re) {
            err(
                "ci.presubmit.run_if_changed",
                format!("{re:?} is not a regular expression: {e}"),
            );
        }
    }
    if let Some(n) = ci.shards {
        if !(1..=MAX_CI_SHARDS).contains(&n) {
            err(
                "ci.shards",
                format!("must be between 1 and {MAX_CI_SHARDS} (each shard is a job per cell)"),
            );
        } else if n > 1
            && !s
                .steps
                .iter()
                .any(|st| st.action == crate::scenario::ActionKind::Conformance)
        {
            err(
                "ci.shards",
                "shards split the conformance step, and this scenario has none".into(),
            );
        }
    }
    if (ci.periodic.is_some() || ci.presubmit.is_some()) && ci.testgrid.is_none() {
        err(
            "ci",
            "ci.testgrid is required with ci.periodic or ci.presubmit: every job needs a \
             dashboard, an alert address and an owner"
                .into(),
        );
    }
    if let Some(t) = &ci.testgrid {
        if t.dashboards.is_empty() {
            err(
                "ci.testgrid.dashboards",
                "at least one dashboard is required".into(),
            );
        }
        for (i, d) in t.dashboards.iter().enumerate() {
            if d.trim().is_empty() || d.contains([',', ' ']) {
                err(
                    &format!("ci.testgrid.dashboards[{i}]"),
                    format!("{d:?} is not a dashboard name (no spaces or commas)"),
                );
            }
        }
        let email = t.alert_email.split_once('@');
        if !email.is_some_and(|(u, h)| !u.is_empty() && h.contains('.'))
            || t.alert_email.contains([' ', ','])
        {
            err(
                "ci.testgrid.alert_email",
                format!("{:?} is not one email address", t.alert_email),
            );
        }
        for (field, v) in [
            ("num_failures_to_alert", Some(t.num_failures_to_alert)),
            (
                "alert_stale_results_hours",
                Some(t.alert_stale_results_hours),
            ),
            ("num_columns_recent", t.num_columns_recent),
        ] {
            if v == Some(0) {
                err(&format!("ci.testgrid.{field}"), "must be at least 1".into());
            }
        }
        let owner_ok = ["sig-", "wg-"].iter().any(|p| {
            t.owner.strip_prefix(p).is_some_and(|rest| {
                !rest.is_empty()
                    && rest
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
        });
        if !owner_ok {
            err(
                "ci.testgrid.owner",
                format!(
                    "{:?} is not a SIG or working group such as sig-cluster-lifecycle \
                     (job descriptions read \"OWNER: sig-...\")",
                    t.owner
                ),
            );
        }
    }
    if let Some(n) = &ci.notify {
        if n.failure_streak == 0 {
            err(
                "ci.notify.failure_streak",
                "must be at least 1 (the failed runs in a row that trigger a notification)".into(),
            );
        }
        if n.webhook.is_some() && n.webhook_env.is_some() {
            err(
                "ci.notify.webhook_env",
                "set either `webhook` or `webhook_env`, not both".into(),
            );
        }
        if let Some(url) = &n.webhook {
            if let Err(e) = schedule::check_url(url) {
                err("ci.notify.webhook", e);
            }
        }
        if let Some(var) = &n.webhook_env {
            let mut chars = var.chars();
            let ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                err(
                    "ci.notify.webhook_env",
                    format!("{var:?} is not an environment variable name"),
                );
            }
        }
    }
}

fn is_ipv4_cidr(s: &str) -> bool {
    let Some((ip, len)) = s.split_once('/') else {
        return false;
    };
    ip.parse::<std::net::Ipv4Addr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 32)
}
