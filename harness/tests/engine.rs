//! The engine against small fake tools (fixtures/tools): deadlines kill whole process groups,
//! SIGTERM-ignorers get SIGKILL, megabytes of output are drained, skips carry reasons,
//! `always` steps run, and an interrupted run still writes complete artifacts.

mod common;

use common::{alive, pid, read_junit, run_fixture};
use shakedown::engine::event::{FailureKind, StepOutcome};
use shakedown::exit::ExitKind;
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
    assert_eq!(skipped(&steps[1].outcome), "skipped: step hang failed");
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
    assert_eq!(suite.case("later").text, "skipped: step hang failed");
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
    assert!(build_log.contains("hang FAILED"), "{build_log}");
    assert!(build_log.contains("coverage:"), "{build_log}");
}
