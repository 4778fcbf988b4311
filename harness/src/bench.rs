//! Benchmarks that print figures and ratios, never timed tests:
//! - `shakedown bench bring-up`: how long a 1 control plane + 1 worker cluster takes to come
//!   up here with cached images, against the 45 s target and as a ratio to the 65 s a
//!   cluster took by hand here;
//! - `shakedown bench conformance`: the scenario's conformance tier on such a cluster, in
//!   specs per minute and wall time against the step's deadline and the 20-minute target.

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

/// What a 1+1 bring-up (every kube-system pod Ready) should take here, warm.
pub const TARGET: Duration = Duration::from_secs(45);
/// A cluster made by hand on this machine (kubeadm and kubectl typed in) was usable after
/// about 65 s: the floor the harness is compared with.
pub const HAND_FLOOR: Duration = Duration::from_secs(65);

/// Steps that make a cluster "up": nodes, init, join, CNI until all Ready.
const UP: &[ActionKind] = &[
    ActionKind::ClusterUp,
    ActionKind::KubeadmInit,
    ActionKind::KubeadmJoin,
    ActionKind::Cni,
];
/// The steps a benchmark keeps of the job: the host, the build, the cluster and teardown.
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
    #[error("failed to find a conformance step in scenario {0}")]
    NoConformance(String),
}

/// The one job a benchmark runs: bridge, one control plane and one worker.
fn one_bridge_job(
    s: &crate::scenario::LoadedScenario,
    name: &str,
) -> Result<matrix::Job, BenchError> {
    matrix::expand(s)
        .into_iter()
        .find(|j| j.cni == "bridge" && j.topology.control_planes == 1 && j.topology.workers == 1)
        .ok_or_else(|| BenchError::NoJob(name.to_string()))
}

pub async fn bring_up(
    root: &Path,
    scenario_name: &str,
    runs: u32,
    deadline: Duration,
) -> Result<ExitKind, BenchError> {
    let (s, catalog) = crate::scenario::load_named(root, scenario_name)?;
    let jobs = vec![one_bridge_job(&s, scenario_name)?];
    let mut p = plan::build(&s, jobs, None);
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
        let (summary, artifacts) =
            run_once(root, &p, s.clone(), catalog.clone(), Default::default()).await;
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
        let up = up_time(steps, plan_steps);
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
            "{what}: median {:.1}s over {} run(s); target {}s, ratio {:.2}; by hand {}s, ratio {:.2} ({})",
            median.as_secs_f64(),
            v.len(),
            TARGET.as_secs(),
            median.as_secs_f64() / TARGET.as_secs_f64(),
            HAND_FLOOR.as_secs(),
            median.as_secs_f64() / HAND_FLOOR.as_secs_f64(),
            if median <= TARGET {
                "within target"
            } else {
                "over target"
            }
        );
    }
    Ok(ExitKind::Passed)
}

/// One run of the benchmark's plan into a fresh temporary artifacts folder (build log and
/// JUnit). Ctrl-C stops it the way it stops a scenario: the cluster-down step still removes
/// the run's nodes.
async fn run_once(
    root: &Path,
    p: &plan::Plan,
    s: Arc<crate::scenario::LoadedScenario>,
    catalog: Arc<crate::cni::Catalog>,
    spec_durations: std::collections::BTreeMap<String, Duration>,
) -> (crate::engine::RunSummary, std::path::PathBuf) {
    let run_id = paths::new_run_id();
    let artifacts = std::env::temp_dir().join(format!("shakedown-bench-{run_id}"));
    let settings = RunSettings {
        run_id,
        root: root.to_path_buf(),
        artifacts: artifacts.clone(),
        cache_dir: paths::cache_dir(),
        spec_durations,
        ..Default::default()
    };
    let stop = Stop::default();
    let signals = stop.on_signals();
    let summary = Run::new(p.clone(), s, catalog, settings)
        .stop(stop)
        .reporters(vec![
            Box::new(reporter::progress::BuildLog::new(&artifacts)),
            Box::new(reporter::junit::Junit::new(&artifacts)),
        ])
        .execute()
        .await;
    signals.abort();
    (summary, artifacts)
}

/// How long the steps that make a cluster up took.
fn up_time(steps: &[crate::engine::event::StepResult], plan_steps: &[plan::StepPlan]) -> Duration {
    steps
        .iter()
        .zip(plan_steps)
        .filter(|(_, ps)| UP.contains(&ps.action))
        .map(|(st, _)| st.duration)
        .sum()
}

/// What `bench conformance` aims at: lite conformance within 20 minutes here.
pub const CONFORMANCE_TARGET: Duration = Duration::from_secs(20 * 60);

/// One run of the scenario's conformance tier on a fresh 1+1 bridge cluster, specs in the
/// order the scenario's table and the history at `history` give (the same as `scenario`
/// would), `parallel` overriding the scenario's. Prints specs per minute and the wall time
/// against the step's deadline and [`CONFORMANCE_TARGET`]; the artifacts stay for reading.
pub async fn conformance(
    root: &Path,
    scenario_name: &str,
    parallel: Option<crate::scenario::Parallel>,
    history: &crate::history::Location,
) -> Result<ExitKind, BenchError> {
    let (mut s, catalog) = crate::scenario::load_named(root, scenario_name)?;
    if let Some(p) = parallel {
        s.scenario.conformance.parallel = Some(p);
    }
    let job = one_bridge_job(&s, scenario_name)?;
    let mut p = plan::build(&s, vec![job], None);
    for j in &mut p.jobs {
        // The bring-up bench's steps, and the conformance step.
        j.steps
            .retain(|st| KEEP.contains(&st.action) || st.action == ActionKind::Conformance);
    }
    let deadline = p.jobs[0]
        .steps
        .iter()
        .find(|st| st.action == ActionKind::Conformance)
        .map(|st| st.timeout.deadline)
        .ok_or_else(|| BenchError::NoConformance(scenario_name.to_string()))?;
    let (spec_durations, warning) = crate::history::expected_spec_durations(&s, history);
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    let timed = spec_durations.len();
    let (summary, artifacts) =
        run_once(root, &p, Arc::new(s), Arc::new(catalog), spec_durations).await;
    let steps = &summary.jobs[0].steps;
    let plan_steps = &p.jobs[0].steps;
    let up = up_time(steps, plan_steps);
    let Some(conf) = steps
        .iter()
        .zip(plan_steps)
        .find(|(_, ps)| ps.action == ActionKind::Conformance)
        .map(|(st, _)| st)
        .filter(|st| !matches!(st.outcome, StepOutcome::Skipped { .. }))
    else {
        eprintln!(
            "the cluster did not come up ({:?}); see {}",
            summary.exit,
            artifacts.display()
        );
        return Ok(summary.exit);
    };
    let n = |k: &str| -> u64 {
        conf.property(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    };
    let (passed, failed, not_run) = (
        n("conformance.passed"),
        n("conformance.failed"),
        n("conformance.not-run"),
    );
    let wall = conf.duration;
    let done = passed + failed;
    println!(
        "bring-up {:.0}s; conformance: {} selected, {} unsupported here, {} run {} at a time ({} of them timed by earlier runs): passed {passed}, failed {failed}, not run {not_run}",
        up.as_secs_f64(),
        n("conformance.selected"),
        n("conformance.unsupported"),
        done + not_run,
        conf.property("conformance.parallel").unwrap_or("?"),
        timed,
    );
    println!(
        "conformance wall time {:.1} min: {:.1} specs/min; deadline {} min, ratio {:.2}; target {} min, ratio {:.2} ({})",
        wall.as_secs_f64() / 60.0,
        done as f64 / (wall.as_secs_f64() / 60.0).max(f64::EPSILON),
        deadline.as_secs() / 60,
        wall.as_secs_f64() / deadline.as_secs_f64(),
        CONFORMANCE_TARGET.as_secs() / 60,
        wall.as_secs_f64() / CONFORMANCE_TARGET.as_secs_f64(),
        if wall <= CONFORMANCE_TARGET && not_run == 0 {
            "within target"
        } else {
            "over target"
        }
    );
    println!("artifacts: {}", artifacts.display());
    Ok(summary.exit)
}
