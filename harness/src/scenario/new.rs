//! `shakedown scenario new <branch> --from <scenario>`: a new release-branch scenario
//! derived from an existing one, adjusted to the new branch's Kubernetes minor release.
//!
//! The rules, each reported as a note in the new file's header:
//! - The branch is renamed, in the description and in the presubmit's `run_if_changed` too.
//! - Kubernetes: `marker: latest-X.Y`, `source: release`. A freshly cut release branch has
//!   only pre-releases (alpha, beta, rc), and `stable-X.Y` appears only with X.Y.0, so the
//!   honest equivalent of the old fixed version is the newest build of the new line. A
//!   Debian source version or a binaries folder is specific to the old version: dropped.
//!   `master` gets `marker: latest`.
//! - `cluster.kubeadm_api`, `cluster.control_plane_taint` and `cluster.runtime` stay when
//!   the new release accepts them, else become the new release's defaults (for `latest`: derived at run time).
//! - CNI variants that do not support the new release are dropped.
//! - A conformance waiver belongs to the old branch: dropped (a new branch starts with
//!   conformance on).
//! - Moving between the development branch and a release branch takes the other cadence
//!   (upstream kubeadm: master every 2h, alert after 8 failures / 16h stale; release
//!   branches every 12h, after 4 failures / 48h stale).

use super::{LoadedScenario, Scenario};
use crate::cni::Catalog;
use crate::release::{self, KubeVersion};

#[derive(Debug, thiserror::Error)]
pub enum NewError {
    #[error(
        "cannot tell the Kubernetes release of branch {0:?}: name it release-<major>.<minor> or master"
    )]
    BranchName(String),
    #[error("no CNI variant of {from} supports Kubernetes {version}: {detail}")]
    NoCni {
        from: String,
        version: String,
        detail: String,
    },
}

/// The new scenario and what was changed on the way.
#[derive(Debug, Clone)]
pub struct Derived {
    pub scenario: Scenario,
    pub notes: Vec<String>,
}

/// The minor line a branch tests: `release-1.21` → 1.21; `master` → `None` (latest).
pub fn branch_version(branch: &str) -> Result<Option<KubeVersion>, NewError> {
    if branch == "master" || branch == "main" {
        return Ok(None);
    }
    branch
        .strip_prefix("release-")
        .and_then(|v| v.parse::<KubeVersion>().ok())
        .filter(|v| v.patch.is_none())
        .map(Some)
        .ok_or_else(|| NewError::BranchName(branch.to_string()))
}

/// Replaces `old` with `new` where it stands alone as a version (`v1.20`, `1.20.2` stay
/// apart from `1.200`).
fn replace_minor(text: &str, old: &str, new: &str) -> String {
    let re = regex::Regex::new(&format!(r"(^|[^0-9.]){}($|[^0-9])", regex::escape(old)))
        .expect("escaped pattern");
    // Twice: adjacent matches share their separator character.
    let once = re.replace_all(text, format!("${{1}}{new}${{2}}"));
    re.replace_all(&once, format!("${{1}}{new}${{2}}"))
        .into_owned()
}

/// Derives the scenario for `branch` from `from`.
pub fn derive(from: &LoadedScenario, branch: &str, catalog: &Catalog) -> Result<Derived, NewError> {
    let target = branch_version(branch)?;
    let mut s = from.scenario.clone();
    let mut notes = Vec::new();
    let old_branch = from.scenario.branch.clone();
    s.branch = branch.to_string();

    // Kubernetes source.
    let marker = match target {
        Some(v) => format!("latest-{}.{}", v.major, v.minor),
        None => "latest".into(),
    };
    let k = &from.scenario.kubernetes;
    notes.push(format!(
        "kubernetes: {} ({}) became marker {marker} from the release bucket{}",
        from.version_label(),
        serde_yaml::to_string(&k.source).unwrap_or_default().trim(),
        match target {
            Some(v) => format!(
                ": a new branch has only pre-releases; once v{}.{}.0 is out, use marker \
                 stable-{}.{} or pin a version",
                v.major, v.minor, v.major, v.minor
            ),
            None => String::new(),
        }
    ));
    s.kubernetes.version = None;
    s.kubernetes.marker = Some(marker);
    s.kubernetes.source = super::SourceKind::Release;
    s.kubernetes.debian_version = None;
    s.kubernetes.binaries = None;

    // Era-specific cluster settings.
    let c = &mut s.cluster;
    match target {
        Some(v) => {
            if let Some(api) = c.kubeadm_api.clone() {
                if !release::kubeadm_apis_for(&v).contains(&api.as_str()) {
                    c.kubeadm_api = release::default_kubeadm_api(&v).map(String::from);
                    notes.push(format!(
                        "cluster.kubeadm_api: {v} does not accept {api}; now {}",
                        c.kubeadm_api.as_deref().unwrap_or("derived at run time")
                    ));
                }
            }
            if let Some(rt) = c.runtime {
                if !release::era::runtimes_for(&v).contains(&rt) {
                    c.runtime = None;
                    notes.push(format!(
                        "cluster.runtime: kubelet {v} cannot use {rt}; now {} (the default)",
                        release::era::default_runtime(&v)
                    ));
                }
            }
            if let Some(t) = c.control_plane_taint.clone() {
                let taints = release::control_plane_taints(&v);
                if !taints.contains(&t.as_str()) {
                    c.control_plane_taint = taints.last().map(|t| t.to_string());
                    notes.push(format!(
                        "cluster.control_plane_taint: kubeadm {v} does not use {t}; now {}",
                        c.control_plane_taint
                            .as_deref()
                            .unwrap_or("derived at run time")
                    ));
                }
            }
        }
        None => {
            if c.runtime.take().is_some() {
                notes.push("cluster.runtime: derived at run time for latest".into());
            }
            if c.kubeadm_api.take().is_some() || c.control_plane_taint.take().is_some() {
                notes.push(
                    "cluster.kubeadm_api and control_plane_taint: derived at run time for latest"
                        .into(),
                );
            }
            c.control_plane_taint = None;
        }
    }

    // CNI variants.
    let mut dropped = Vec::new();
    s.cni.retain(|name| match catalog.get(name) {
        Some(v) if v.release_for(target.as_ref()).is_some() => true,
        Some(v) => {
            dropped.push(format!("{name} (supports {})", v.supported_ranges()));
            false
        }
        None => {
            dropped.push(format!("{name} (not in cni-variants/)"));
            false
        }
    });
    let shown = target
        .map(|v| v.to_string())
        .unwrap_or_else(|| "latest".into());
    if s.cni.is_empty() {
        return Err(NewError::NoCni {
            from: old_branch,
            version: shown,
            detail: dropped.join(", "),
        });
    }
    if !dropped.is_empty() {
        notes.push(format!(
            "cni: dropped {}, which do not support {shown}",
            dropped.join(", ")
        ));
    }

    // Conformance waiver.
    if let Some(d) = s.conformance.disabled.take() {
        notes.push(format!(
            "conformance.disabled: dropped the waiver of {old_branch} ({}); a new branch starts \
             with conformance on",
            d.reason.trim()
        ));
    }

    // Description.
    if let (Some(old), Some(new)) = (from.version, target) {
        let (o, n) = (
            format!("{}.{}", old.major, old.minor),
            format!("{}.{}", new.major, new.minor),
        );
        s.description = replace_minor(&s.description, &o, &n);
    }
    if s.description.contains(&old_branch) {
        s.description = s.description.replace(&old_branch, branch);
    }

    // CI.
    if let Some(p) = s.ci.presubmit.as_mut() {
        if let Some(re) = p.run_if_changed.as_mut() {
            // The branch as a regex writes it (`release-1\.6`), then as plain text.
            let dots = |b: &str| b.replace('.', r"\.");
            let new = re
                .replace(&dots(&old_branch), &dots(branch))
                .replace(&old_branch, branch);
            if &new != re {
                notes.push(format!(
                    "ci.presubmit.run_if_changed: {re:?} became {new:?}"
                ));
                *re = new;
            }
        }
    }
    let was_dev = from.version.is_none();
    let is_dev = target.is_none();
    if was_dev != is_dev {
        let (interval, failures, stale) = if is_dev {
            ("2h", 8, 16)
        } else {
            ("12h", 4, 48)
        };
        if let Some(p) = s.ci.periodic.as_mut() {
            p.interval = interval.into();
        }
        if let Some(t) = s.ci.testgrid.as_mut() {
            t.num_failures_to_alert = failures;
            t.alert_stale_results_hours = stale;
        }
        notes.push(format!(
            "ci: {} cadence: every {interval}, alert after {failures} failures or {stale}h without results",
            if is_dev { "development-branch" } else { "release-branch" }
        ));
    }
    Ok(Derived { scenario: s, notes })
}

/// The new file: a header that says where it came from and what to review, then the YAML.
pub fn render(d: &Derived, command: &str, from: &str) -> Result<String, serde_yaml::Error> {
    let mut out = format!(
        "# {}: created by `{command}` from {from}.\n",
        d.scenario.branch
    );
    if !d.notes.is_empty() {
        out.push_str("# Review what changed on the way:\n");
        for n in &d.notes {
            out.push_str(&format!("#   - {n}\n"));
        }
    }
    out.push_str(&serde_yaml::to_string(&d.scenario)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names_give_the_minor_line() {
        assert_eq!(
            branch_version("release-1.21")
                .unwrap()
                .map(|v| v.to_string()),
            Some("v1.21".into())
        );
        assert_eq!(branch_version("master").unwrap(), None);
        for bad in ["release-1.21.3", "feature-x", "release-x"] {
            assert!(branch_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn minor_versions_are_replaced_only_where_they_stand_alone() {
        assert_eq!(
            replace_minor(
                "kubeadm v1.20 on 1.20.2, not 1.200 or 11.20",
                "1.20",
                "1.21"
            ),
            "kubeadm v1.21 on 1.21.2, not 1.200 or 11.20"
        );
    }
}
