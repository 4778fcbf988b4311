//! `shakedown bench bring-up`: how long a 1 control plane + 1 worker cluster takes to come
//! up here with cached images, against the 90 s target. A benchmark that prints figures
//! and ratios, never a timed test.

use crate::actions::RunSettings;
use crate::engine::event::StepOutcome;
use crate::engine::Stop;
use crate::exit::ExitKind;
use crate::run::Run;
use crate::scenario::ActionKind;
use crate::{matrix, paths, plan, reporter};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub const TARGET: Duration = Duration::from_secs(90);

/// Steps that make a cluster "up": nodes, init, join, CNI until all Ready.
const UP: &[ActionKind] = &[
    ActionKind::ClusterUp,
    ActionKind::KubeadmInit,
    ActionKind::KubeadmJoin,
    ActionKind::Cni,
];
const KEEP: &[ActionKind] = &[
    ActionKind::HostSetup,
    ActionKind::ImageBuild,
    ActionKind::ClusterUp,
    ActionKind::KubeadmInit,
    ActionKind::KubeadmJoin,
    ActionKind::Cni,
    ActionKind::ClusterDown,
];

/// Why the benchmark could not start.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Scenario(#[from] crate::scenario::FindError),
    #[error("failed to find a 1 control plane + 1 worker bridge job in scenario {0}")]
    NoJob(String),
}

pub async fn bring_up(
    root: &Path,
    scenario_name: &str,
    runs: u32,
    deadline: Duration,
) -> Result<ExitKind, BenchError> {
    let (s, catalog) = crate::scenario::load_named(root, scenario_name)?;
    let jobs: Vec<_> = matrix::expand(&s)
        .into_iter()
        .filter(|j| j.cni == "bridge" && j.topology.control_planes == 1 && j.topology.workers == 1)
        .take(1)
        .collect();
    if jobs.is_empty() {
        return Err(BenchError::NoJob(scenario_name.to_string()));
    }
    let mut p = plan::build(&s, jobs);
    // Each run stops at the deadline like a scenario's run deadline: cleanup still runs.
    p.run_deadline = Some(deadline);
    for j in &mut p.jobs {
        j.steps.retain(|st| KEEP.contains(&st.action));
    }
    let s = Arc::new(s);
    let catalog = Arc::new(catalog);
    let mut totals: Vec<Duration> = Vec::new();
    let mut nodes_totals: Vec<Duration> = Vec::new();
    for i in 1..=runs.max(1) {
        let run_id = paths::new_run_id();
        let artifacts = std::env::temp_dir().join(format!("shakedown-bench-{run_id}"));
        let settings = RunSettings {
            run_id,
            root: root.to_path_buf(),
            artifacts: artifacts.clone(),
            cache_dir: paths::cache_dir(),
            ..Default::default()
        };
        // Ctrl-C stops the run the way it stops a scenario: the cluster-down step still
        // removes this run's nodes.
        let stop = Stop::default();
        let signals = stop.on_signals();
        let summary = Run::new(p.clone(), s.clone(), catalog.clone(), settings)
            .stop(stop)
            .reporters(vec![Box::new(reporter::progress::BuildLog::new(
                &artifacts,
            ))])
            .execute()
            .await;
        signals.abort();
        if summary.exit == ExitKind::Interrupted {
            eprintln!(
                "run {i}: interrupted; its nodes were removed (artifacts in {})",
                artifacts.display()
            );
            return Ok(ExitKind::Interrupted);
        }
        let steps = &summary.jobs[0].steps;
        if let Some(f) = steps
            .iter()
            .find(|st| matches!(st.outcome, StepOutcome::Failed { .. }))
        {
            eprintln!(
                "run {i}: step {} failed; see {}",
                f.step,
                artifacts.display()
            );
            return Ok(summary.exit);
        }
        let plan_steps = &p.jobs[0].steps;
        let up: Duration = steps
            .iter()
            .zip(plan_steps)
            .filter(|(_, ps)| UP.contains(&ps.action))
            .map(|(st, _)| st.duration)
            .sum();
        let parts: Vec<String> = steps
            .iter()
            .zip(plan_steps)
            .filter(|(_, ps)| UP.contains(&ps.action))
            .map(|(st, _)| format!("{} {:.1}s", st.step, st.duration.as_secs_f64()))
            .collect();
        // Until the nodes were Ready: everything before cni, plus cni's own figure.
        let cni_step = steps
            .iter()
            .zip(plan_steps)
            .find(|(_, ps)| ps.action == ActionKind::Cni)
            .map(|(st, _)| st);
        let cni_total = cni_step.map(|st| st.duration).unwrap_or_default();
        let nodes_ready_in_cni = cni_step
            .and_then(|st| st.property("cni.nodes-ready-seconds"))
            .and_then(|v| v.parse::<f64>().ok())
            .map(Duration::from_secs_f64)
            .unwrap_or(cni_total);
        let nodes_up = up - cni_total + nodes_ready_in_cni;
        println!(
            "run {i}: nodes Ready after {:.1}s; every kube-system pod Ready after {:.1}s ({})",
            nodes_up.as_secs_f64(),
            up.as_secs_f64(),
            parts.join(", ")
        );
        nodes_totals.push(nodes_up);
        totals.push(up);
        let _ = std::fs::remove_dir_all(&artifacts);
    }
    for (what, mut v) in [
        ("nodes Ready", nodes_totals),
        ("nodes and kube-system pods Ready", totals),
    ] {
        v.sort();
        let median = v[v.len() / 2];
        println!(
            "{what}: median {:.1}s over {} run(s); target {}s; ratio {:.2} ({})",
            median.as_secs_f64(),
            v.len(),
            TARGET.as_secs(),
            median.as_secs_f64() / TARGET.as_secs_f64(),
            if median <= TARGET {
                "within target"
            } else {
                "over target"
            }
        );
    }
    Ok(ExitKind::Passed)
}
