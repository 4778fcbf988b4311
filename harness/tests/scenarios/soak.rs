//! `soak::`: the soak tier on a real cluster (`fixtures/scenarios/cluster/soak.yaml`).
//! - `soak::release-1.20/docker/bridge`: the short soak (3 minutes of churn) passes: the
//!   churn, the API and the Service probes, and no leak beyond the fixture's limits.
//! - `soak::leak-is-named`: a holdout for the leak check. The same fixture for 15 s on one
//!   control plane, while the trial leaks an iptables rule and a tmpfs mount into the node
//!   once the first snapshot is taken: the soak must fail its `leaks` testcase naming both.

use super::*;
use std::path::Path;
use std::time::Duration;

const JOB: &str = "soak/docker/bridge";

fn fixture() -> PathBuf {
    common::root().join("fixtures/scenarios/cluster/soak.yaml")
}

/// The soak step's figures, as the trial prints them.
fn print_figures(dir: &Path, summary: &shakedown::engine::RunSummary) {
    let job = &summary.jobs[0];
    let diff = std::fs::read_to_string(dir.join("jobs").join(&job.context).join("soak-diff.txt"))
        .unwrap_or_else(|e| format!("(no soak-diff.txt: {e})"));
    for l in diff.lines().filter(|l| !l.trim().is_empty()).take(40) {
        eprintln!("  {l}");
    }
}

pub fn short_soak() -> Result<(), Failed> {
    let dir = trial_dir("soak");
    let summary = real_run(&fixture(), JOB, &dir, None, None)?;
    print_figures(&dir, &summary);
    let junit = dir.join(format!("junit_{}.xml", summary.jobs[0].context));
    let suite = &common::read_junit(&junit)[0];
    for p in [
        "soak.cycles",
        "soak.namespaces_gone_seconds",
        "soak.api.longest_seconds",
        "soak.service.longest_seconds",
        "soak.findings",
    ] {
        eprintln!("  {p}: {}", suite.property(p).unwrap_or("?"));
    }
    let cycles: u32 = suite.property("soak.cycles").unwrap_or("0").parse()?;
    check(cycles >= 5, || {
        format!("only {cycles} churn cycle(s) in the soak")
    })?;
    cases_are(
        suite,
        "passed",
        ["churn", "disruption/api", "disruption/service", "leaks"].map(|c| format!("soak/{c}")),
    )?;
    check(summary.exit_code == 0, || {
        format!("run failed with exit {}", summary.exit_code)
    })
}

/// Waits for the soak step's first snapshot, then leaks into the node it names.
fn leak_when_snapshotted(dir: PathBuf) -> std::thread::JoinHandle<Result<String, String>> {
    std::thread::spawn(move || {
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_secs(600) {
            std::thread::sleep(Duration::from_secs(1));
            let logs = common::files_under(&dir.join("jobs"));
            let Some(log) = logs
                .iter()
                .find(|p| p.to_string_lossy().ends_with("-soak.log"))
            else {
                continue;
            };
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if !text.contains("snapshot before:") {
                continue;
            }
            let node = text
                .lines()
                .find_map(|l| {
                    l.strip_prefix("+ docker exec ")?
                        .split_whitespace()
                        .find(|w| !w.starts_with('-'))
                })
                .ok_or("no docker exec line in the soak log")?
                .to_string();
            let exec = |args: &[&str]| -> Result<(), String> {
                eprintln!("  + docker exec {node} {}", args.join(" "));
                let o = std::process::Command::new("docker")
                    .arg("exec")
                    .arg(&node)
                    .args(args)
                    .output()
                    .map_err(|e| e.to_string())?;
                if o.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&o.stderr).into_owned())
                }
            };
            exec(&[
                "iptables",
                "-A",
                "INPUT",
                "-s",
                "192.0.2.7/32",
                "-j",
                "DROP",
            ])?;
            exec(&[
                "sh",
                "-c",
                "mkdir -p /mnt/shakedown-leak && mount -t tmpfs leak /mnt/shakedown-leak",
            ])?;
            return Ok(node);
        }
        Err("the soak never took its first snapshot".into())
    })
}

pub fn leak_is_named() -> Result<(), Failed> {
    let dir = trial_dir("soak-leak");
    let leaker = leak_when_snapshotted(dir.clone());
    let summary = real_run_with(
        &fixture(),
        JOB,
        &dir,
        Tweaks {
            control_plane_only: true,
            soak_duration: Some(Duration::from_secs(15)),
            ..Default::default()
        },
    )?;
    let node = leaker
        .join()
        .map_err(|_| "the leaking thread panicked")?
        .map_err(|e| format!("failed to leak on purpose: {e}"))?;
    print_figures(&dir, &summary);
    let junit = dir.join(format!("junit_{}.xml", summary.jobs[0].context));
    let suite = &common::read_junit(&junit)[0];
    let leaks = suite.case("soak/leaks");
    let said = format!("{} {}", leaks.message, leaks.text);
    eprintln!("  leaks: {} {}", leaks.result, leaks.message);
    check(leaks.result == "failure", || {
        format!("the leak check did not fail: {} {said}", leaks.result)
    })?;
    for want in [
        format!("node {node}: 1 iptables rule(s) not there before (allowed +0): filter -A INPUT -s 192.0.2.7/32 -j DROP"),
        "/mnt/shakedown-leak".to_string(),
    ] {
        check(said.contains(&want), || {
            format!("{want:?} not named in: {said}")
        })?;
    }
    cases_are(
        suite,
        "passed",
        ["churn".to_string()].map(|c| format!("soak/{c}")),
    )?;
    check(summary.exit_code == 1, || {
        format!("want exit 1 (a test failure), got {}", summary.exit_code)
    })
}
