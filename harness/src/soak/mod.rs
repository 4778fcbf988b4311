//! The soak tier's figures: a snapshot of the cluster's state before and after a long run
//! of churn, and their diff judged against the scenario's thresholds
//! (kubernetes#64523's recipe). Gathering is the `soak` step's (`actions/soak.rs`); this
//! module parses what nodes print and compares, so every rule is unit-tested.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// What one node shows: its iptables rules, its mounts, and the RSS and open file
/// descriptors of the processes soaks watch.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeFigures {
    /// Each iptables rule (`table -A ...`) and how many times it is there: a leak hides in
    /// a count when other rules go, not in the rules themselves.
    pub iptables_rules: BTreeMap<String, usize>,
    /// Mount points, from `/proc/self/mountinfo`.
    pub mounts: BTreeSet<String>,
    /// Process name → (RSS KiB, open fds), summed over its processes.
    pub processes: BTreeMap<String, (u64, u64)>,
    /// etcd's database file, on nodes that run a stacked etcd.
    pub etcd_db_bytes: Option<u64>,
}

/// The processes whose memory and descriptors a soak watches.
pub const WATCHED: [&str; 3] = ["kubelet", "kube-apiserver", "etcd"];

/// The script a node runs for its figures: one `key value...` line each.
pub const NODE_SCRIPT: &str = r#"iptables-save 2>/dev/null | awk '/^\*/ {t = substr($1, 2)} /^-A/ {print "iptables " t " " $0}'
while read -r _ _ _ _ mp _; do echo "mount $mp"; done < /proc/self/mountinfo
for d in /proc/[0-9]*; do
  c=$(cat "$d/comm" 2>/dev/null) || continue
  case "$c" in kubelet|kube-apiserver|etcd)
    rss=$(awk '/^VmRSS/{print $2}' "$d/status" 2>/dev/null)
    fds=$(ls "$d/fd" 2>/dev/null | wc -l)
    echo "proc $c ${rss:-0} $fds";;
  esac
done
[ -f /var/lib/etcd/member/snap/db ] && echo "etcddb $(stat -c %s /var/lib/etcd/member/snap/db)"
true"#;

/// Parses what [`NODE_SCRIPT`] printed.
pub fn parse_node(out: &str) -> NodeFigures {
    let mut f = NodeFigures::default();
    for l in out.lines() {
        let mut it = l.split_whitespace();
        match it.next() {
            Some("iptables") => {
                let rule = l["iptables".len()..].trim();
                if !rule.is_empty() {
                    *f.iptables_rules.entry(rule.to_string()).or_default() += 1;
                }
            }
            Some("mount") => {
                if let Some(m) = it.next() {
                    f.mounts.insert(m.to_string());
                }
            }
            Some("proc") => {
                let (Some(name), Some(rss), Some(fds)) = (it.next(), it.next(), it.next()) else {
                    continue;
                };
                let e = f.processes.entry(name.to_string()).or_default();
                e.0 += rss.parse::<u64>().unwrap_or(0);
                e.1 += fds.parse::<u64>().unwrap_or(0);
            }
            Some("etcddb") => f.etcd_db_bytes = it.next().and_then(|n| n.parse().ok()),
            _ => {}
        }
    }
    f
}

/// The cluster's state at one moment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// `kind namespace` → objects.
    pub objects: BTreeMap<String, usize>,
    pub namespaces: BTreeSet<String>,
    /// `namespace/name` of Endpoints naming a pod that does not exist.
    pub endpoints_without_pods: BTreeSet<String>,
    pub nodes: BTreeMap<String, NodeFigures>,
    /// The API server's `go_goroutines`, where `/metrics` answered.
    pub apiserver_goroutines: Option<u64>,
}

/// How much a soak may leave behind. Counts are absolute growth, the rest percent.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub iptables_rules: i64,
    pub mounts: i64,
    pub objects: i64,
    /// By process name; a process not named is reported but not judged.
    pub rss_percent: BTreeMap<String, f64>,
    pub fds_percent: f64,
}

/// `go_goroutines N` from a Prometheus text page.
pub fn goroutines(metrics: &str) -> Option<u64> {
    metrics.lines().find_map(|l| {
        let v = l.strip_prefix("go_goroutines ")?;
        v.trim().parse::<f64>().ok().map(|f| f as u64)
    })
}

/// The diff of two snapshots: every figure's before and after (the report), and the
/// findings beyond `limits`, each naming the resource.
pub fn diff(before: &Snapshot, after: &Snapshot, limits: &Limits) -> (Vec<String>, Vec<String>) {
    let mut report = Vec::new();
    let mut findings = Vec::new();
    // Objects per kind and namespace.
    let keys: BTreeSet<&String> = before.objects.keys().chain(after.objects.keys()).collect();
    for k in keys {
        let (b, a) = (
            before.objects.get(k).copied().unwrap_or(0) as i64,
            after.objects.get(k).copied().unwrap_or(0) as i64,
        );
        if a != b {
            report.push(format!("objects {k}: {b} → {a} ({:+})", a - b));
        }
        if a - b > limits.objects {
            findings.push(format!(
                "{k}: {} more object(s) than before (allowed {:+})",
                a - b,
                limits.objects
            ));
        }
    }
    for ns in after.namespaces.difference(&before.namespaces) {
        findings.push(format!("namespace {ns} left behind"));
    }
    for ep in after
        .endpoints_without_pods
        .difference(&before.endpoints_without_pods)
    {
        findings.push(format!("endpoints {ep} name a pod that does not exist"));
    }
    for (node, a) in &after.nodes {
        let Some(b) = before.nodes.get(node) else {
            findings.push(format!("node {node}: not in the first snapshot"));
            continue;
        };
        let total = |f: &NodeFigures| f.iptables_rules.values().sum::<usize>() as i64;
        let (bt, at) = (total(b), total(a));
        report.push(format!(
            "node {node}: iptables rules {bt} → {at} ({:+})",
            at - bt
        ));
        // Rules there now more often than before, however many others went.
        let new_rules: Vec<&String> = a
            .iptables_rules
            .iter()
            .flat_map(|(r, n)| {
                let extra = n.saturating_sub(b.iptables_rules.get(r).copied().unwrap_or(0));
                std::iter::repeat_n(r, extra)
            })
            .collect();
        if new_rules.len() as i64 > limits.iptables_rules {
            let shown: Vec<&str> = new_rules.iter().take(3).map(|s| s.as_str()).collect();
            findings.push(format!(
                "node {node}: {} iptables rule(s) not there before (allowed {:+}): {}{}",
                new_rules.len(),
                limits.iptables_rules,
                shown.join("; "),
                if new_rules.len() > 3 { "; ..." } else { "" }
            ));
        }
        let new: Vec<&String> = a.mounts.difference(&b.mounts).collect();
        let dm = a.mounts.len() as i64 - b.mounts.len() as i64;
        report.push(format!(
            "node {node}: mounts {} → {} ({dm:+})",
            b.mounts.len(),
            a.mounts.len()
        ));
        if new.len() as i64 > limits.mounts {
            let shown: Vec<&str> = new.iter().take(5).map(|s| s.as_str()).collect();
            findings.push(format!(
                "node {node}: {} new mount(s) (allowed {:+}): {}{}",
                new.len(),
                limits.mounts,
                shown.join(", "),
                if new.len() > 5 { ", ..." } else { "" }
            ));
        }
        for (p, (arss, afds)) in &a.processes {
            let Some((brss, bfds)) = b.processes.get(p) else {
                continue;
            };
            let pct = |b: u64, a: u64| {
                if b == 0 {
                    0.0
                } else {
                    (a as f64 - b as f64) * 100.0 / b as f64
                }
            };
            let (rp, fp) = (pct(*brss, *arss), pct(*bfds, *afds));
            report.push(format!(
                "node {node}: {p} RSS {} → {} MiB ({rp:+.0}%), open fds {bfds} → {afds} ({fp:+.0}%)",
                brss / 1024,
                arss / 1024
            ));
            if let Some(max) = limits.rss_percent.get(p).filter(|max| rp > **max) {
                findings.push(format!(
                    "node {node}: {p} RSS grew {rp:.0}% ({} → {} MiB; allowed {max}%)",
                    brss / 1024,
                    arss / 1024,
                ));
            }
            if fp > limits.fds_percent {
                findings.push(format!(
                    "node {node}: {p} open file descriptors grew {fp:.0}% ({bfds} → {afds}; allowed {}%)",
                    limits.fds_percent
                ));
            }
        }
        if let (Some(bd), Some(ad)) = (b.etcd_db_bytes, a.etcd_db_bytes) {
            report.push(format!(
                "node {node}: etcd database {} → {} KiB",
                bd / 1024,
                ad / 1024
            ));
        }
    }
    if let (Some(b), Some(a)) = (before.apiserver_goroutines, after.apiserver_goroutines) {
        report.push(format!("kube-apiserver goroutines {b} → {a}"));
    }
    (report, findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            iptables_rules: 0,
            mounts: 0,
            objects: 0,
            rss_percent: [("kube-apiserver".to_string(), 20.0)].into(),
            fds_percent: 50.0,
        }
    }

    const NODE: &str = "iptables filter -A INPUT -j KUBE-FIREWALL
iptables nat -A KUBE-SERVICES -j KUBE-SVC-AAA
iptables nat -A KUBE-SVC-AAA -j KUBE-SEP-BBB
mount /
mount /var/lib/kubelet/pods/a/volumes/kubernetes.io~secret/t
proc kubelet 51200 30
proc kube-apiserver 307200 80
proc etcd 40960 20
proc etcd 1024 2
etcddb 2097152
";

    #[test]
    fn a_node_prints_its_figures_one_line_each() {
        let f = parse_node(NODE);
        assert_eq!(f.iptables_rules.len(), 3);
        assert_eq!(f.iptables_rules["filter -A INPUT -j KUBE-FIREWALL"], 1);
        assert_eq!(f.mounts.len(), 2);
        assert_eq!(f.processes["etcd"], (41984, 22));
        assert_eq!(f.etcd_db_bytes, Some(2097152));
        assert_eq!(parse_node("garbage\n"), NodeFigures::default());
    }

    #[test]
    fn the_script_prints_each_key_the_parser_reads() {
        for k in [
            "print \"iptables ",
            "echo \"mount",
            "echo \"proc",
            "echo \"etcddb",
        ] {
            assert!(NODE_SCRIPT.contains(k), "{k}");
        }
        for p in WATCHED {
            assert!(NODE_SCRIPT.contains(p), "{p}");
        }
    }

    fn snap(node: &str) -> Snapshot {
        let mut s = Snapshot::default();
        s.nodes.insert("w1".into(), parse_node(node));
        s.objects.insert("Pod default".into(), 2);
        s.namespaces.insert("default".into());
        s
    }

    #[test]
    fn no_growth_is_no_finding() {
        let (report, findings) = diff(&snap(NODE), &snap(NODE), &limits());
        assert!(findings.is_empty(), "{findings:?}");
        assert!(report
            .iter()
            .any(|l| l.contains("iptables rules 3 → 3 (+0)")));
    }

    #[test]
    fn each_leak_is_named() {
        let leaked = NODE
            // One rule leaked while a Service's two went: the count drops, the leak is named.
            .replace("iptables nat -A KUBE-SERVICES -j KUBE-SVC-AAA\n", "")
            .replace("iptables nat -A KUBE-SVC-AAA -j KUBE-SEP-BBB\n", "")
            .replace("proc kube-apiserver 307200", "proc kube-apiserver 409600")
            + "mount /mnt/leak\niptables filter -A INPUT -s 192.0.2.7/32 -j DROP\n";
        let mut after = snap(&leaked);
        after.namespaces.insert("soak-7".into());
        after.objects.insert("Service soak-7".into(), 1);
        after.endpoints_without_pods.insert("soak-7/web".into());
        let (_, f) = diff(&snap(NODE), &after, &limits());
        let all = f.join("\n");
        for want in [
            "node w1: 1 iptables rule(s) not there before (allowed +0): filter -A INPUT -s 192.0.2.7/32 -j DROP",
            "node w1: 1 new mount(s) (allowed +0): /mnt/leak",
            "node w1: kube-apiserver RSS grew 33%",
            "namespace soak-7 left behind",
            "Service soak-7: 1 more object(s)",
            "endpoints soak-7/web",
        ] {
            assert!(all.contains(want), "{want} not in:\n{all}");
        }
        assert_eq!(f.len(), 6, "{all}");
    }

    #[test]
    fn goroutines_come_from_the_metrics_page() {
        let m = "# HELP go_goroutines Number\n# TYPE go_goroutines gauge\ngo_goroutines 1234\n";
        assert_eq!(goroutines(m), Some(1234));
        assert_eq!(goroutines("nothing"), None);
    }
}
