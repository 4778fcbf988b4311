//! Tier 1: node validation. What kubelet needs from each node, each check its own testcase:
//! kernel features (IP forwarding, bridge netfilter, overlayfs), cgroups mounted, the
//! container runtime answering, and swap off or allowed. The checks read what the node
//! shows; the judgements are pure functions tested against captured text.

/// `net.ipv4.ip_forward` and bridge netfilter on, overlayfs available.
pub fn kernel(ip_forward: &str, bridge_nf: Option<&str>, filesystems: &str) -> Result<(), String> {
    let mut why = Vec::new();
    if ip_forward.trim() != "1" {
        why.push(format!(
            "net.ipv4.ip_forward is {:?}, kubelet and kube-proxy need 1",
            ip_forward.trim()
        ));
    }
    match bridge_nf.map(str::trim) {
        None => why.push(
            "net.bridge.bridge-nf-call-iptables is missing: the br_netfilter module is not loaded"
                .into(),
        ),
        Some("1") => {}
        Some(v) => why.push(format!(
            "net.bridge.bridge-nf-call-iptables is {v:?}, Services need 1"
        )),
    }
    if !filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        why.push("overlayfs is not available (containerd's snapshotter needs it)".into());
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join("; "))
    }
}

/// The cgroup v1 controllers kubelet uses are mounted, or cgroup v2 offers them.
pub fn cgroups(mountinfo: &str) -> Result<(), String> {
    let mut v1 = std::collections::BTreeSet::new();
    let mut v2 = false;
    for line in mountinfo.lines() {
        // ... mount-point ... - fstype source super-options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split_whitespace();
        let fstype = r.next().unwrap_or_default();
        let opts = r.nth(1).unwrap_or_default();
        let mount_point = left.split_whitespace().nth(4).unwrap_or_default();
        if !mount_point.starts_with("/sys/fs/cgroup") {
            continue;
        }
        match fstype {
            "cgroup" => v1.extend(opts.split(',').map(String::from)),
            "cgroup2" if mount_point == "/sys/fs/cgroup" => v2 = true,
            _ => {}
        }
    }
    if v2 && v1.is_empty() {
        return Ok(());
    }
    let missing: Vec<&str> = [
        "cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer",
    ]
    .into_iter()
    .filter(|c| !v1.contains(*c))
    .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "cgroup controllers not mounted: {}",
            missing.join(", ")
        ))
    }
}

/// No active swap, or kubelet configured to allow it (`failSwapOn: false`).
pub fn swap(proc_swaps: &str, kubelet_config: &str) -> Result<(), String> {
    let active: Vec<&str> = proc_swaps
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .collect();
    if active.is_empty() {
        return Ok(());
    }
    let allowed = serde_yaml::from_str::<serde_yaml::Value>(kubelet_config)
        .ok()
        .and_then(|v| v.get("failSwapOn").and_then(|f| f.as_bool()))
        == Some(false);
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "swap is on ({}) and kubelet does not allow it (failSwapOn is not false)",
            active
                .iter()
                .filter_map(|l| l.split_whitespace().next())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILESYSTEMS: &str = "nodev\tsysfs\nnodev\ttmpfs\nnodev\toverlay\n\text4\n";

    #[test]
    fn kernel_needs_forwarding_bridge_netfilter_and_overlay() {
        assert!(kernel("1\n", Some("1\n"), FILESYSTEMS).is_ok());
        let e = kernel("0", None, "nodev\tsysfs\n").unwrap_err();
        assert!(e.contains("ip_forward is \"0\""), "{e}");
        assert!(e.contains("br_netfilter"), "{e}");
        assert!(e.contains("overlayfs"), "{e}");
    }

    #[test]
    fn cgroup_v1_controllers_are_read_from_mountinfo() {
        let mi = "\
30 25 0:26 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
32 25 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
33 25 0:29 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
34 25 0:30 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset
35 25 0:31 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices
";
        assert_eq!(
            cgroups(mi).unwrap_err(),
            "cgroup controllers not mounted: freezer"
        );
        let full =
            format!("{mi}36 25 0:32 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer\n");
        assert!(cgroups(&full).is_ok());
        assert!(cgroups("40 1 0:40 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n").is_ok());
        assert!(cgroups("").is_err());
    }

    #[test]
    fn swap_must_be_off_or_allowed() {
        let header = "Filename\tType\tSize\tUsed\tPriority\n";
        assert!(swap(header, "").is_ok());
        let on = format!("{header}/swapfile file 1024 0 -2\n");
        assert!(swap(&on, "kind: KubeletConfiguration\nfailSwapOn: false\n").is_ok());
        let e = swap(&on, "kind: KubeletConfiguration\n").unwrap_err();
        assert!(e.contains("/swapfile"), "{e}");
    }
}
