//! Which versions may meet: an upgrade hop (kubeadm upgrades one minor at a time, never
//! down) and a kubelet beside a control plane (the version skew policy of the control
//! plane's release). Versions compare as semver, pre-releases included: `v1.20.3-rc.0`
//! comes before `v1.20.3`.

use semver::Version;

/// A Kubernetes version as semver (`v1.20.3-shakedown.1` → 1.20.3-shakedown.1).
pub fn parse(v: &str) -> Result<Version, String> {
    Version::parse(v.trim().trim_start_matches('v'))
        .map_err(|e| format!("{v:?} is not a fixed version like v1.20.2 ({e})"))
}

/// How many minors a kubelet may be older than the API server: 2 through 1.27, 3 from
/// 1.28 (KEP-3935).
pub fn kubelet_minors_behind(control_plane: &Version) -> u64 {
    if control_plane.major == 1 && control_plane.minor >= 28 {
        3
    } else {
        2
    }
}

/// One hop of an upgrade chain: forward, and at most one minor.
pub fn check_hop(from: &str, to: &str) -> Result<(), String> {
    let (f, t) = (parse(from)?, parse(to)?);
    // Precedence, not Ord: build metadata (`+x`) does not make a version newer.
    if t.cmp_precedence(&f) != std::cmp::Ordering::Greater {
        return Err(format!(
            "{to} is not newer than {from}: an upgrade hop goes forward"
        ));
    }
    if t.major != f.major || t.minor > f.minor + 1 {
        return Err(format!(
            "{from} → {to} skips a minor release: kubeadm upgrades one minor at a time (add the one between to `through`)"
        ));
    }
    Ok(())
}

/// A kubelet at `kubelet` beside a control plane at `control_plane`: never of a newer minor,
/// and at most [`kubelet_minors_behind`] minors older. The policy speaks of minors: patches
/// of one minor may meet either way.
pub fn check_kubelet(control_plane: &str, kubelet: &str) -> Result<(), String> {
    check_kubelet_at(control_plane, &parse(control_plane)?, kubelet)
}

/// [`check_kubelet`] against a control plane known by a minor line's marker
/// (`latest-1.20`): the policy needs its minor only.
pub fn check_kubelet_on_line(
    marker: &str,
    major: u32,
    minor: u32,
    kubelet: &str,
) -> Result<(), String> {
    check_kubelet_at(
        marker,
        &Version::new(major.into(), minor.into(), 0),
        kubelet,
    )
}

fn check_kubelet_at(control_plane: &str, cp: &Version, kubelet: &str) -> Result<(), String> {
    let (cp, k) = (cp.clone(), parse(kubelet)?);
    if (k.major, k.minor) > (cp.major, cp.minor) {
        return Err(format!(
            "a kubelet at {kubelet} is of a newer minor than the control plane at {control_plane}; the skew policy forbids it (kubelets may only be older)"
        ));
    }
    let max = kubelet_minors_behind(&cp);
    if k.major != cp.major || cp.minor - k.minor > max {
        return Err(format!(
            "a kubelet at {kubelet} is more than {max} minor releases older than the control plane at {control_plane}; the skew policy of {}.{} forbids it",
            cp.major, cp.minor
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_names_the_minor_the_policy_needs() {
        assert!(check_kubelet_on_line("latest-1.20", 1, 20, "v1.20.2").is_ok());
        assert!(check_kubelet_on_line("latest-1.20", 1, 20, "v1.18.20").is_ok());
        let e = check_kubelet_on_line("stable-1.20", 1, 20, "v1.17.17").unwrap_err();
        assert!(e.contains("control plane at stable-1.20"), "{e}");
        assert!(check_kubelet_on_line("latest-1.20", 1, 20, "v1.21.0").is_err());
    }

    #[test]
    fn hops_go_forward_one_minor_at_most() {
        assert!(check_hop("v1.19.16", "v1.20.2").is_ok());
        assert!(check_hop("v1.20.2", "v1.20.3-shakedown.1").is_ok());
        // A pre-release of the same patch comes before it.
        assert!(check_hop("v1.20.2", "v1.20.2-rc.0")
            .unwrap_err()
            .contains("not newer"));
        assert!(check_hop("v1.20.2", "v1.20.2").is_err());
        // Build metadata does not make a version newer.
        assert!(check_hop("v1.20.2", "v1.20.2+shakedown").is_err());
        assert!(check_hop("v1.18.20", "v1.20.2")
            .unwrap_err()
            .contains("skips a minor"));
        assert!(check_hop("v1.20.2", "latest")
            .unwrap_err()
            .contains("not a fixed"));
    }

    #[test]
    fn kubelets_may_be_older_within_the_policy_never_newer() {
        assert!(check_kubelet("v1.20.3-shakedown.1", "v1.20.2").is_ok());
        assert!(check_kubelet("v1.20.2", "v1.18.0").is_ok());
        assert!(check_kubelet("v1.20.2", "v1.17.17")
            .unwrap_err()
            .contains("more than 2 minor"));
        // From 1.28 the policy allows three.
        assert!(check_kubelet("v1.28.0", "v1.25.16").is_ok());
        assert!(check_kubelet("v1.28.0", "v1.24.17").is_err());
        assert!(check_kubelet("v1.20.2", "v1.21.0")
            .unwrap_err()
            .contains("newer minor"));
        // Patches of one minor may meet either way.
        assert!(check_kubelet("v1.20.2", "v1.20.3-shakedown.1").is_ok());
    }
}
