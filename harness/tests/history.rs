//! The run history: runs recorded into a temporary SQLite file, then streaks, flaky and
//! slow steps, notifications (against a real HTTP server on 127.0.0.1, and a closed port)
//! and the release sign-off computed from it.

mod common;

use shakedown::actions::StepKind;
use shakedown::engine::event::{Event, FailureKind, StepOutcome, StepResult};
use shakedown::engine::{Coverage, JobSummary, RunSummary};
use shakedown::exit::ExitKind;
use shakedown::history::notify::{Kind, Notifier};
use shakedown::history::signoff::{self, Options};
use shakedown::history::{self, History, Location, Trigger};
use shakedown::plan::Stage;
use shakedown::reporter::history::HistoryRecorder;
use shakedown::reporter::Reporter;
use shakedown::scenario;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const BRIDGE: &str = "release-1.20/docker/bridge";
const WEAVE: &str = "release-1.20/docker/weave";
const CALICO: &str = "release-1.20/docker/calico";
const T0: i64 = 1_800_000_000;

fn step(
    job: &str,
    name: &str,
    index: usize,
    stage: Option<Stage>,
    outcome: StepOutcome,
    secs: u64,
) -> StepResult {
    StepResult {
        job: job.into(),
        step: name.into(),
        index,
        stage,
        non_blocking: false,
        blocking_kind: StepKind::Test,
        outcome,
        duration: Duration::from_secs(secs),
        log: None,
        properties: Vec::new(),
        subtests: Vec::new(),
    }
}

/// A job of three steps (init, smoke, conformance); `fail` names the step that fails.
fn job(name: &str, fail: Option<&str>, durations: [u64; 3]) -> JobSummary {
    let mut failed = false;
    let mut steps = Vec::new();
    let mut coverage = Vec::new();
    for (i, (st, stage)) in [
        ("init", Stage::Init),
        ("smoke", Stage::Smoke),
        ("conformance", Stage::Conformance),
    ]
    .into_iter()
    .enumerate()
    {
        let (outcome, cov) = if failed {
            (
                StepOutcome::Skipped {
                    reason: "skipped: an earlier step failed".into(),
                },
                Coverage::Skipped("an earlier step failed".into()),
            )
        } else if fail == Some(st) {
            failed = true;
            (
                StepOutcome::Failed {
                    kind: FailureKind::Test,
                    message: format!("{st} failed"),
                    diagnosis: Some(format!("{st}: node never Ready")),
                    log_tail: String::new(),
                },
                Coverage::Failed,
            )
        } else {
            (StepOutcome::Passed, Coverage::Passed)
        };
        steps.push(step(name, st, i, Some(stage), outcome, durations[i]));
        coverage.push((stage, cov));
    }
    JobSummary {
        name: name.into(),
        context: name.split('/').skip(1).collect::<Vec<_>>().join("-"),
        passed: !failed,
        steps,
        coverage,
    }
}

fn run(id: &str, started: i64, version: &str, jobs: Vec<JobSummary>) -> RunSummary {
    let exit = if jobs.iter().all(|j| j.passed) {
        ExitKind::Passed
    } else {
        ExitKind::TestFailure
    };
    RunSummary {
        run_id: id.into(),
        scenario: "release-1.20".into(),
        version: version.into(),
        dry_run: false,
        started: UNIX_EPOCH + Duration::from_secs(started as u64),
        duration: Duration::from_secs(600),
        exit,
        exit_code: exit.code(),
        stopped: None,
        conformance_disabled: None,
        jobs,
        reporter_errors: Vec::new(),
    }
}

fn pass(id: &str, at: i64) -> RunSummary {
    run(id, at, "v1.20.2", vec![job(BRIDGE, None, [60, 30, 600])])
}

fn fail(id: &str, at: i64) -> RunSummary {
    run(
        id,
        at,
        "v1.20.2",
        vec![job(BRIDGE, Some("smoke"), [60, 30, 0])],
    )
}

fn dry(mut r: RunSummary) -> RunSummary {
    r.dry_run = true;
    r
}

#[test]
fn streaks_count_periodic_and_manual_runs_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = History::open(dir.path().join("h/history.sqlite")).unwrap();
    h.record(&pass("r1", T0), Trigger::Periodic).unwrap();
    h.record(&fail("r2", T0 + 10), Trigger::Periodic).unwrap();
    // A passing dry run executes nothing, and a presubmit tests a pull request: neither
    // breaks the failure streak.
    h.record(&dry(pass("r3", T0 + 20)), Trigger::Periodic)
        .unwrap();
    h.record(&pass("r4", T0 + 30), Trigger::Presubmit).unwrap();
    h.record(&fail("r5", T0 + 40), Trigger::Manual).unwrap();
    let mut interrupted = pass("r6", T0 + 50);
    interrupted.exit = ExitKind::Interrupted;
    h.record(&interrupted, Trigger::Periodic).unwrap();
    h.record(&fail("r7", T0 + 60), Trigger::Periodic).unwrap();

    let runs = h.job_runs(BRIDGE).unwrap();
    assert_eq!(runs.len(), 7, "every run is recorded");
    let r3 = runs.iter().find(|r| r.run_id == "r3").unwrap();
    assert!(
        r3.dry_run && r3.passed && !r3.counts(),
        "a dry run never counts as a pass"
    );
    assert_eq!(
        runs[1].failed_step,
        Some(("smoke".into(), "smoke: node never Ready".into()))
    );
    assert_eq!(runs[0].conformance, "passed");
    assert!(runs[0].conformance_enabled);

    let all = history::streaks(&runs);
    let shape: Vec<(bool, usize, &str)> = all
        .iter()
        .map(|s| (s.passing, s.length, s.since_run.as_str()))
        .collect();
    assert_eq!(shape, [(true, 1, "r1"), (false, 3, "r2")]);
    let cur = history::current_streak(&runs).unwrap();
    assert_eq!(cur.last.run_id, "r7");

    // Recording a run id again replaces it rather than adding a second copy.
    h.record(&pass("r7", T0 + 60), Trigger::Periodic).unwrap();
    let runs = h.job_runs(BRIDGE).unwrap();
    assert_eq!(runs.len(), 7);
    let cur = history::current_streak(&runs).unwrap();
    assert!(cur.passing && cur.length == 1);
}

#[test]
fn flaky_and_slow_steps_come_from_recorded_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = History::open(dir.path().join("history.sqlite")).unwrap();
    // bridge: smoke fails then passes on v1.20.2 (a flake), twice.
    h.record(&fail("r1", T0), Trigger::Periodic).unwrap();
    h.record(&pass("r2", T0 + 10), Trigger::Periodic).unwrap();
    h.record(&fail("r3", T0 + 20), Trigger::Periodic).unwrap();
    h.record(&pass("r4", T0 + 30), Trigger::Periodic).unwrap();
    // weave: smoke fails on v1.20.1 and passes on v1.20.2: a fix, not a flake.
    h.record(
        &run(
            "w1",
            T0,
            "v1.20.1",
            vec![job(WEAVE, Some("smoke"), [10, 5, 0])],
        ),
        Trigger::Periodic,
    )
    .unwrap();
    h.record(
        &run(
            "w2",
            T0 + 10,
            "v1.20.2",
            vec![job(WEAVE, None, [10, 5, 100])],
        ),
        Trigger::Periodic,
    )
    .unwrap();
    // calico: fails and keeps failing: red, not flaky.
    for (i, id) in ["c1", "c2"].iter().enumerate() {
        h.record(
            &run(
                id,
                T0 + i as i64,
                "v1.20.2",
                vec![job(CALICO, Some("init"), [20, 0, 0])],
            ),
            Trigger::Periodic,
        )
        .unwrap();
    }
    // A failing presubmit followed by a pass is not counted either.
    h.record(
        &run(
            "p1",
            T0 + 40,
            "v1.20.2",
            vec![job(WEAVE, Some("init"), [1, 0, 0])],
        ),
        Trigger::Presubmit,
    )
    .unwrap();

    let steps = h.step_runs().unwrap();
    assert!(steps.iter().all(|s| s.run_id != "p1"));
    let flakes = history::flakes(&steps);
    assert_eq!(flakes.len(), 1, "{flakes:?}");
    let f = &flakes[0];
    assert_eq!(
        (f.job.as_str(), f.step.as_str(), f.version.as_str()),
        (BRIDGE, "smoke", "v1.20.2")
    );
    assert_eq!((f.failures, f.passes, f.flips), (2, 2, 2));
    assert_eq!(f.last_diagnosis.as_deref(), Some("smoke: node never Ready"));

    let slow = history::slowest(&steps, 3);
    // bridge conformance ran (passed) in r2 and r4 at 600s; weave conformance once at 100s.
    assert_eq!(
        (slow[0].job.as_str(), slow[0].step.as_str()),
        (BRIDGE, "conformance")
    );
    assert_eq!((slow[0].runs, slow[0].mean), (2, Duration::from_secs(600)));
    assert_eq!(
        (slow[1].job.as_str(), slow[1].step.as_str()),
        (WEAVE, "conformance")
    );
    assert_eq!(
        slow[2].mean,
        Duration::from_secs(60),
        "bridge init: {slow:?}"
    );
    // Skipped steps never count toward durations.
    assert!(!history::slowest(&steps, 100)
        .iter()
        .any(|s| s.job == CALICO && s.step == "smoke"));

    let text = history::report(&h, Some("release-1.20/docker/calico")).unwrap();
    assert!(text.contains("FAILING 2 (since c1"), "{text}");
    assert!(
        text.contains("last failure: init: init: node never Ready"),
        "{text}"
    );
    assert!(!text.contains(BRIDGE), "the filter selects one job: {text}");
    let text = history::report(&h, Some("release-1.20")).unwrap();
    assert!(
        text.contains("release-1.20/docker/bridge smoke on v1.20.2: 2 failure(s), 2 pass(es), failed then passed 2 time(s)"),
        "{text}"
    );
}

/// A tiny HTTP server on 127.0.0.1 that records each request's JSON body.
struct Hook {
    url: String,
    got: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn hook() -> Hook {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/services/T000/B000/secret",
        l.local_addr().unwrap()
    );
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, body) = loop {
                let n = c.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break (String::new(), Vec::new());
                }
                buf.extend_from_slice(&chunk[..n]);
                let Some(end) = find(&buf, b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .expect("a content-length header");
                while buf.len() < end + 4 + len {
                    let n = c.read(&mut chunk).unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                }
                break (head, buf[end + 4..end + 4 + len].to_vec());
            };
            if let Ok(v) = serde_json::from_slice(&body) {
                g.lock().unwrap().push((head, v));
            }
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    Hook { url, got }
}

fn recorder(
    db: impl Into<Location>,
    dir: &Path,
    webhook: Option<String>,
    streak: usize,
) -> HistoryRecorder {
    let n = Notifier {
        failure_streak: streak,
        webhook,
        markdown_dir: dir.join("notifications"),
        run_url: None,
    };
    HistoryRecorder::new(db, Trigger::Periodic).with_notifier(n, dir.to_path_buf())
}

fn finish(r: &mut HistoryRecorder, s: RunSummary) {
    r.on_event(&Event::RunFinished(s))
        .expect("recording never fails on notification problems");
}

#[test]
fn webhook_gets_one_message_per_streak_and_one_on_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.sqlite");
    let server = hook();
    let mut r = recorder(&db, dir.path(), Some(server.url.clone()), 2);
    let count = || server.got.lock().unwrap().len();

    finish(&mut r, fail("r1", T0));
    assert_eq!(count(), 0, "one failure is below the streak of 2");
    finish(&mut r, fail("r2", T0 + 10));
    assert_eq!(count(), 1, "the streak reached 2");
    finish(&mut r, fail("r3", T0 + 20));
    assert_eq!(count(), 1, "one notification per streak");
    finish(&mut r, pass("r4", T0 + 30));
    assert_eq!(count(), 2, "recovery");
    finish(&mut r, pass("r5", T0 + 40));
    finish(&mut r, dry(fail("r6", T0 + 50)));
    finish(&mut r, dry(fail("r7", T0 + 60)));
    assert_eq!(count(), 2, "dry runs never start a streak");
    finish(&mut r, fail("r8", T0 + 70));
    finish(&mut r, fail("r9", T0 + 80));
    assert_eq!(count(), 3, "a new streak gets its own notification");

    let got = server.got.lock().unwrap().clone();
    let status: Vec<&str> = got
        .iter()
        .map(|(_, v)| v["shakedown"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, ["failing", "recovered", "failing"]);
    for (head, _) in &got {
        assert!(
            head.starts_with("post /services/t000/b000/secret"),
            "{head}"
        );
        assert!(head.contains("content-type: application/json"), "{head}");
    }
    let text = got[0].1["text"].as_str().unwrap();
    assert!(
        text.starts_with("shakedown: release-1.20/docker/bridge failed 2 runs in a row on v1.20.2"),
        "{text}"
    );
    assert!(
        text.contains("Last failure in step smoke: smoke: node never Ready"),
        "{text}"
    );
    assert_eq!(got[0].1["shakedown"]["streak_start"], "r1");
    assert_eq!(
        got[1].1["shakedown"]["streak"], 3,
        "recovered after 3 failures"
    );
    assert!(got[1].1["text"].as_str().unwrap().contains("passes again"));
    assert_eq!(got[2].1["shakedown"]["streak_start"], "r8");

    // Each message is also a Markdown file ready for a GitHub issue.
    let md = std::fs::read_to_string(
        dir.path()
            .join("notifications/release-1.20-docker-bridge-failing.md"),
    )
    .unwrap();
    assert!(md.starts_with("# shakedown: release-1.20/docker/bridge failed 2 runs in a row"));
    assert!(md.contains("| Failed step | `smoke` |"), "{md}");
    assert!(md.contains("shakedown scenario release-1.20 --provider docker --cni bridge"));

    let attempts = History::open(&db).unwrap().notifications().unwrap();
    assert_eq!(attempts.len(), 3);
    assert!(attempts.iter().all(|a| a.delivered));
    assert!(
        attempts[0].channel.starts_with("webhook http://127.0.0.1:")
            && !attempts[0].channel.contains("secret"),
        "webhook paths are secrets: {}",
        attempts[0].channel
    );
}

#[test]
fn presubmit_failures_never_notify() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.sqlite");
    let server = hook();
    let n = Notifier {
        failure_streak: 1,
        webhook: Some(server.url.clone()),
        markdown_dir: dir.path().join("n"),
        run_url: None,
    };
    let mut r =
        HistoryRecorder::new(db.clone(), Trigger::Presubmit).with_notifier(n, dir.path().into());
    finish(&mut r, fail("p1", T0));
    finish(&mut r, fail("p2", T0 + 1));
    assert!(server.got.lock().unwrap().is_empty());
    assert_eq!(
        History::open(&db).unwrap().job_runs(BRIDGE).unwrap().len(),
        2
    );
}

/// Collects what `tracing` logs on this thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_down_webhook_is_logged_and_recording_still_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.sqlite");
    // A port that was just closed: connecting is refused at once.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", l.local_addr().unwrap())
    };
    let logs = Logs::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let mut r = recorder(&db, dir.path(), Some(closed.clone()), 2);
        finish(&mut r, fail("r1", T0));
        finish(&mut r, fail("r2", T0 + 10));
    });
    let log = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("WARN"), "{log}");
    assert!(
        log.contains("failed to POST the notification to http://127.0.0.1:"),
        "{log}"
    );
    assert!(log.contains("was not delivered"), "{log}");

    let h = History::open(&db).unwrap();
    assert_eq!(h.job_runs(BRIDGE).unwrap().len(), 2, "both runs recorded");
    let attempts = h.notifications().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].kind, Kind::Failing);
    assert!(!attempts[0].delivered);
    assert!(attempts[0]
        .error
        .as_deref()
        .unwrap()
        .contains("failed to POST"));
    // The message was kept as Markdown all the same.
    assert!(dir
        .path()
        .join("notifications/release-1.20-docker-bridge-failing.md")
        .is_file());

    // The webhook is back: the undelivered streak is notified, once.
    let server = hook();
    let mut r = recorder(&db, dir.path(), Some(server.url.clone()), 2);
    finish(&mut r, fail("r3", T0 + 20));
    finish(&mut r, fail("r4", T0 + 30));
    let got = server.got.lock().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1["shakedown"]["streak"], 3);
    assert_eq!(got[0].1["shakedown"]["streak_start"], "r1");
}

#[test]
fn without_a_webhook_the_markdown_file_is_the_notification() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.sqlite");
    let mut r = recorder(&db, dir.path(), None, 1);
    finish(&mut r, fail("r1", T0));
    let attempts = History::open(&db).unwrap().notifications().unwrap();
    assert_eq!(attempts.len(), 1);
    assert!(attempts[0].delivered);
    assert!(
        attempts[0].channel.starts_with("markdown "),
        "{}",
        attempts[0].channel
    );
    assert!(dir
        .path()
        .join("notifications/release-1.20-docker-bridge-failing.md")
        .is_file());
}

/// release-1.20's docker cells (the scenario also has podman cells; these tests record
/// runs of the three docker jobs).
fn release_1_20() -> scenario::LoadedScenario {
    let mut s = scenario::load(
        &common::root().join("scenarios/release-1.20.yaml"),
        &common::catalog(),
        scenario::today(),
    )
    .unwrap();
    s.scenario.providers = vec![scenario::ProviderKind::Docker];
    s
}

fn now() -> i64 {
    history::epoch(SystemTime::now())
}

fn opts() -> Options {
    Options {
        version: None,
        within: Duration::from_secs(24 * 3600),
        now: SystemTime::now(),
    }
}

fn all_jobs(id: &str, at: i64, version: &str) -> RunSummary {
    run(
        id,
        at,
        version,
        [BRIDGE, WEAVE, CALICO]
            .iter()
            .map(|j| job(j, None, [60, 30, 900]))
            .collect(),
    )
}

#[test]
fn signoff_is_go_for_a_healthy_recent_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = History::open(dir.path().join("history.sqlite")).unwrap();
    h.record(
        &all_jobs("old-fail", now() - 5 * 3600, "v1.20.2"),
        Trigger::Periodic,
    )
    .unwrap();
    h.record(
        &all_jobs("good", now() - 3600, "v1.20.2"),
        Trigger::Periodic,
    )
    .unwrap();
    let s = signoff::signoff(&h, &release_1_20(), &opts()).unwrap();
    let table = s.render();
    assert!(s.go(), "{table}");
    assert_eq!(s.lines.len(), 3);
    for l in &s.lines {
        assert_eq!(l.run.as_ref().unwrap().run_id, "good");
    }
    assert!(table.contains("verdict: GO (3 of 3 job(s) go)"), "{table}");
    assert!(
        table.contains(&format!("{BRIDGE}  GO       run good at")),
        "{table}"
    );
}

#[test]
fn signoff_says_why_each_job_is_no_go() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = History::open(dir.path().join("history.sqlite")).unwrap();
    // bridge: green, but 30 hours ago.
    h.record(
        &run(
            "stale",
            now() - 30 * 3600,
            "v1.20.2",
            vec![job(BRIDGE, None, [1, 1, 1])],
        ),
        Trigger::Periodic,
    )
    .unwrap();
    // weave: green an hour ago, then red: an open failure streak.
    h.record(
        &run(
            "w-ok",
            now() - 3600,
            "v1.20.2",
            vec![job(WEAVE, None, [1, 1, 1])],
        ),
        Trigger::Periodic,
    )
    .unwrap();
    h.record(
        &run(
            "w-bad",
            now() - 600,
            "v1.20.2",
            vec![job(WEAVE, Some("conformance"), [1, 1, 1])],
        ),
        Trigger::Periodic,
    )
    .unwrap();
    // calico: only dry runs.
    h.record(
        &dry(run(
            "dry",
            now() - 60,
            "v1.20.2",
            vec![job(CALICO, None, [0, 0, 0])],
        )),
        Trigger::Periodic,
    )
    .unwrap();
    let s = signoff::signoff(&h, &release_1_20(), &opts()).unwrap();
    assert!(!s.go());
    let why = |job: &str| {
        s.lines
            .iter()
            .find(|l| l.job == job)
            .unwrap()
            .reasons
            .join("; ")
    };
    assert!(
        why(BRIDGE).starts_with("no run on v1.20.2 within 24h: the last was stale at"),
        "{}",
        why(BRIDGE)
    );
    assert!(
        why(WEAVE).contains("conformance did not pass in run w-bad: FAILED"),
        "{}",
        why(WEAVE)
    );
    assert!(
        why(WEAVE).contains("open failure streak: 1 failed run(s) since w-bad"),
        "{}",
        why(WEAVE)
    );
    assert!(
        why(CALICO).contains("only dry runs recorded"),
        "{}",
        why(CALICO)
    );
    assert!(s.render().contains("verdict: NO-GO (0 of 3 job(s) go)"));

    // Another version than the one signed off does not count.
    let other = Options {
        version: Some("v1.20.3".into()),
        ..opts()
    };
    let s = signoff::signoff(&h, &release_1_20(), &other).unwrap();
    let weave = s.lines.iter().find(|l| l.job == WEAVE).unwrap();
    assert!(
        weave.reasons[0].starts_with("never ran on v1.20.3"),
        "{:?}",
        weave.reasons
    );
}

fn shakedown(args: &[&str], history: impl AsRef<std::ffi::OsStr>) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_shakedown"))
        .arg("--root")
        .arg(common::root())
        .args(args)
        .arg("--history")
        .arg(history)
        .env_remove("ARTIFACTS")
        .env_remove("SHAKEDOWN_HISTORY")
        .output()
        .unwrap()
}

/// Through the binary: a real run of a scenario whose conformance is disabled is recorded
/// (by the history reporter `shakedown scenario` wires in), and sign-off is no-go.
#[test]
fn signoff_is_no_go_when_conformance_was_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.sqlite");
    let fixture = common::root().join("fixtures/scenarios/engine/conformance-disabled.yaml");
    let fixture = fixture.to_str().unwrap();
    let artifacts = dir.path().join("runs/one");
    let out = shakedown(
        &[
            "scenario",
            fixture,
            "--trigger",
            "periodic",
            "--artifacts",
            artifacts.to_str().unwrap(),
        ],
        &db,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("history: {} (periodic run)", db.display())),
        "{stdout}"
    );

    let h = History::open(&db).unwrap();
    let runs = h.job_runs("conformance-disabled/docker/bridge").unwrap();
    assert_eq!(runs.len(), 1);
    assert!(runs[0].passed, "the job itself passed");
    assert!(!runs[0].conformance_enabled);
    assert_eq!(runs[0].conformance, "disabled");
    drop(h);

    let out = shakedown(&["signoff", fixture], &db);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "no-go exits 1: {table}");
    assert!(
        table.contains("branch: NO-GO: conformance is disabled in"),
        "{table}"
    );
    assert!(
        table.contains(
            "conformance-disabled/docker/bridge  NO-GO    conformance was disabled in run"
        ),
        "{table}"
    );
    assert!(
        table.contains("DISABLED (no CNI provider works on this branch yet"),
        "{table}"
    );
    assert!(table.contains("verdict: NO-GO"), "{table}");

    let out = shakedown(&["history", "conformance-disabled"], &db);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("passing 1"), "{text}");
    let out = shakedown(&["history", "no-such-job"], &db);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("recorded jobs: conformance-disabled/docker/bridge"));
}

#[test]
fn dry_runs_through_the_binary_are_recorded_as_dry_runs() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.sqlite");
    let out = shakedown(
        &[
            "scenario",
            "release-1.20",
            "--dry-run",
            "--cni",
            "bridge",
            "--artifacts",
            dir.path().join("runs/dry").to_str().unwrap(),
        ],
        &db,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("(recorded as a dry run)"));
    let h = History::open(&db).unwrap();
    let runs = h.job_runs(BRIDGE).unwrap();
    assert_eq!(runs.len(), 1);
    assert!(runs[0].dry_run && !runs[0].counts());
    assert!(
        history::current_streak(&runs).is_none(),
        "a dry run is no pass"
    );
    drop(h);
    let out = shakedown(&["signoff", "release-1.20"], &db);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("only dry runs recorded"));
}

#[test]
fn history_and_signoff_need_an_existing_history() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.sqlite");
    let out = shakedown(&["history"], &missing);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no run history at"));
    assert!(!missing.exists(), "reading never creates a history");
}

/// A run whose conformance step ran these specs: (name, passed, seconds).
fn with_specs(id: &str, at: i64, specs: &[(&str, bool, u64)]) -> RunSummary {
    let mut r = pass(id, at);
    let conf = r.jobs[0]
        .steps
        .iter_mut()
        .find(|s| s.stage == Some(Stage::Conformance))
        .unwrap();
    conf.subtests = specs
        .iter()
        .map(|(name, ok, secs)| shakedown::engine::event::SubTest {
            name: name.to_string(),
            outcome: if *ok {
                StepOutcome::Passed
            } else {
                StepOutcome::Failed {
                    kind: FailureKind::Test,
                    message: "boom".into(),
                    diagnosis: None,
                    log_tail: String::new(),
                }
            },
            duration: Duration::from_secs(*secs),
            flaky: None,
        })
        .chain(std::iter::once(shakedown::engine::event::SubTest {
            name: "[sig-x] unsupported here".into(),
            outcome: StepOutcome::Skipped {
                reason: "unsupported here".into(),
            },
            duration: Duration::ZERO,
            flaky: None,
        }))
        .collect();
    r
}

#[test]
fn spec_durations_are_the_newest_passed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = History::open(dir.path().join("history.sqlite")).unwrap();
    assert!(h.spec_durations().unwrap().is_empty());
    h.record(
        &with_specs("r1", T0, &[("probe", true, 240), ("quick", true, 5)]),
        Trigger::Manual,
    )
    .unwrap();
    // Newer: quick took longer, probe failed (a failure's time says nothing of a pass).
    h.record(
        &with_specs("r2", T0 + 10, &[("probe", false, 600), ("quick", true, 9)]),
        Trigger::Manual,
    )
    .unwrap();
    let d = h.spec_durations().unwrap();
    assert_eq!(d.get("probe"), Some(&Duration::from_secs(240)));
    assert_eq!(d.get("quick"), Some(&Duration::from_secs(9)));
    // Skipped specs never ran: no duration.
    assert_eq!(d.len(), 2);
    // Recording a run again replaces its specs, as it replaces its steps.
    h.record(
        &with_specs("r2", T0 + 10, &[("quick", true, 7)]),
        Trigger::Manual,
    )
    .unwrap();
    assert_eq!(
        h.spec_durations().unwrap().get("quick"),
        Some(&Duration::from_secs(7))
    );
}

#[test]
fn flaky_specs_are_listed_from_retries_and_re_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = History::open(dir.path().join("history.sqlite")).unwrap();
    // r1: "slow" failed. r2, its re-run: "slow" passed, flaky; "retry" passed on attempt 2.
    h.record(
        &with_specs("r1", T0, &[("slow", false, 60), ("steady", true, 5)]),
        Trigger::Manual,
    )
    .unwrap();
    let mut r2 = with_specs("r2", T0 + 10, &[("slow", true, 30), ("retry", true, 9)]);
    for t in &mut r2.jobs[0].steps.iter_mut().flat_map(|s| &mut s.subtests) {
        t.flaky = match t.name.as_str() {
            "slow" => Some("failed in run r1, passed on re-run".into()),
            "retry" => Some("failed 1 attempt(s), passed on attempt 2".into()),
            _ => None,
        };
    }
    h.record(&r2, Trigger::Manual).unwrap();
    let specs = h.spec_runs().unwrap();
    let flaky: Vec<&str> = specs
        .iter()
        .filter(|s| s.outcome == "flaky")
        .map(|s| s.step.as_str())
        .collect();
    assert_eq!(flaky, ["retry", "slow"]);
    let fl = history::flakes(&specs);
    let by: std::collections::BTreeMap<&str, (usize, usize, usize)> = fl
        .iter()
        .map(|f| (f.step.as_str(), (f.failures, f.passes, f.flips)))
        .collect();
    // One flip each: the re-run's pass after r1's failure is counted once, not twice.
    assert_eq!(by.get("slow"), Some(&(1, 1, 1)));
    assert_eq!(by.get("retry"), Some(&(0, 1, 1)));
    assert!(!by.contains_key("steady"));
    // A flaky pass still times the spec for ordering.
    assert_eq!(
        h.spec_durations().unwrap().get("slow"),
        Some(&Duration::from_secs(30))
    );
    let text = history::report(&h, None).unwrap();
    let table = &text[text.find("flaky specs").expect("a flaky specs table")..];
    assert!(
        table.contains(": slow: 1 failed run(s), 1 passed, flaky 1 time(s)"),
        "{table}"
    );
    assert!(
        table.contains(": retry: 0 failed run(s), 1 passed, flaky 1 time(s)"),
        "{table}"
    );
}

// PostgreSQL: the shared backend, against a real server on 127.0.0.1 (Debian's postgresql,
// which `shakedown host setup` starts, with the role these tests log in as). Each test gets
// a database of its own, dropped at its end. No server is a failure, never a skip.

/// The test server's URL (`$SHAKEDOWN_TEST_POSTGRES`, else the one host setup prepares).
fn pg_server() -> String {
    std::env::var("SHAKEDOWN_TEST_POSTGRES").unwrap_or_else(|_| {
        "postgres://shakedown_test:shakedown_test@127.0.0.1:5432/postgres".into()
    })
}

fn pg_admin(sql: &str) {
    let server = pg_server();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "failed to reach the test PostgreSQL at {}: {e}; start it with \
                     `cargo run -- host setup`, or point SHAKEDOWN_TEST_POSTGRES at another",
                    history::store::redact(&server)
                )
            });
        tokio::spawn(conn);
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    });
}

/// A fresh database on the test server, dropped with its connections when this is dropped.
struct PgDb {
    name: String,
    url: String,
}

impl PgDb {
    fn new(what: &str) -> PgDb {
        let name = format!(
            "shakedown_test_{what}_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        pg_admin(&format!("CREATE DATABASE {name}"));
        let server = pg_server();
        let (base, _) = server.rsplit_once('/').expect("a URL with a database");
        PgDb {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        pg_admin(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// A history with every kind of run the answers depend on: streaks broken and not by dry,
/// presubmit and interrupted runs, flaky steps and specs, notifications, three cells.
fn record_the_story(at: Location, dir: &Path, now: i64) {
    let t0 = now - 2 * 86400;
    let mut r = recorder(at.clone(), dir, None, 2);
    finish(&mut r, pass("r1", t0));
    finish(&mut r, fail("r2", t0 + 10));
    finish(&mut r, dry(pass("r3", t0 + 20)));
    finish(&mut r, fail("r5", t0 + 40));
    let mut interrupted = pass("r6", t0 + 50);
    interrupted.exit = ExitKind::Interrupted;
    finish(&mut r, interrupted);
    finish(&mut r, fail("r7", t0 + 60));
    finish(&mut r, pass("r8", t0 + 70));
    finish(
        &mut r,
        with_specs("r9", t0 + 80, &[("probe", true, 240), ("quick", false, 5)]),
    );
    finish(
        &mut r,
        with_specs("r10", t0 + 90, &[("probe", false, 600), ("quick", true, 9)]),
    );
    let mut h = History::open(at).unwrap();
    h.record(&pass("r4", t0 + 30), Trigger::Presubmit).unwrap();
    h.record(
        &all_jobs("recent", now - 3600, "v1.20.2"),
        Trigger::Periodic,
    )
    .unwrap();
    let mut weave_down = all_jobs("latest", now - 60, "v1.20.2");
    weave_down.jobs[1] = job(WEAVE, Some("init"), [60, 0, 0]);
    weave_down.exit = ExitKind::TestFailure;
    h.record(&weave_down, Trigger::Periodic).unwrap();
}

/// Everything `history`, `signoff` and the notifications read, with what differs by
/// backend left out: the location line, and when each notification was sent.
fn answers(h: &History) -> Vec<String> {
    let mut out = vec![format!("{:?}", h.job_names().unwrap())];
    for j in h.job_names().unwrap() {
        out.push(format!("{:?}", h.job_runs(&j).unwrap()));
        out.push(format!("{:?}", history::streaks(&h.job_runs(&j).unwrap())));
    }
    out.push(format!("{:?}", h.step_runs().unwrap()));
    out.push(format!("{:?}", h.spec_runs().unwrap()));
    out.push(format!("{:?}", h.spec_durations().unwrap()));
    let mut notes = h.notifications().unwrap();
    for n in &mut notes {
        n.sent_at = 0;
        // Each store's Markdown went to its own folder.
        n.channel = n
            .channel
            .replace("/sqlite/", "/")
            .replace("/postgres/", "/");
    }
    out.push(format!("{notes:?}"));
    let report = history::report(h, None).unwrap();
    out.push(report.lines().skip(1).collect::<Vec<_>>().join("\n"));
    out.push(
        signoff::signoff(h, &release_1_20(), &opts())
            .unwrap()
            .render(),
    );
    out
}

#[test]
fn postgres_history_answers_as_the_sqlite_file_does() {
    let pg = PgDb::new("same");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("history.sqlite");
    let t = now();
    record_the_story(Location::File(file.clone()), &dir.path().join("sqlite"), t);
    record_the_story(Location::parse(&pg.url), &dir.path().join("postgres"), t);
    let from_file = answers(&History::open_existing(&file).unwrap());
    let from_pg = answers(&History::open_existing(Location::parse(&pg.url)).unwrap());
    assert_eq!(from_file.len(), from_pg.len());
    for (f, p) in from_file.iter().zip(&from_pg) {
        assert_eq!(f, p, "SQLite and PostgreSQL disagree");
    }
    // The story is not empty: streaks, a flaky spec, a notification and a no-go are in it.
    let all = from_pg.join("\n");
    assert!(all.contains("Failing"), "no notification in: {all}");
    assert!(all.contains("flaky"), "no flaky spec in: {all}");
    assert!(
        all.contains("verdict: NO-GO"),
        "no sign-off verdict in: {all}"
    );

    // Through the binary, with the URL as --history: the same report, and no password in
    // anything it prints.
    let out = shakedown(&["history"], &pg.url);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = "run history: postgres://shakedown_test@127.0.0.1:";
    assert!(text.starts_with(shown), "{text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !text.contains(":shakedown_test@") && !err.contains(":shakedown_test@"),
        "the password was printed: {text}{err}"
    );
    assert_eq!(
        text.lines().skip(1).collect::<Vec<_>>().join("\n"),
        from_file[from_file.len() - 2]
    );
    let out = shakedown(&["signoff", "release-1.20"], &pg.url);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "weave failed last: no-go, {text}"
    );
    assert!(text.contains("verdict: NO-GO"), "{text}");
}

#[test]
fn concurrent_writers_share_one_postgres_history() {
    let pg = PgDb::new("concurrent");
    const WRITERS: usize = 6;
    const RUNS: usize = 8;
    let cells = [
        BRIDGE,
        WEAVE,
        CALICO,
        "release-1.20/podman/bridge",
        "release-1.20/podman/weave",
        "release-1.20/podman/calico",
    ];
    // Each writer is one Prow pod running one cell: runs 0-2 pass, 3-4 fail, 5-7 pass,
    // and the last is recent. All open the history at the same moment, so they also race
    // to create the schema.
    let t = now();
    let story = |w: usize| -> Vec<RunSummary> {
        (0..RUNS)
            .map(|k| {
                let at = if k == RUNS - 1 {
                    t - 60 - w as i64
                } else {
                    t - 86400 + (k * 100 + w) as i64
                };
                let fail = (3..5).contains(&k).then_some("smoke");
                run(
                    &format!("w{w}-r{k}"),
                    at,
                    "v1.20.2",
                    vec![job(cells[w], fail, [60, 30, 600])],
                )
            })
            .collect()
    };
    let start = Arc::new(std::sync::Barrier::new(WRITERS));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (url, start, runs) = (pg.url.clone(), start.clone(), story(w));
            std::thread::spawn(move || {
                start.wait();
                let mut h = History::open(Location::parse(&url)).unwrap();
                for r in &runs {
                    h.record(r, Trigger::Periodic).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("a writer failed");
    }
    // The same runs, one after another, into a SQLite file: the reference answers.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("history.sqlite");
    let mut reference = History::open(&file).unwrap();
    for w in 0..WRITERS {
        for r in story(w) {
            reference.record(&r, Trigger::Periodic).unwrap();
        }
    }
    let h = History::open_existing(Location::parse(&pg.url)).unwrap();
    assert_eq!(h.job_names().unwrap().len(), WRITERS);
    for cell in cells {
        let runs = h.job_runs(cell).unwrap();
        assert_eq!(runs.len(), RUNS, "{cell}: every run of its writer recorded");
        let shape: Vec<(bool, usize)> = history::streaks(&runs)
            .iter()
            .map(|s| (s.passing, s.length))
            .collect();
        assert_eq!(shape, [(true, 3), (false, 2), (true, 3)], "{cell}");
    }
    // Sign-off sees every docker cell's last run, whichever writer recorded it.
    let go = signoff::signoff(&h, &release_1_20(), &opts()).unwrap();
    assert!(go.go(), "{}", go.render());
    let writers_seen: std::collections::BTreeSet<String> = go
        .lines
        .iter()
        .map(|l| l.run.as_ref().unwrap().run_id[..2].to_string())
        .collect();
    assert_eq!(writers_seen.len(), 3, "{}", go.render());
    let mut a = answers(&h);
    let mut b = answers(&reference);
    // Step order within one start second may differ by which writer came first; both
    // stores sort by start time, then run id, so nothing should.
    a.retain(|l| !l.is_empty());
    b.retain(|l| !l.is_empty());
    assert_eq!(
        a, b,
        "concurrent PostgreSQL writers and one SQLite writer disagree"
    );
}
