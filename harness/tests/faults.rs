//! The fault suite: each `fault::<name>` trial runs the real binary into a fault and checks
//! what a user is promised: the exit code, the artifacts (`started.json`, `finished.json`,
//! a parseable JUnit, `build-log.txt`) and that nothing labelled with the run's id is left
//! (containers, networks, volumes, the private work folder) nor any process the run
//! started. A table of every fault's figures is printed at the end.
//!
//!   cargo test --test faults
//!
//! The faults that need a cluster take the suite's one-cluster-at-a-time lock. At the end
//! the suite checks that nothing labelled appeared and stayed while it ran.

mod common;

use libtest_mimic::{Arguments, Failed, Trial};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One row of the table printed at the end.
struct Row {
    fault: &'static str,
    exit: Option<i32>,
    seconds: f64,
    artifacts: String,
    leaked: usize,
}

static ROWS: Mutex<Vec<Row>> = Mutex::new(Vec::new());

fn record(row: Row) {
    ROWS.lock().unwrap_or_else(|e| e.into_inner()).push(row);
}

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err(what().into())
    }
}

fn shakedown() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shakedown"));
    c.arg("--root").arg(common::root());
    c
}

fn fixture(name: &str) -> PathBuf {
    common::root().join("fixtures/scenarios").join(name)
}

/// What a finished run left: its exit code, how long it took, what it printed.
struct Ran {
    exit: Option<i32>,
    seconds: f64,
    output: String,
}

/// Runs `scenario FILE --artifacts DIR --history DIR.history.sqlite` with `env`.
fn run_scenario(file: &Path, artifacts: &Path, env: &[(&str, String)]) -> Result<Ran, Failed> {
    run_scenario_with(file, artifacts, env, &[])
}

fn run_scenario_with(
    file: &Path,
    artifacts: &Path,
    env: &[(&str, String)],
    extra: &[&str],
) -> Result<Ran, Failed> {
    let t = Instant::now();
    let mut c = shakedown();
    c.arg("scenario")
        .arg(file)
        .args(extra)
        .arg("--artifacts")
        .arg(artifacts)
        .arg("--history")
        .arg(artifacts.with_extension("history.sqlite"))
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output()?;
    Ok(Ran {
        exit: out.status.code(),
        seconds: t.elapsed().as_secs_f64(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

/// The run id `started.json` names.
fn run_id(artifacts: &Path) -> Option<String> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(artifacts.join("started.json")).ok()?).ok()?;
    v["metadata"]["run-id"].as_str().map(str::to_string)
}

/// Every artifact a run promises, each present and readable; "yes" or what is missing.
fn artifacts_complete(artifacts: &Path) -> String {
    let mut missing = Vec::new();
    for f in ["started.json", "finished.json"] {
        let ok = std::fs::read(artifacts.join(f))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some();
        if !ok {
            missing.push(f.to_string());
        }
    }
    if !artifacts.join("build-log.txt").is_file() {
        missing.push("build-log.txt".into());
    }
    let junit: Vec<PathBuf> = std::fs::read_dir(artifacts)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("junit_") && n.ends_with(".xml"))
                })
                .collect()
        })
        .unwrap_or_default();
    if junit.is_empty()
        || junit.iter().any(|p| {
            std::panic::catch_unwind(|| common::read_junit(p))
                .map(|s| s.is_empty())
                .unwrap_or(true)
        })
    {
        missing.push("a parseable junit_*.xml".into());
    }
    if missing.is_empty() {
        "yes".into()
    } else {
        format!("no: {}", missing.join(", "))
    }
}

/// What is left of a run: containers, networks and volumes labelled with its id (docker and
/// podman, where installed), the podman provider's FORWARD rules, and its private work
/// folder.
fn leftovers(run_id: &str) -> Vec<String> {
    let mut left = common::labelled(run_id);
    let work = shakedown::paths::work_dir(run_id);
    if work.exists() {
        left.push(format!("work folder {}", work.display()));
    }
    left
}

/// The promise every fault keeps: every artifact written, nothing of the run left.
fn complete_and_clean(complete: &str, left: &[String]) -> Result<(), Failed> {
    check(complete == "yes", || format!("artifacts: {complete}"))?;
    check(left.is_empty(), || format!("left: {left:?}"))
}

/// Processes a step recorded in `<artifacts>/pids/` that still live: not gone and not a
/// zombie waiting for init to reap it. A SIGKILL takes a moment to land: 5 s of grace.
fn live_pids(pids_dir: &Path) -> Vec<String> {
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().chars().next()))
            .flatten()
            .is_some_and(|state| state != 'Z' && state != 'X')
    };
    let recorded: Vec<(String, i32)> = std::fs::read_dir(pids_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid = std::fs::read_to_string(e.path())
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some((e.file_name().to_string_lossy().to_string(), pid))
        })
        .collect();
    let t = Instant::now();
    loop {
        let live: Vec<String> = recorded
            .iter()
            .filter(|(_, pid)| alive(*pid))
            .map(|(name, pid)| format!("{name} (pid {pid})"))
            .collect();
        if live.is_empty() || t.elapsed() > Duration::from_secs(5) {
            return live;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A docker socket that accepts every connection and never answers: a hung daemon.
fn hung_socket(dir: &Path) -> Result<String, Failed> {
    let sock = dir.join("hung.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock)?;
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    Ok(format!("unix://{}", sock.display()))
}

/// Fault 1: The docker daemon does not answer at start: exit 3 within seconds, naming it.
fn docker_daemon_not_answering() -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    let art = tmp.path().join("artifacts");
    let host = hung_socket(tmp.path())?;
    let ran = run_scenario(
        &fixture("faults/docker-down.yaml"),
        &art,
        &[("DOCKER_HOST", host.clone())],
    )?;
    let id = run_id(&art).unwrap_or_default();
    let complete = artifacts_complete(&art);
    let left = if id.is_empty() {
        vec![]
    } else {
        leftovers(&id)
    };
    record(Row {
        fault: "docker daemon not answering",
        exit: ran.exit,
        seconds: ran.seconds,
        artifacts: complete.clone(),
        leaked: left.len(),
    });
    check(ran.exit == Some(3), || {
        format!("exit {:?}, want 3:\n{}", ran.exit, ran.output)
    })?;
    check(ran.seconds < 60.0, || {
        format!(
            "took {:.1}s; a hung daemon must fail the run in seconds",
            ran.seconds
        )
    })?;
    let log = std::fs::read_to_string(art.join("jobs/docker-bridge/01-build.log"))?;
    check(
        log.contains("failed to reach the docker daemon") && log.contains(&host),
        || format!("the build log does not name the daemon at {host}:\n{log}"),
    )?;
    // The later step skipped, teardown run.
    let suite = &common::read_junit(&art.join("junit_docker-bridge.xml"))[0];
    check(suite.case("up").result == "skipped", || {
        format!("up: {}", suite.case("up").result)
    })?;
    check(suite.case("down").result == "passed", || {
        format!("down: {}", suite.case("down").result)
    })?;
    complete_and_clean(&complete, &left)?;
    Ok(())
}

/// Fault 5: A step ignores SIGTERM: killed after its grace period, its whole group gone.
fn step_ignores_sigterm() -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    let art = tmp.path().join("artifacts");
    let ran = run_scenario(&fixture("engine/ignore-term.yaml"), &art, &[])?;
    let id = run_id(&art).unwrap_or_default();
    let complete = artifacts_complete(&art);
    let mut left = leftovers(&id);
    left.extend(live_pids(&art.join("pids")));
    record(Row {
        fault: "step ignores SIGTERM",
        exit: ran.exit,
        seconds: ran.seconds,
        artifacts: complete.clone(),
        leaked: left.len(),
    });
    check(ran.exit == Some(1), || {
        format!(
            "exit {:?}, want 1 (a test step past its deadline):\n{}",
            ran.exit, ran.output
        )
    })?;
    // Deadline 1 s, grace 1 s: killed within a few seconds, not left running.
    check(ran.seconds < 20.0, || format!("took {:.1}s", ran.seconds))?;
    check(
        art.join("pids/stubborn.leader").is_file() && art.join("pids/stubborn.child").is_file(),
        || "the step never recorded its processes (the test proves nothing)".into(),
    )?;
    complete_and_clean(&complete, &left)?;
    Ok(())
}

/// The highest resident set size `/proc/<pid>/status` reports, polled until the process
/// ends (kB).
fn peak_rss_kb(
    pid: u32,
    child: &mut std::process::Child,
) -> Result<(u64, std::process::ExitStatus), Failed> {
    let status = format!("/proc/{pid}/status");
    let mut peak = 0;
    loop {
        if let Ok(s) = std::fs::read_to_string(&status) {
            if let Some(kb) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kb);
            }
        }
        if let Some(st) = child.try_wait()? {
            return Ok((peak, st));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Fault 6: A step prints about 200 MB: the log stops at its cap with the last lines kept after
/// the mark, and shakedown's memory stays far below what was printed.
fn step_prints_hundreds_of_megabytes() -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    let art = tmp.path().join("artifacts");
    let t = Instant::now();
    let mut child = shakedown()
        .arg("scenario")
        .arg(fixture("faults/spew-big.yaml"))
        .arg("--artifacts")
        .arg(&art)
        .arg("--history")
        .arg(tmp.path().join("history.sqlite"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let (peak_kb, status) = peak_rss_kb(child.id(), &mut child)?;
    let seconds = t.elapsed().as_secs_f64();
    let id = run_id(&art).unwrap_or_default();
    let complete = artifacts_complete(&art);
    let left = leftovers(&id);
    record(Row {
        fault: "step prints ~200 MB",
        exit: status.code(),
        seconds,
        artifacts: complete.clone(),
        leaked: left.len(),
    });
    eprintln!("  peak RSS of shakedown: {} MiB", peak_kb / 1024);
    check(status.code() == Some(0), || format!("exit {status}"))?;
    let log_path = art.join("jobs/docker-bridge/01-spew.log");
    let size = std::fs::metadata(&log_path)?.len();
    eprintln!("  step log: {} MiB", size / (1 << 20));
    check(size <= shakedown::process::LOG_CAP + (1 << 20), || {
        format!("the step log is {size} bytes, past the cap")
    })?;
    // The end of the log: the mark, then the last lines, the very last one included.
    let mut f = std::fs::File::open(&log_path)?;
    use std::io::{Read, Seek, SeekFrom};
    f.seek(SeekFrom::End(-16384))?;
    let mut end = String::new();
    f.read_to_string(&mut end)?;
    check(end.contains("log truncated at"), || {
        "no truncation mark".into()
    })?;
    check(
        end.contains("[shakedown: the last") && end.contains("spew-big: the last line"),
        || {
            format!(
                "the last line is not kept after the mark:\n{}",
                &end[end.len().saturating_sub(600)..]
            )
        },
    )?;
    // About 200 MB went through: memory must not follow it.
    check(peak_kb < 150 * 1024, || {
        format!(
            "peak RSS {} MiB while a step printed 200 MB",
            peak_kb / 1024
        )
    })?;
    complete_and_clean(&complete, &left)?;
    Ok(())
}

/// Fault 7: The artifacts disk is full: exit 3 with a clear message, teardown still runs,
/// nothing is left. Needs root to mount a 512 KiB tmpfs.
fn artifacts_disk_full() -> Result<(), Failed> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("needs root to mount a small tmpfs as the artifacts folder".into());
    }
    let tmp = tempfile::tempdir()?;
    let art = tmp.path().join("artifacts");
    std::fs::create_dir_all(&art)?;
    let markers = tmp.path().join("markers");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
        .arg(&art)
        .status()?;
    check(mounted.success(), || "failed to mount a tmpfs".into())?;
    let ran = run_scenario(
        &fixture("faults/disk-full.yaml"),
        &art,
        &[("FAULT_MARKERS", markers.display().to_string())],
    );
    let id = run_id(&art).unwrap_or_default();
    let _ = Command::new("umount").arg(&art).status();
    let ran = ran?;
    let left = if id.is_empty() {
        vec![]
    } else {
        leftovers(&id)
    };
    record(Row {
        fault: "artifacts disk full",
        exit: ran.exit,
        seconds: ran.seconds,
        artifacts: "no (disk full, by design)".into(),
        leaked: left.len(),
    });
    check(ran.exit == Some(3), || {
        format!("exit {:?}, want 3:\n{}", ran.exit, ran.output)
    })?;
    let said = ran.output.to_ascii_lowercase();
    check(
        said.contains("no space left") || said.contains("failed to write"),
        || format!("no clear message about the full disk:\n{}", ran.output),
    )?;
    check(markers.join("cleanup").is_file(), || {
        "the always step did not run on a full disk".into()
    })?;
    check(left.is_empty(), || format!("left: {left:?}"))?;
    Ok(())
}

/// Fault 9: A notification webhook accepts the connection and never answers: the run finishes on
/// time, and the failed delivery is reported.
fn webhook_never_answers() -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    let art = tmp.path().join("artifacts");
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    // A periodic run: presubmits never notify.
    let ran = run_scenario_with(
        &fixture("faults/webhook.yaml"),
        &art,
        &[("FAULT_WEBHOOK", format!("http://127.0.0.1:{port}/hook"))],
        &["--trigger", "periodic"],
    )?;
    let id = run_id(&art).unwrap_or_default();
    let complete = artifacts_complete(&art);
    let left = leftovers(&id);
    record(Row {
        fault: "webhook never answers",
        exit: ran.exit,
        seconds: ran.seconds,
        artifacts: complete.clone(),
        leaked: left.len(),
    });
    check(ran.exit == Some(1), || {
        format!(
            "exit {:?}, want 1 (the failing step):\n{}",
            ran.exit, ran.output
        )
    })?;
    check(ran.seconds < 30.0, || {
        format!("took {:.1}s: a silent webhook held the run", ran.seconds)
    })?;
    check(ran.output.contains("not delivered"), || {
        format!("the failed delivery is not reported:\n{}", ran.output)
    })?;
    complete_and_clean(&complete, &left)?;
    Ok(())
}

/// Fault 10: A corrupt scenario file: exit 2 naming file and line, nothing created.
fn corrupt_scenario() -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    let file = tmp.path().join("corrupt.yaml");
    std::fs::write(
        &file,
        "branch: corrupt\nkubernetes: {version: v1.20.2\nproviders: [docker]\n",
    )?;
    let art = tmp.path().join("artifacts");
    let ran = run_scenario(&file, &art, &[])?;
    record(Row {
        fault: "corrupt scenario file",
        exit: ran.exit,
        seconds: ran.seconds,
        artifacts: "none, by design (nothing ran)".into(),
        leaked: usize::from(art.exists()),
    });
    check(ran.exit == Some(2), || {
        format!("exit {:?}, want 2:\n{}", ran.exit, ran.output)
    })?;
    check(ran.output.contains(&format!("{}:", file.display())), || {
        format!("the error does not name the file and line:\n{}", ran.output)
    })?;
    check(!art.exists(), || {
        format!(
            "{} was created for a scenario that never loaded",
            art.display()
        )
    })?;
    Ok(())
}

/// Cluster faults run one at a time: a cluster each, on a small machine.
static CLUSTER: Mutex<()> = Mutex::new(());

fn file_has(path: &Path, text: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|s| s.contains(text))
}

fn sigint(child: &std::process::Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
}

/// Starts `scenario FILE` in the background, its output into `<artifacts>.out`.
fn spawn_scenario(file: &Path, artifacts: &Path) -> Result<std::process::Child, Failed> {
    let out = std::fs::File::create(artifacts.with_extension("out"))?;
    Ok(shakedown()
        .arg("scenario")
        .arg(file)
        .arg("--artifacts")
        .arg(artifacts)
        .arg("--history")
        .arg(artifacts.with_extension("history.sqlite"))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?)
}

/// Waits for the child, at most `limit`; kills it past that.
fn wait_child(
    child: &mut std::process::Child,
    limit: Duration,
) -> Result<std::process::ExitStatus, Failed> {
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the run did not end within {limit:?}").into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

const JOB: &str = "jobs/docker-bridge";

/// Runs the interrupt fixture and sends SIGINT 2 s after `kubeadm join` started; with
/// `again`, a second SIGINT once log export (teardown) has begun. The run's exit status.
fn interrupt_during_join(art: &Path, again: bool) -> Result<std::process::ExitStatus, Failed> {
    let mut child = spawn_scenario(&fixture("faults/interrupt-join.yaml"), art)?;
    let join_log = art.join(JOB).join("04-join.log");
    let export_log = art.join(JOB).join("05-export-logs.log");
    let mut seen = common::wait_for("kubeadm join", Duration::from_secs(900), || {
        file_has(&join_log, "kubeadm join")
    });
    if seen.is_ok() {
        std::thread::sleep(Duration::from_secs(2));
        sigint(&child);
        if again {
            seen = common::wait_for("teardown", Duration::from_secs(120), || {
                export_log.is_file()
            });
            if seen.is_ok() {
                sigint(&child);
            }
        }
    }
    let status = wait_child(&mut child, Duration::from_secs(300))?;
    seen?;
    Ok(status)
}

/// Fault 3: SIGINT in the middle of `kubeadm join`: exit 130, the `always` steps (log
/// export, teardown) run, nothing is left.
fn sigint_during_join() -> Result<(), Failed> {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir()?;
    let art = tmp.path().join("artifacts");
    let t = Instant::now();
    let status = interrupt_during_join(&art, false)?;
    let seconds = t.elapsed().as_secs_f64();
    let id = run_id(&art).unwrap_or_default();
    let complete = artifacts_complete(&art);
    let left = leftovers(&id);
    record(Row {
        fault: "SIGINT during kubeadm join",
        exit: status.code(),
        seconds,
        artifacts: complete.clone(),
        leaked: left.len(),
    });
    check(status.code() == Some(130), || {
        format!("exit {status}, want 130")
    })?;
    let junit = std::fs::read_to_string(art.join("junit_docker-bridge.xml"))?;
    check(junit.contains("interrupted by SIGINT"), || {
        "the JUnit does not say the run was interrupted".into()
    })?;
    for always in ["05-export-logs.log", "06-down.log"] {
        check(art.join(JOB).join(always).is_file(), || {
            format!("the always step {always} did not run")
        })?;
    }
    check(
        file_has(&art.join(JOB).join("06-down.log"), "cluster removed"),
        || "teardown did not remove the cluster".into(),
    )?;
    complete_and_clean(&complete, &left)?;
    Ok(())
}

/// Fault 4: a second SIGINT during teardown: exit 130, and `gc --run ID` then leaves
/// nothing.
fn second_sigint_during_teardown() -> Result<(), Failed> {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir()?;
    let art = tmp.path().join("artifacts");
    let t = Instant::now();
    let status = interrupt_during_join(&art, true)?;
    let id = run_id(&art).unwrap_or_default();
    check(!id.is_empty(), || "started.json names no run".into())?;
    let before_gc = leftovers(&id);
    let gc = shakedown().args(["gc", "--run", &id]).output()?;
    let seconds = t.elapsed().as_secs_f64();
    let left = leftovers(&id);
    let complete = artifacts_complete(&art);
    eprintln!("  left before gc: {before_gc:?}");
    record(Row {
        fault: "second SIGINT during teardown",
        exit: status.code(),
        seconds,
        artifacts: complete.clone(),
        leaked: left.len(),
    });
    check(status.code() == Some(130), || {
        format!("exit {status}, want 130")
    })?;
    check(gc.status.success(), || {
        format!("gc failed: {}", String::from_utf8_lossy(&gc.stderr))
    })?;
    check(complete == "yes", || format!("artifacts: {complete}"))?;
    check(left.is_empty(), || format!("left after gc: {left:?}"))?;
    Ok(())
}

/// Fault 8: two runs of one scenario at once: both finish, no name collides, each removes
/// only its own cluster.
fn two_runs_at_once() -> Result<(), Failed> {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir()?;
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let t = Instant::now();
    let file = fixture("faults/twice.yaml");
    let mut first = spawn_scenario(&file, &a)?;
    let mut second = spawn_scenario(&file, &b)?;
    let sa = wait_child(&mut first, Duration::from_secs(900))?;
    let sb = wait_child(&mut second, Duration::from_secs(900))?;
    let seconds = t.elapsed().as_secs_f64();
    let (ia, ib) = (
        run_id(&a).unwrap_or_default(),
        run_id(&b).unwrap_or_default(),
    );
    let (ca, cb) = (artifacts_complete(&a), artifacts_complete(&b));
    let mut left = leftovers(&ia);
    left.extend(leftovers(&ib));
    record(Row {
        fault: "two runs of one scenario at once",
        exit: sa.code().max(sb.code()),
        seconds,
        artifacts: if ca == "yes" && cb == "yes" {
            "yes (both)".into()
        } else {
            format!("{ca}; {cb}")
        },
        leaked: left.len(),
    });
    let said = |p: &Path| std::fs::read_to_string(p.with_extension("out")).unwrap_or_default();
    check(sa.success() && sb.success(), || {
        format!("exits {sa} and {sb}:\n{}\n{}", said(&a), said(&b))
    })?;
    check(!ia.is_empty() && ia != ib, || {
        format!("run ids {ia:?} and {ib:?}")
    })?;
    // Each run's nodes carry its own id: read back from the up step's logs.
    let nodes = |p: &Path| {
        std::fs::read_to_string(p.join(JOB).join("02-up.log"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("nodes up"))
            .unwrap_or_default()
            .to_string()
    };
    let (na, nb) = (nodes(&a), nodes(&b));
    eprintln!("  {na}\n  {nb}");
    check(na.contains(&ia) && nb.contains(&ib), || {
        format!("each run's nodes should carry its own run id:\n{na}\n{nb}")
    })?;
    check(ca == "yes" && cb == "yes", || {
        format!("artifacts: {ca}; {cb}")
    })?;
    check(left.is_empty(), || format!("left: {left:?}"))?;
    Ok(())
}

/// Fault 2: the control-plane node container is killed while `kubeadm init` runs: the init
/// step fails as infrastructure (exit 3) with a diagnosis naming the node and its state, the
/// surviving worker's logs are still exported, and nothing is left.
fn node_killed_during_init() -> Result<(), Failed> {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir()?;
    let art = tmp.path().join("artifacts");
    let t = Instant::now();
    let mut child = spawn_scenario(&fixture("faults/node-killed.yaml"), &art)?;
    // The provider logs every command as `+ docker exec NODE ...`: once kubeadm init is
    // under way on a node, pull that node out from under it.
    let init_log = art.join(JOB).join("03-init.log");
    let mut node = String::new();
    let seen = common::wait_for("kubeadm init", Duration::from_secs(900), || {
        let text = std::fs::read_to_string(&init_log).unwrap_or_default();
        match text.lines().find_map(|l| {
            let l = l.strip_prefix("+ docker exec ")?;
            l.contains(" kubeadm init")
                .then(|| l.split(' ').next().unwrap_or("").to_string())
        }) {
            Some(n) => {
                node = n;
                true
            }
            None => false,
        }
    });
    if seen.is_ok() {
        std::thread::sleep(Duration::from_secs(2));
        Command::new("docker").args(["kill", &node]).output()?;
    }
    let status = wait_child(&mut child, Duration::from_secs(600))?;
    let seconds = t.elapsed().as_secs_f64();
    seen?;
    let id = run_id(&art).unwrap_or_default();
    let complete = artifacts_complete(&art);
    let left = leftovers(&id);
    record(Row {
        fault: "node killed during kubeadm init",
        exit: status.code(),
        seconds,
        artifacts: complete.clone(),
        leaked: left.len(),
    });
    check(status.code() == Some(3), || {
        format!("exit {status}, want the infrastructure exit code 3")
    })?;
    let suite = &common::read_junit(&art.join("junit_docker-bridge.xml"))[0];
    let init = suite.case("init");
    check(init.result == "failure", || {
        format!("init: {}, want a failure", init.result)
    })?;
    let said = format!("{}\n{}", init.message, init.text);
    check(said.contains(&node) && said.contains("exited"), || {
        format!("the init failure does not name node {node} and its state:\n{said}")
    })?;
    // The surviving worker's journal is still exported.
    let worker = format!("{}-w1", node.trim_end_matches("-cp1"));
    let kubelet = art
        .join(JOB)
        .join(format!("logs/nodes/{worker}/kubelet.log"));
    check(kubelet.is_file(), || {
        format!("{} was not exported", kubelet.display())
    })?;
    eprintln!("  killed {node} during kubeadm init");
    complete_and_clean(&complete, &left)?;
    Ok(())
}

/// Fault 12: shakedown itself SIGKILLed while its cluster is up, then `shakedown gc --run
/// ID`: every container, network, volume and process of that run goes, and the work folder
/// holding its kubeconfig; nothing unlabelled and nothing of another run does.
fn sigkill_then_gc() -> Result<(), Failed> {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir()?;
    let art = tmp.path().join("artifacts");
    let t = Instant::now();
    let mut child = spawn_scenario(&fixture("faults/killed.yaml"), &art)?;
    let pids = art.join("pids");
    let up = common::wait_for("the hang step", Duration::from_secs(900), || {
        pids.join("hang.leader").exists() && pids.join("hang.child").exists()
    });
    let _ = child.kill();
    let status = child.wait()?;
    up?;
    let id = run_id(&art).unwrap_or_default();
    check(!id.is_empty(), || "started.json names no run".into())?;
    check(shakedown::paths::work_dir(&id).is_dir(), || {
        format!(
            "the killed run has no work folder {} (the fault proves nothing)",
            shakedown::paths::work_dir(&id).display()
        )
    })?;
    let before_gc = leftovers(&id);
    let orphans = live_pids(&pids);
    eprintln!("  left by the killed run {id}: {before_gc:?}; processes {orphans:?}");
    for what in ["docker container ", "docker network ", "docker volume "] {
        check(before_gc.iter().any(|l| l.starts_with(what)), || {
            format!(
                "the killed run left no labelled {what}(the fault proves nothing): {before_gc:?}"
            )
        })?;
    }
    check(!orphans.is_empty(), || {
        "the hang step's processes died with shakedown (the fault proves nothing)".into()
    })?;
    // Bystanders gc must not touch: unlabelled, and labelled with another run.
    let other = format!("io.shakedown.run={id}-other");
    common::docker_lines(&["volume", "create", "sd-gc-bystander-unlabelled"]);
    common::docker_lines(&["network", "create", "sd-gc-bystander-unlabelled"]);
    common::docker_lines(&[
        "volume",
        "create",
        "--label",
        "io.shakedown.managed=true",
        "--label",
        &other,
        "sd-gc-bystander-other-run",
    ]);
    let gc = shakedown().args(["gc", "--run", &id]).output()?;
    let seconds = t.elapsed().as_secs_f64();
    let left = leftovers(&id);
    let alive = live_pids(&pids);
    let volumes = common::docker_lines(&["volume", "ls", "-q"]);
    let networks = common::docker_lines(&["network", "ls", "--format", "{{.Name}}"]);
    common::docker_lines(&[
        "volume",
        "rm",
        "-f",
        "sd-gc-bystander-unlabelled",
        "sd-gc-bystander-other-run",
    ]);
    common::docker_lines(&["network", "rm", "sd-gc-bystander-unlabelled"]);
    // A SIGKILLed run cannot write finished.json; what it wrote before must be there.
    let complete = artifacts_complete(&art);
    let expected = "no: finished.json, a parseable junit_*.xml";
    record(Row {
        fault: "shakedown SIGKILLed, then gc",
        exit: gc.status.code(),
        seconds,
        artifacts: if complete == expected {
            "started.json and logs (SIGKILL)".into()
        } else {
            complete.clone()
        },
        leaked: left.len() + alive.len(),
    });
    check(status.code().is_none(), || {
        format!("shakedown was to die of SIGKILL, but exited {status}")
    })?;
    check(complete == expected, || {
        format!("artifacts of the killed run: {complete}, want exactly {expected:?}")
    })?;
    check(gc.status.success(), || {
        format!("gc failed: {}", String::from_utf8_lossy(&gc.stderr))
    })?;
    check(left.is_empty(), || format!("gc left: {left:?}"))?;
    check(alive.is_empty(), || format!("gc left processes: {alive:?}"))?;
    for v in ["sd-gc-bystander-unlabelled", "sd-gc-bystander-other-run"] {
        check(volumes.iter().any(|x| x == v), || {
            format!("gc removed volume {v}, which was not the run's")
        })?;
    }
    check(
        networks.iter().any(|x| x == "sd-gc-bystander-unlabelled"),
        || "gc removed an unlabelled network".into(),
    )?;
    Ok(())
}

/// Fault 11: a CNI variant whose manifest fails lint for the cluster's version: the cni
/// step fails in seconds naming the finding, later steps are skipped with the reason.
/// The variant lives in a root of its own (weave 2.1.2's manifest for Kubernetes 1.6,
/// claimed for 1.20: a DaemonSet in `extensions/v1beta1`, which 1.16 removed).
fn cni_fails_lint() -> Result<(), Failed> {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir()?;
    let repo = common::root();
    let root = tmp.path().join("root");
    let variant = root.join("cni-variants/broken");
    std::fs::create_dir_all(variant.join("2.1.2"))?;
    std::fs::create_dir_all(root.join("scenarios"))?;
    for shared in ["harness", "fixtures"] {
        std::os::unix::fs::symlink(repo.join(shared), root.join(shared))?;
    }
    std::fs::copy(
        repo.join("cni-variants/weave/2.1.2/weave-daemonset-k8s-1.6.yaml"),
        variant.join("2.1.2/weave-daemonset-k8s-1.6.yaml"),
    )?;
    std::fs::write(
        variant.join("variant.yaml"),
        "name: broken\ndescription: weave 2.1.2's manifest for Kubernetes 1.6, claimed for 1.20 (a fault fixture)\nthird_party: true\napply: manifests\npod_cidr:\n  uses_node_cidrs: false\n  default: 10.32.0.0/12\nready:\n  daemonset: {namespace: kube-system, name: weave-net}\n  node_condition: Ready\nreleases:\n  - kubernetes: {min: \"1.20\", max: \"1.20\"}\n    version: \"2.1.2\"\n    source: a fault fixture\n    manifests: [2.1.2/weave-daemonset-k8s-1.6.yaml]\n    images: [weaveworks/weave-kube:2.1.2, weaveworks/weave-npc:2.1.2]\n",
    )?;
    let file = root.join("scenarios/broken-cni.yaml");
    std::fs::copy(fixture("faults/broken-cni.yaml"), &file)?;
    let art = tmp.path().join("artifacts");
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_shakedown"))
        .arg("--root")
        .arg(&root)
        .arg("scenario")
        .arg(&file)
        .arg("--artifacts")
        .arg(&art)
        .arg("--history")
        .arg(tmp.path().join("history.sqlite"))
        .stdin(Stdio::null())
        .output()?;
    let seconds = t.elapsed().as_secs_f64();
    let id = run_id(&art).unwrap_or_default();
    let complete = artifacts_complete(&art);
    let left = leftovers(&id);
    record(Row {
        fault: "CNI manifest fails lint",
        exit: out.status.code(),
        seconds,
        artifacts: complete.clone(),
        leaked: left.len(),
    });
    check(out.status.code() == Some(1), || {
        format!(
            "exit {}, want 1:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let suite = &common::read_junit(&art.join("junit_docker-broken.xml"))[0];
    let cni = suite.case("cni");
    check(cni.result == "failure", || format!("cni: {}", cni.result))?;
    check(
        cni.text.contains("extensions/v1beta1")
            && cni.text.contains("weave-daemonset-k8s-1.6.yaml"),
        || {
            format!(
                "the cni failure does not name the finding: {} {}",
                cni.message, cni.text
            )
        },
    )?;
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(art.join("summary.json"))?)?;
    let cni_seconds = summary["jobs"][0]["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|st| st["step"] == "cni"))
        .and_then(|st| st["duration"].as_str())
        .and_then(|d| humantime::parse_duration(d).ok())
        .map_or(f64::MAX, |d| d.as_secs_f64());
    check(cni_seconds < 30.0, || {
        format!("the cni step took {cni_seconds:.1}s")
    })?;
    let smoke = suite.case("smoke");
    check(
        smoke.result == "skipped" && !smoke.message.is_empty(),
        || format!("smoke: {} {:?}", smoke.result, smoke.message),
    )?;
    complete_and_clean(&complete, &left)?;
    Ok(())
}

/// One fault's trial.
type FaultFn = fn() -> Result<(), Failed>;

/// Every container, network and volume docker holds with shakedown's label.
fn managed_resources() -> std::collections::BTreeSet<String> {
    let label = "label=io.shakedown.managed=true";
    let mut all = std::collections::BTreeSet::new();
    for (what, args) in [
        (
            "container",
            ["ps", "-a", "--filter", label, "--format", "{{.Names}}"],
        ),
        (
            "network",
            ["network", "ls", "--filter", label, "--format", "{{.Name}}"],
        ),
        (
            "volume",
            ["volume", "ls", "--filter", label, "--format", "{{.Name}}"],
        ),
    ] {
        all.extend(
            common::docker_lines(&args)
                .into_iter()
                .map(|n| format!("docker {what} {n}")),
        );
    }
    all
}

fn main() {
    let args = Arguments::from_args();
    let before = managed_resources();
    let faults: [(&str, FaultFn); 12] = [
        (
            "fault::docker-daemon-not-answering",
            docker_daemon_not_answering,
        ),
        ("fault::node-killed-during-init", node_killed_during_init),
        ("fault::step-ignores-sigterm", step_ignores_sigterm),
        (
            "fault::step-prints-hundreds-of-megabytes",
            step_prints_hundreds_of_megabytes,
        ),
        ("fault::artifacts-disk-full", artifacts_disk_full),
        ("fault::webhook-never-answers", webhook_never_answers),
        ("fault::corrupt-scenario", corrupt_scenario),
        ("fault::sigint-during-join", sigint_during_join),
        (
            "fault::second-sigint-during-teardown",
            second_sigint_during_teardown,
        ),
        ("fault::two-runs-at-once", two_runs_at_once),
        ("fault::cni-fails-lint", cni_fails_lint),
        ("fault::sigkill-then-gc", sigkill_then_gc),
    ];
    let trials = faults
        .into_iter()
        .map(|(name, f)| Trial::test(name, f))
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    let rows = ROWS.lock().unwrap_or_else(|e| e.into_inner());
    if !rows.is_empty() {
        eprintln!(
            "\n{:<32} {:>5} {:>9}  {:<34} {:>6}",
            "fault", "exit", "seconds", "artifacts complete", "leaked"
        );
        for r in rows.iter() {
            eprintln!(
                "{:<32} {:>5} {:>9.1}  {:<34} {:>6}",
                r.fault,
                r.exit.map_or("-".into(), |c| c.to_string()),
                r.seconds,
                r.artifacts,
                r.leaked
            );
        }
    }
    // Across the whole suite: nothing shakedown labels appeared while it ran and stayed.
    // What was there before it began (a person's kept cluster, what a killed session left on
    // a shared daemon) is not the suite's and is only named. Under CI=true anything new that
    // is left fails the suite; elsewhere it is printed.
    let left: Vec<String> = managed_resources()
        .into_iter()
        .filter(|r| !before.contains(r))
        .collect();
    if !before.is_empty() {
        eprintln!(
            "labelled resources present before the suite began (not judged): {}",
            before.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    eprintln!(
        "labelled resources the suite left: {}",
        if left.is_empty() {
            "none".to_string()
        } else {
            left.join(", ")
        }
    );
    if !left.is_empty() && std::env::var("CI").is_ok_and(|v| v == "true") && !args.list {
        eprintln!("CI=true: the fault suite must leave nothing labelled");
        std::process::exit(1);
    }
    conclusion.exit();
}
