//! The engine against small fake tools (fixtures/tools): deadlines kill whole process groups,
//! SIGTERM-ignorers get SIGKILL, megabytes of output are drained, skips carry reasons,
//! `always` steps run, and an interrupted run still writes complete artifacts.

mod common;

use common::{alive, pid, read_junit, run_fixture};
use shakedown::actions::{Action, Steps};
use shakedown::engine::event::{FailureKind, StepOutcome};
use shakedown::exit::ExitKind;
use shakedown::scenario::ActionKind;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn failed(o: &StepOutcome) -> (FailureKind, &str, Option<&str>) {
    match o {
        StepOutcome::Failed {
            kind,
            message,
            diagnosis,
            ..
        } => (*kind, message, diagnosis.as_deref()),
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn skipped(o: &StepOutcome) -> &str {
    match o {
        StepOutcome::Skipped { reason } => reason,
        other => panic!("expected a skip, got {other:?}"),
    }
}

#[tokio::test]
async fn deadline_kills_the_whole_process_group() {
    let t0 = Instant::now();
    let (s, dir) = run_fixture("deadline", false).await;
    let steps = &s.jobs[0].steps;
    let (kind, message, _) = failed(&steps[0].outcome);
    assert_eq!(kind, FailureKind::Deadline);
    assert!(message.starts_with("deadline of 1s exceeded"), "{message}");
    for f in ["hang.leader", "hang.child"] {
        let p = pid(dir.path(), f);
        assert!(!alive(p), "{f} (pid {p}) survived the deadline");
    }
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(skipped(&steps[1].outcome), "skipped: step hang failed");
    assert!(
        matches!(steps[2].outcome, StepOutcome::Passed),
        "always step must run"
    );
    assert!(dir.path().join("markers/cleanup").exists());
    assert!(!dir.path().join("markers/after").exists());
    assert_eq!(s.exit, ExitKind::TestFailure);
}

#[tokio::test]
async fn sigterm_ignorer_gets_sigkill_after_grace() {
    let t0 = Instant::now();
    let (s, dir) = run_fixture("ignore-term", false).await;
    let (kind, message, _) = failed(&s.jobs[0].steps[0].outcome);
    assert_eq!(kind, FailureKind::Deadline);
    assert!(message.contains("SIGKILL after grace period"), "{message}");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "SIGKILL came before deadline + grace: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    for f in ["stubborn.leader", "stubborn.child"] {
        let p = pid(dir.path(), f);
        assert!(!alive(p), "{f} (pid {p}) survived SIGKILL");
    }
    let log =
        std::fs::read_to_string(dir.path().join("jobs/docker-bridge/01-stubborn.log")).unwrap();
    assert!(log.contains("SIGTERM sent to process group"), "{log}");
    assert!(log.contains("SIGKILL sent"), "{log}");
}

#[tokio::test]
async fn megabytes_of_output_are_drained_into_the_step_log() {
    let (s, dir) = run_fixture("spew", false).await;
    let step = &s.jobs[0].steps[0];
    assert!(
        matches!(step.outcome, StepOutcome::Passed),
        "{:?}",
        step.outcome
    );
    let log = std::fs::read(dir.path().join(step.log.as_ref().unwrap())).unwrap();
    assert!(log.len() > 10_000_000, "log holds only {} bytes", log.len());
    let text = String::from_utf8_lossy(&log);
    assert_eq!(text.matches(&"o".repeat(100_000)[..]).count(), 80);
    assert_eq!(text.matches(&"e".repeat(25_000)[..]).count(), 80);
    assert!(text.contains("spew: done"));
    assert_eq!(s.exit, ExitKind::Passed);
}

#[tokio::test]
async fn failure_is_diagnosed_later_steps_skip_and_always_steps_run() {
    let (s, dir) = run_fixture("failure", false).await;
    let steps = &s.jobs[0].steps;
    assert!(matches!(steps[0].outcome, StepOutcome::Passed));
    let (kind, message, diagnosis) = failed(&steps[1].outcome);
    assert_eq!(kind, FailureKind::Test);
    assert!(message.contains("exit status: 3"), "{message}");
    assert!(
        message.contains("fail.sh"),
        "the message names the command: {message}"
    );
    assert!(
        diagnosis.unwrap().contains("NetworkPluginNotReady"),
        "{diagnosis:?}"
    );
    assert_eq!(skipped(&steps[2].outcome), "skipped: step check failed");
    assert!(matches!(steps[3].outcome, StepOutcome::Passed));
    assert!(dir.path().join("markers/cleanup").exists());
    assert_eq!(s.exit, ExitKind::TestFailure);
    assert_eq!(s.exit_code, 1);

    // TestGrid only reads files named junit(_[^_]+)?(_\d+-\d+)?(_\d+)?\.xml.
    let pattern = regex::Regex::new(r"^junit(_[^_]+)?(_\d+-\d+)?(_\d+)?\.xml$").unwrap();
    let junit_files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with("junit"))
        .collect();
    assert_eq!(junit_files, ["junit_docker-bridge.xml"]);
    assert!(
        junit_files.iter().all(|n| pattern.is_match(n)),
        "{junit_files:?}"
    );

    // The same facts, read back from the JUnit TestGrid will show.
    let junit = dir.path().join("junit_docker-bridge.xml");
    let suites = read_junit(&junit);
    assert_eq!(suites.len(), 1);
    let suite = &suites[0];
    assert_eq!(suite.name, "failure/docker/bridge");
    assert_eq!((suite.tests, suite.failures), (4, 1));
    assert_eq!(suite.property("provider"), Some("docker"));
    assert_eq!(suite.property("cni"), Some("bridge"));
    assert_eq!(suite.property("kubernetes-version"), Some("v1.20.2"));
    let check = suite.case("check");
    assert_eq!(check.classname, "failure/docker/bridge");
    assert_eq!(check.result, "failure");
    assert!(
        check
            .text
            .starts_with("diagnosis: node cp1 NotReady: NetworkPluginNotReady"),
        "{}",
        check.text
    );
    assert!(
        check
            .text
            .contains("--- last lines of jobs/docker-bridge/02-check.log ---"),
        "{}",
        check.text
    );
    assert!(
        check.text.contains("checking node cp1"),
        "log tail is attached: {}",
        check.text
    );
    let later = suite.case("later");
    assert_eq!(later.result, "skipped");
    assert_eq!(later.text, "skipped: step check failed");
    assert_eq!(suite.case("cleanup").result, "passed");

    // The person-facing page says the same, escaped.
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains("<td class=failed>failed</td>"), "{html}");
    assert!(
        html.contains("node cp1 NotReady: NetworkPluginNotReady"),
        "{html}"
    );
    assert!(html.contains("skipped: step check failed"), "{html}");
    assert!(
        html.contains("<a href=\"jobs/docker-bridge/02-check.log\">"),
        "{html}"
    );
}

#[tokio::test]
async fn non_blocking_failure_is_reported_but_does_not_stop_the_run() {
    let (s, dir) = run_fixture("non-blocking", false).await;
    let steps = &s.jobs[0].steps;
    failed(&steps[0].outcome);
    assert!(matches!(steps[1].outcome, StepOutcome::Passed));
    assert!(dir.path().join("markers/later").exists());
    assert_eq!(s.exit, ExitKind::Passed);
    let suite = &read_junit(&dir.path().join("junit_docker-bridge.xml"))[0];
    assert_eq!(
        suite.case("flaky").result,
        "failure",
        "non-blocking failures stay visible"
    );
}

#[tokio::test]
async fn leaked_background_process_is_killed_and_does_not_hold_the_step() {
    let t0 = Instant::now();
    let (s, dir) = run_fixture("leak", false).await;
    assert!(matches!(s.jobs[0].steps[0].outcome, StepOutcome::Passed));
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "waited for the leaked process: {:?}",
        t0.elapsed()
    );
    let p = pid(dir.path(), "leak.child");
    assert!(!alive(p), "leaked process {p} survived");
}

#[tokio::test]
async fn run_deadline_stops_the_run_and_cleanup_still_runs() {
    let t0 = Instant::now();
    let (s, dir) = run_fixture("run-deadline", false).await;
    let steps = &s.jobs[0].steps;
    let (kind, message, _) = failed(&steps[0].outcome);
    assert_eq!(kind, FailureKind::Interrupted);
    assert!(
        message.starts_with("run deadline of 2s exceeded"),
        "{message}"
    );
    // The step was stopped, not failed: its followers give the stop's cause.
    assert_eq!(
        skipped(&steps[1].outcome),
        "skipped: run deadline of 2s exceeded"
    );
    assert!(matches!(steps[2].outcome, StepOutcome::Passed));
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(!alive(pid(dir.path(), "hang.child")));
    assert_eq!(
        s.exit,
        ExitKind::TestFailure,
        "a run deadline is a failure, not an interruption"
    );
    assert_eq!(s.stopped.as_deref(), Some("run deadline of 2s exceeded"));
}

#[tokio::test]
async fn disabled_conformance_is_a_skipped_testcase_and_is_stated() {
    let (s, dir) = run_fixture("conformance-disabled", false).await;
    let reason =
        "conformance: DISABLED (no CNI provider works on this branch yet, expires 2999-12-31)";
    assert_eq!(skipped(&s.jobs[0].steps[1].outcome), reason);
    assert_eq!(s.conformance_disabled.as_deref(), Some(reason));
    let cov = s.coverage_lines().join("\n");
    assert!(
        cov.contains("conformance: DISABLED (no CNI provider works"),
        "{cov}"
    );
    assert!(cov.contains("init: NOT IN PLAN"), "{cov}");
    let suite = &read_junit(&dir.path().join("junit_docker-bridge.xml"))[0];
    assert_eq!(suite.case("conformance").text, reason);
    let finished: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("finished.json")).unwrap()).unwrap();
    assert_eq!(finished["metadata"]["conformance"], reason);
}

/// Ctrl-C through the real binary: exit 130, the hung step's process group is gone, the
/// `always` step ran, and every artifact is complete.
#[test]
fn interrupted_run_writes_complete_artifacts() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let dir = tempfile::tempdir().unwrap();
    let root = common::root();
    let scenario = root.join("fixtures/scenarios/engine/interrupt.yaml");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_shakedown"))
        .arg("--root")
        .arg(&root)
        .arg("scenario")
        .arg(&scenario)
        .arg("--artifacts")
        .arg(dir.path())
        .env("CI", "true")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let leader = dir.path().join("pids/hang.leader");
    let t0 = Instant::now();
    while !leader.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "hang step never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "stderr:\n{stderr}");

    assert!(!alive(pid(dir.path(), "hang.leader")));
    assert!(!alive(pid(dir.path(), "hang.child")));
    assert!(
        dir.path().join("markers/cleanup").exists(),
        "always step must run after Ctrl-C"
    );
    assert!(!dir.path().join("markers/later").exists());

    let suite = &read_junit(&dir.path().join("junit_docker-bridge.xml"))[0];
    assert_eq!(suite.tests, 4, "every planned step is a testcase");
    assert_eq!(suite.case("first").result, "passed");
    assert_eq!(suite.case("hang").result, "failure");
    assert!(
        suite.case("hang").text.contains("interrupted by SIGINT"),
        "{}",
        suite.case("hang").text
    );
    // Interrupted, not failed: the followers say so, and so does the coverage.
    assert!(
        !suite.case("hang").text.contains("diagnosis:"),
        "an interrupted step carries no diagnosis: {}",
        suite.case("hang").text
    );
    assert_eq!(suite.case("later").text, "skipped: interrupted by SIGINT");
    assert_eq!(suite.case("cleanup").result, "passed");

    let finished: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("finished.json")).unwrap()).unwrap();
    assert_eq!(finished["passed"], false);
    assert_eq!(finished["result"], "ABORTED");
    assert!(finished["timestamp"].as_u64().unwrap() > 0);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["exit_code"], 130);
    assert_eq!(summary["stopped"], "interrupted by SIGINT");
    let build_log = std::fs::read_to_string(dir.path().join("build-log.txt")).unwrap();
    assert!(build_log.contains("hang INTERRUPTED"), "{build_log}");
    assert!(!build_log.contains("hang FAILED"), "{build_log}");
    assert!(build_log.contains("coverage:"), "{build_log}");
}

/// An action that ignores its cancellation and reports success once its deadline has
/// fired, within the grace period: the engine must not believe it.
struct LateSuccess;

#[async_trait::async_trait]
impl shakedown::actions::Action for LateSuccess {
    fn describe(&self, _: &shakedown::actions::StepContext<'_>) -> Vec<String> {
        vec!["wait past the deadline, then report success".into()]
    }
    async fn run(
        &self,
        cx: &mut shakedown::actions::StepContext<'_>,
    ) -> Result<(), shakedown::actions::StepError> {
        cx.cancel.cancelled().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(())
    }
}

/// The real actions, with some replaced by what a test plants.
struct Planted(fn(ActionKind) -> Box<dyn Action>);

impl Steps for Planted {
    fn action(&self, kind: ActionKind) -> Box<dyn Action> {
        (self.0)(kind)
    }
    fn new_job_state(&self) -> Box<dyn std::any::Any + Send + Sync> {
        shakedown::actions::Actions.new_job_state()
    }
}

/// Every `exec` step of a fixture becomes [`LateSuccess`].
fn late_success(kind: ActionKind) -> Box<dyn Action> {
    match kind {
        ActionKind::Exec => Box::new(LateSuccess),
        other => shakedown::actions::lookup(other),
    }
}

#[tokio::test]
async fn success_reported_after_the_deadline_is_a_deadline_failure() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::root().join("fixtures/scenarios/engine/late-success.yaml");
    let s = common::run_scenario_with(
        &path,
        dir.path(),
        Some(Arc::new(Planted(late_success))),
        false,
        Default::default(),
    )
    .await;
    let (kind, message, _) = failed(&s.jobs[0].steps[0].outcome);
    assert_eq!(kind, FailureKind::Deadline);
    assert!(message.starts_with("deadline of 1s exceeded"), "{message}");
    assert!(message.contains("does not count"), "{message}");
    assert_eq!(s.exit, ExitKind::TestFailure);
    let suite = &read_junit(&dir.path().join("junit_docker-bridge.xml"))[0];
    assert_eq!(suite.case("late").result, "failure");
}

/// A 512 KiB tmpfs as the artifacts folder, through the real binary: the run cannot pass,
/// and leaves no empty `.tmp` files. Needs root (mount); CI runs as root.
#[test]
fn a_full_artifacts_disk_is_an_infrastructure_failure() {
    let root = nix::unistd::Uid::effective().is_root();
    if !root {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true needs root to mount the tmpfs this test fills"
        );
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("full");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount -t tmpfs failed");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let artifacts = mnt.join("run");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shakedown"))
        .arg("--root")
        .arg(common::root())
        .arg("scenario")
        .arg(common::root().join("fixtures/scenarios/engine/spew.yaml"))
        .arg("--artifacts")
        .arg(&artifacts)
        .arg("--history")
        .arg(dir.path().join("history.sqlite"))
        .env("CI", "true")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(all.contains("No space left on device"), "{all}");
    assert!(!all.contains("Passed (exit 0)"), "{all}");
    let mut tmp = Vec::new();
    for e in walk(&artifacts) {
        if e.extension().is_some_and(|x| x == "tmp") {
            tmp.push(e);
        }
    }
    assert!(tmp.is_empty(), "half-written files left: {tmp:?}");
    // The history (on another disk) records the run as it exited: not a pass.
    let h = shakedown::history::History::open(dir.path().join("history.sqlite")).unwrap();
    let runs = h.job_runs("spew/docker/bridge").unwrap();
    assert_eq!(runs.len(), 1);
    assert!(
        !runs[0].passed && runs[0].exit == "infrastructure",
        "history recorded passed={} exit={}",
        runs[0].passed,
        runs[0].exit
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Only the last writer fails (report.html cannot be written: a folder stands there): the
/// verdict files written before it are corrected to exit 3, not left saying "passed".
#[tokio::test]
async fn a_reporter_failing_at_the_end_corrects_the_verdict_already_written() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("report.html/blocked")).unwrap();
    let path = common::root().join("fixtures/scenarios/engine/spew.yaml");
    let s = common::run_scenario(&path, dir.path(), false, Default::default()).await;
    assert!(
        matches!(s.jobs[0].steps[0].outcome, StepOutcome::Passed),
        "the step itself passed"
    );
    assert_eq!(s.exit, ExitKind::Infrastructure, "{:?}", s.reporter_errors);
    assert!(
        s.reporter_errors.iter().any(|e| e.contains("report.html")),
        "{:?}",
        s.reporter_errors
    );
    let finished: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("finished.json")).unwrap()).unwrap();
    assert_eq!(finished["passed"], false, "{finished}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["exit_code"], 3, "{summary}");
}
