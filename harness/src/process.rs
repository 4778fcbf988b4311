//! External commands, run the way cargo-nextest runs tests: each in its own process group,
//! stdout and stderr drained continuously into the step log, SIGTERM to the whole group on
//! cancellation, then SIGKILL after a grace period. Nothing the command started outlives it.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// Values that must never reach a log or an artifact (bootstrap tokens, certificate keys):
/// registered once by whoever makes them, then replaced by `<redacted>` wherever this module
/// writes text (step logs, logged command lines, error tails).
static SECRETS: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// The variable every child of a run carries: the run's id, inherited by whatever the child
/// starts in turn. It is how `gc` finds the processes of a run that was SIGKILLed.
pub const RUN_ENV: &str = "SHAKEDOWN_RUN_ID";

/// The run whose children this process starts (see [`tag_children`]).
static RUN_TAG: std::sync::RwLock<Option<String>> = std::sync::RwLock::new(None);

/// Marks every child started from now on with `RUN_ENV=run_id`.
pub fn tag_children(run_id: &str) {
    *RUN_TAG.write().unwrap_or_else(|e| e.into_inner()) = Some(run_id.to_string());
}

/// What stands in for a secret in logs and artifacts.
pub const REDACTED: &str = "<redacted>";

/// Registers a secret value for redaction for the rest of this process.
pub fn add_secret(value: &str) {
    // Short values would redact ordinary text; secrets are long random strings.
    if value.len() < 6 {
        return;
    }
    let mut g = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !g.iter().any(|s| s == value) {
        g.push(value.to_string());
    }
}

/// `text` with every registered secret replaced by [`REDACTED`].
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    let g = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if !g.iter().any(|s| text.contains(s.as_str())) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in g.iter() {
        out = out.replace(s.as_str(), REDACTED);
    }
    std::borrow::Cow::Owned(out)
}

/// A step's log file plus the tail of what went into it.
#[derive(Clone)]
pub struct StepLog {
    inner: Arc<Mutex<LogInner>>,
    path: PathBuf,
}

struct LogInner {
    file: Option<std::fs::File>,
    /// The first write that failed (a full disk): the log is incomplete.
    write_error: Option<std::io::Error>,
    echo: bool,
    written: u64,
    truncated: bool,
    tail: VecDeque<String>,
    partial: String,
}

/// Logs larger than this stop growing (the tail is still kept); 256 MiB logs break viewers.
pub const LOG_CAP: u64 = 64 * 1024 * 1024;
const TAIL_LINES: usize = 40;

impl std::fmt::Debug for StepLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepLog").field("path", &self.path).finish()
    }
}

impl StepLog {
    pub fn create(path: &Path) -> std::io::Result<StepLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::File::create(path)?;
        Ok(StepLog::new(Some(file), false, path))
    }

    /// A log that echoes to stderr and keeps its tail (for commands run outside any step).
    pub fn stderr() -> StepLog {
        StepLog::new(None, true, Path::new(""))
    }

    fn new(file: Option<std::fs::File>, echo: bool, path: &Path) -> StepLog {
        StepLog {
            inner: Arc::new(Mutex::new(LogInner {
                file,
                write_error: None,
                echo,
                written: 0,
                truncated: false,
                tail: VecDeque::new(),
                partial: String::new(),
            })),
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `bytes`, with every registered secret redacted. A failed write is remembered
    /// (see [`StepLog::write_error`]); the tail is still kept in memory.
    pub fn write(&self, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let redacted = redact(&text);
        let bytes: &[u8] = match &redacted {
            std::borrow::Cow::Borrowed(_) => bytes,
            std::borrow::Cow::Owned(s) => s.as_bytes(),
        };
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let g = &mut *g;
        let room = LOG_CAP.saturating_sub(g.written);
        let n = (bytes.len() as u64).min(room) as usize;
        if n > 0 {
            if let Some(f) = g.file.as_mut() {
                if let Err(e) = f.write_all(&bytes[..n]) {
                    g.write_error.get_or_insert(e);
                }
            }
            g.written += n as u64;
        }
        if g.echo {
            let _ = std::io::stderr().write_all(bytes);
        }
        if n < bytes.len() && !g.truncated {
            g.truncated = true;
            if let Some(f) = g.file.as_mut() {
                if let Err(e) = writeln!(f, "\n[shakedown: log truncated at {LOG_CAP} bytes; the tail is kept in the report]") {
                    g.write_error.get_or_insert(e);
                }
            }
        }
        // Tail of complete lines.
        let text = redacted;
        let mut buf = std::mem::take(&mut g.partial);
        buf.push_str(&text);
        let mut lines: Vec<&str> = buf.split('\n').collect();
        let last = lines.pop().unwrap_or("");
        for l in lines {
            g.tail.push_back(truncate_line(l));
            if g.tail.len() > TAIL_LINES {
                g.tail.pop_front();
            }
        }
        g.partial = truncate_line(last);
    }

    /// Ends a log that reached [`LOG_CAP`]: its last lines go after the truncation mark,
    /// so the end of what the step printed is on disk whatever its outcome. Nothing for a
    /// log under the cap.
    pub fn finish(&self) {
        let tail = self.tail();
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let g = &mut *g;
        if !g.truncated {
            return;
        }
        if let Some(f) = g.file.as_mut() {
            if let Err(e) = writeln!(
                f,
                "[shakedown: the last {} lines the step printed:]\n{tail}",
                tail.lines().count()
            ) {
                g.write_error.get_or_insert(e);
            }
        }
    }

    /// The first write to the file that failed, if any: the log on disk is incomplete.
    pub fn write_error(&self) -> Option<String> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.write_error.as_ref().map(|e| e.to_string())
    }

    pub fn line(&self, s: &str) {
        self.write(format!("{s}\n").as_bytes());
    }

    /// The last lines written, for failure messages.
    pub fn tail(&self) -> String {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<&str> = g.tail.iter().map(String::as_str).collect();
        if !g.partial.is_empty() {
            out.push(&g.partial);
        }
        out.join("\n")
    }
}

fn truncate_line(l: &str) -> String {
    const MAX: usize = 2000;
    if l.len() <= MAX {
        l.to_string()
    } else {
        let mut end = MAX;
        while !l.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &l[..end])
    }
}

/// A child of a cancellation token that also cancels itself after a duration: a step's or a
/// spec's deadline. The timer stops when this is stopped or dropped.
pub struct Deadline {
    token: CancellationToken,
    fired: Arc<AtomicBool>,
    timer: tokio::task::JoinHandle<()>,
}

impl Deadline {
    pub fn new(parent: &CancellationToken, after: Duration) -> Deadline {
        let token = parent.child_token();
        let fired = Arc::new(AtomicBool::new(false));
        let timer = {
            let (token, fired) = (token.clone(), fired.clone());
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                // Already cancelled by the parent (Ctrl-C): that, not the deadline, stopped it.
                if !token.is_cancelled() {
                    fired.store(true, Ordering::SeqCst);
                    token.cancel();
                }
            })
        };
        Deadline {
            token,
            fired,
            timer,
        }
    }

    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Set once the deadline itself (not the parent) cancelled the token.
    pub fn fired_flag(&self) -> Arc<AtomicBool> {
        self.fired.clone()
    }

    /// Stops the timer; true when the deadline itself had already cancelled the token.
    pub fn stop(self) -> bool {
        self.timer.abort();
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        self.timer.abort();
    }
}

/// Runs `cmd` synchronously, without a runtime (a cleanup on drop, a probe at plan time):
/// logged as `+ cmd  # why`, its stdin and stderr closed, killed after `limit`. Returns what
/// it printed when `capture` is set (else empty), or None when it could not start or was
/// killed.
pub fn run_blocking(
    cmd: &Cmd,
    log: Option<&StepLog>,
    why: &str,
    limit: Duration,
    capture: bool,
) -> Option<String> {
    let say = |line: String| match log {
        Some(l) => l.line(&line),
        None => eprintln!("{line}"),
    };
    say(format!("+ {cmd}  # {why}"));
    let child = std::process::Command::new(&cmd.program)
        .args(&cmd.args)
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(if capture {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stderr(std::process::Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return None };
    let t = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => {
                let mut out = String::new();
                if let Some(mut p) = child.stdout.take() {
                    let _ = std::io::Read::read_to_string(&mut p, &mut out);
                }
                return Some(out);
            }
            Err(_) => return None,
            Ok(None) if t.elapsed() >= limit => {
                let _ = child.kill();
                let _ = child.wait();
                say(format!(
                    "[shakedown: `{cmd}` did not finish within {limit:?}; killed]"
                ));
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Where `program` is on PATH, if it is.
pub fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub stdin: Option<Vec<u8>>,
    /// Keep stdout in memory (up to 16 MiB) for the caller to parse.
    pub capture: bool,
    /// stdout holds secrets (a kubeconfig, a key): captured for the caller, never logged.
    pub secret_stdout: bool,
}

impl Cmd {
    pub fn new(program: impl Into<String>) -> Cmd {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            stdin: None,
            capture: false,
            secret_stdout: false,
        }
    }
    pub fn arg(mut self, a: impl Into<String>) -> Cmd {
        self.args.push(a.into());
        self
    }
    pub fn args<I, S>(mut self, a: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Cmd {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn cwd(mut self, d: impl Into<PathBuf>) -> Cmd {
        self.cwd = Some(d.into());
        self
    }
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(data.into());
        self
    }
    pub fn capture(mut self) -> Cmd {
        self.capture = true;
        self
    }
    /// Captures stdout for the caller and keeps it out of the log and out of errors: for
    /// commands that print a kubeconfig or a key.
    pub fn secret_stdout(mut self) -> Cmd {
        self.capture = true;
        self.secret_stdout = true;
        self
    }
}

impl fmt::Display for Cmd {
    /// `cmd args`, with arguments quoted when they hold spaces, as cross logs them, and
    /// registered secrets shown as `<redacted>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for a in &self.args {
            let a = redact(a);
            if a.is_empty() || a.contains([' ', '\t', '\n', '"', '\'', '$', '*']) {
                write!(f, " '{}'", a.replace('\'', r"'\''"))?;
            } else {
                write!(f, " {a}")?;
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    /// The last lines of stderr.
    pub stderr: String,
}

/// A failed command, carrying everything needed to understand it.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("failed to start `{cmd}`: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{cmd}` failed with {status}\n--- stdout (tail) ---\n{stdout}\n--- stderr (tail) ---\n{stderr}")]
    Failed {
        cmd: String,
        status: ExitStatus,
        stdout: String,
        stderr: String,
    },
    #[error("`{cmd}` was stopped ({how}) after {elapsed:?}")]
    Stopped {
        cmd: String,
        how: &'static str,
        elapsed: Duration,
    },
}

impl CommandError {
    /// The command's stderr tail, for diagnosis.
    pub fn stderr(&self) -> &str {
        match self {
            CommandError::Failed { stderr, .. } => stderr,
            _ => "",
        }
    }

    /// The command died of SIGKILL, directly or as reported by `docker exec` (137), or its
    /// runtime lost the container (255): what a node pulled out from under it looks like.
    pub fn looks_killed(&self) -> bool {
        use std::os::unix::process::ExitStatusExt;
        match self {
            CommandError::Failed { status, .. } => {
                status.signal() == Some(9) || matches!(status.code(), Some(137) | Some(255))
            }
            _ => false,
        }
    }
}

/// The fields of a `/proc/<pid>/stat` file after the command: state, ppid, pgrp, ... (the
/// command may hold spaces and parens, so the split is after the last `)`).
fn stat_fields(stat_file: &Path) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(stat_file).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Whether a process is alive: not gone, not a zombie waiting to be reaped.
pub fn alive(pid: i32) -> bool {
    stat_fields(Path::new(&format!("/proc/{pid}/stat")))
        .is_some_and(|f| f.first().is_some_and(|st| st != "Z" && st != "X"))
}

/// The parent of `pid`.
fn parent_of(pid: i32) -> Option<i32> {
    stat_fields(Path::new(&format!("/proc/{pid}/stat")))?
        .get(1)?
        .parse()
        .ok()
}

/// This user's live processes that carry [`RUN_ENV`] (equal to `run_id` when given): what a
/// killed run's steps left running. Never this process nor one of its ancestors.
pub fn run_processes(run_id: Option<&str>) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let me = std::process::id() as i32;
    let mut spared = vec![me];
    let mut p = me;
    while let Some(parent) = parent_of(p).filter(|&q| q > 1) {
        spared.push(parent);
        p = parent;
    }
    let uid = nix::unistd::Uid::effective().as_raw();
    let prefix = format!("{RUN_ENV}=");
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if spared.contains(&pid) || e.metadata().map_or(true, |m| m.uid() != uid) {
            continue;
        }
        // A process that is gone, or a zombie, has no environment left to read.
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let tagged = env.split(|&b| b == 0).any(|var| {
            std::str::from_utf8(var)
                .ok()
                .and_then(|v| v.strip_prefix(&prefix))
                .is_some_and(|id| run_id.is_none_or(|want| want == id))
        });
        if tagged {
            found.push(pid);
        }
    }
    found
}

/// Stops [`run_processes`]: SIGTERM, up to `grace` for them to go, then SIGKILL. Returns the
/// pids it found.
pub async fn stop_run_processes(run_id: Option<&str>, grace: Duration) -> Vec<i32> {
    use nix::sys::signal::kill;
    let pids = run_processes(run_id);
    for &p in &pids {
        let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
    }
    let t = std::time::Instant::now();
    while t.elapsed() < grace && pids.iter().any(|&p| alive(p)) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for p in pids.iter().filter(|&&p| alive(p)) {
        let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
    }
    pids
}

/// Stops one process without a runtime (a cleanup on drop): SIGTERM, then SIGKILL when it
/// is still alive after `grace`.
pub fn terminate(pid: i32, grace: Duration) {
    use nix::sys::signal::kill;
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let t = std::time::Instant::now();
    while t.elapsed() < grace && alive(pid) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(pid) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Kills the whole process group when dropped, unless disarmed after a clean exit and
/// cleanup. Covers every early return and a dropped future.
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    fn signal(&self, sig: Signal) {
        if let Some(p) = self.pgid {
            // ESRCH (group already gone) is the normal case after cleanup.
            let _ = killpg(p, sig);
        }
    }
}

impl GroupGuard {
    /// Waits (bounded) until no live process is left in the group: SIGKILL is delivered
    /// asynchronously, so a step only ends once its processes are really gone.
    async fn wait_gone(&self, limit: Duration) {
        let Some(p) = self.pgid else { return };
        let t = std::time::Instant::now();
        while t.elapsed() < limit && group_has_live_member(p) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// True while a process of group `pgid` exists that is not a zombie.
fn group_has_live_member(pgid: Pid) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        stat_fields(&e.path().join("stat")).is_some_and(|f| {
            f.len() > 2 && f[0] != "Z" && f[0] != "X" && f[2] == pgid.as_raw().to_string()
        })
    })
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// How long to wait for output pipes after the leader exits before the group's leftovers are
/// killed (a leaked background process would otherwise hold the pipes open forever).
const LEAK_WAIT: Duration = Duration::from_millis(200);

/// Runs `cmd`, logging `+ cmd args` first and every byte of output into `log`.
/// On `cancel`: SIGTERM to the process group, then SIGKILL after `grace`.
pub async fn run(
    cmd: &Cmd,
    log: &StepLog,
    cancel: &CancellationToken,
    grace: Duration,
) -> Result<Output, CommandError> {
    let shown = cmd.to_string();
    log.line(&format!("+ {shown}"));
    tracing::debug!(target: "shakedown::cmd", "+ {shown}");
    let started = std::time::Instant::now();

    let mut c = Command::new(&cmd.program);
    if let Some(tag) = RUN_TAG.read().unwrap_or_else(|e| e.into_inner()).as_deref() {
        c.env(RUN_ENV, tag);
    }
    c.args(&cmd.args)
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .stdin(if cmd.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(d) = &cmd.cwd {
        c.current_dir(d);
    }
    let mut child = c.spawn().map_err(|source| CommandError::Spawn {
        cmd: shown.clone(),
        source,
    })?;
    let guard = GroupGuard {
        pgid: child.id().map(|id| Pid::from_raw(id as i32)),
    };

    if let (Some(data), Some(mut stdin)) = (cmd.stdin.clone(), child.stdin.take()) {
        tokio::spawn(async move {
            let _ = stdin.write_all(&data).await;
        });
    }
    let out_sink = if cmd.secret_stdout {
        Sink::Withheld
    } else {
        Sink::Log(log.clone())
    };
    let out_task = tokio::spawn(drain(child.stdout.take(), out_sink, cmd.capture));
    let err_task = tokio::spawn(drain(child.stderr.take(), Sink::Log(log.clone()), true));

    let mut stopped: Option<&'static str> = None;
    let status = tokio::select! {
        s = child.wait() => s,
        _ = cancel.cancelled() => {
            guard.signal(Signal::SIGTERM);
            log.line(&format!("[shakedown: SIGTERM sent to process group of `{shown}`]"));
            match tokio::time::timeout(grace, child.wait()).await {
                Ok(s) => { stopped = Some("SIGTERM"); s }
                Err(_) => {
                    guard.signal(Signal::SIGKILL);
                    log.line(&format!("[shakedown: still running {grace:?} after SIGTERM; SIGKILL sent]"));
                    stopped = Some("SIGKILL after grace period");
                    child.wait().await
                }
            }
        }
    };

    // Give the pipes a moment to close, then remove anything the command left behind.
    let drains = async {
        let o = out_task.await.unwrap_or_default();
        let e = err_task.await.unwrap_or_default();
        (o, e)
    };
    tokio::pin!(drains);
    let (stdout, stderr) = match tokio::time::timeout(LEAK_WAIT, &mut drains).await {
        Ok(v) => {
            guard.signal(Signal::SIGKILL);
            v
        }
        Err(_) => {
            guard.signal(Signal::SIGKILL);
            log.line(&format!(
                "[shakedown: `{shown}` left processes holding its output; killed them]"
            ));
            tokio::time::timeout(Duration::from_secs(5), &mut drains)
                .await
                .unwrap_or_default()
        }
    };
    guard.wait_gone(Duration::from_secs(2)).await;
    drop(guard);
    if cmd.secret_stdout {
        log.line(&format!(
            "[shakedown: {} bytes of stdout kept out of this log: they hold secrets]",
            stdout.len()
        ));
    }

    let status = status.map_err(|source| CommandError::Spawn {
        cmd: shown.clone(),
        source,
    })?;
    if let Some(how) = stopped {
        return Err(CommandError::Stopped {
            cmd: shown,
            how,
            elapsed: started.elapsed(),
        });
    }
    if !status.success() {
        let stdout = if cmd.secret_stdout {
            format!("[{} bytes withheld: they hold secrets]", stdout.len())
        } else {
            redact(&last_lines(&stdout, 20)).into_owned()
        };
        return Err(CommandError::Failed {
            cmd: shown,
            status,
            stdout,
            stderr: redact(&last_lines(&stderr, 20)).into_owned(),
        });
    }
    Ok(Output {
        status,
        stdout,
        stderr: last_lines(&stderr, 20),
    })
}

const CAPTURE_CAP: usize = 16 * 1024 * 1024;

/// Where a pipe's bytes go besides the capture.
enum Sink {
    Log(StepLog),
    /// Secret output: the log only says how much was withheld.
    Withheld,
}

/// Copies a pipe into the log until EOF, whole lines at a time (so a secret split across two
/// reads is still redacted); returns what it captured (bounded).
async fn drain<R: AsyncRead + Unpin>(pipe: Option<R>, sink: Sink, capture: bool) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let mut kept = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Sink::Log(log) = &sink {
                    pending.extend_from_slice(&buf[..n]);
                    // Up to the last newline; a line longer than the buffer goes as it is.
                    let cut = match pending.iter().rposition(|&b| b == b'\n') {
                        Some(i) => i + 1,
                        None if pending.len() > 1024 * 1024 => pending.len(),
                        None => 0,
                    };
                    if cut > 0 {
                        log.write(&pending[..cut]);
                        pending.drain(..cut);
                    }
                }
                if capture {
                    if kept.len() + n > CAPTURE_CAP {
                        // Keep the end: the last output explains a failure best.
                        let drop_n = (kept.len() + n - CAPTURE_CAP).min(kept.len());
                        kept.drain(..drop_n);
                    }
                    kept.extend_from_slice(&buf[..n]);
                }
            }
        }
    }
    if let Sink::Log(log) = &sink {
        if !pending.is_empty() {
            log.write(&pending);
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

pub fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs commands under one log, cancellation token and grace period: what a step hands to
/// library code that does not know about steps.
#[derive(Clone)]
pub struct Runner {
    pub log: StepLog,
    pub cancel: CancellationToken,
    pub grace: Duration,
}

impl Runner {
    pub async fn run(&self, cmd: Cmd) -> Result<Output, CommandError> {
        run(&cmd, &self.log, &self.cancel, self.grace).await
    }

    /// Runs and returns stdout, trimmed.
    pub async fn output(&self, cmd: Cmd) -> Result<String, CommandError> {
        Ok(run(&cmd.capture(), &self.log, &self.cancel, self.grace)
            .await?
            .stdout
            .trim()
            .to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gc_finds_a_runs_processes_by_their_tag_and_only_those() {
        use std::os::unix::process::ExitStatusExt;
        let id = format!("test-{}-{}", std::process::id(), line!());
        let spawn = |tag: &str| {
            std::process::Command::new("sleep")
                .arg("60")
                .env(RUN_ENV, tag)
                .spawn()
                .unwrap()
        };
        let mut ours = spawn(&id);
        let mut other = spawn(&format!("{id}-other"));
        // The environment is readable once exec has happened.
        let t = std::time::Instant::now();
        while !run_processes(Some(&id)).contains(&(ours.id() as i32))
            && t.elapsed() < Duration::from_secs(5)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stopped = stop_run_processes(Some(&id), Duration::from_secs(2)).await;
        let other_seen = run_processes(Some(&format!("{id}-other")));
        let _ = other.kill();
        let _ = other.wait();
        assert_eq!(stopped, vec![ours.id() as i32]);
        assert_eq!(ours.wait().unwrap().signal(), Some(libc_sigterm()));
        assert_eq!(other_seen, vec![other.id() as i32]);
        // This process and its ancestors are never candidates, tagged or not.
        assert!(!run_processes(None).contains(&(std::process::id() as i32)));
    }

    fn libc_sigterm() -> i32 {
        Signal::SIGTERM as i32
    }

    #[test]
    fn a_kill_is_told_apart_from_an_ordinary_failure() {
        use std::os::unix::process::ExitStatusExt;
        let failed = |raw: i32| CommandError::Failed {
            cmd: "docker exec n kubeadm init".into(),
            status: ExitStatus::from_raw(raw),
            stdout: String::new(),
            stderr: String::new(),
        };
        assert!(failed(137 << 8).looks_killed(), "docker exec reports 137");
        assert!(
            failed(255 << 8).looks_killed(),
            "the runtime lost the container"
        );
        assert!(failed(9).looks_killed(), "SIGKILL itself");
        assert!(!failed(1 << 8).looks_killed(), "kubeadm's own failure");
        assert!(!failed(15).looks_killed(), "SIGTERM is a stop, not a kill");
    }

    #[tokio::test]
    async fn a_deadline_cancels_its_token_and_says_so() {
        let parent = CancellationToken::new();
        let d = Deadline::new(&parent, Duration::from_millis(20));
        d.token().cancelled().await;
        assert!(!parent.is_cancelled(), "only the child is cancelled");
        assert!(d.stop(), "the deadline fired");

        // Cancelled by its parent first: not the deadline's doing.
        let parent = CancellationToken::new();
        let d = Deadline::new(&parent, Duration::from_millis(20));
        parent.cancel();
        assert!(d.token().is_cancelled());
        assert!(!d.stop());

        // A stopped deadline never fires later.
        let d = Deadline::new(&CancellationToken::new(), Duration::from_millis(20));
        let token = d.token().clone();
        assert!(!d.stop());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!token.is_cancelled());
    }

    #[tokio::test]
    async fn secrets_never_reach_the_log_the_command_line_or_the_error() {
        let d = tempfile::tempdir().unwrap();
        let log = StepLog::create(&d.path().join("step.log")).unwrap();
        let token = "abcdef.0123456789abcdef";
        add_secret(token);
        let cancel = CancellationToken::new();
        // On the command line, in stdout, and in stderr of a failing command.
        let cmd = Cmd::new("sh").args([
            "-c",
            &format!("echo join --token {token}; echo {token} >&2; exit 3"),
            token,
        ]);
        let e = run(&cmd, &log, &cancel, Duration::from_secs(1))
            .await
            .unwrap_err();
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert!(!text.contains(token), "{text}");
        assert!(text.contains("--token <redacted>"), "{text}");
        assert!(!e.to_string().contains(token), "{e}");
        assert!(!log.tail().contains(token));
        assert!(!cmd.to_string().contains(token));
    }

    #[tokio::test]
    async fn a_secret_split_across_two_reads_is_still_redacted() {
        let d = tempfile::tempdir().unwrap();
        let log = StepLog::create(&d.path().join("step.log")).unwrap();
        let secret = "split-secret-0123456789";
        add_secret(secret);
        // Two writes with a pause between them: two reads of the pipe.
        let cmd = Cmd::new("sh").args(["-c", "printf split-secr; sleep 0.3; echo et-0123456789"]);
        run(
            &cmd,
            &log,
            &CancellationToken::new(),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert!(!text.contains(secret) && text.contains(REDACTED), "{text}");
    }

    #[tokio::test]
    async fn secret_stdout_is_captured_but_not_logged() {
        let d = tempfile::tempdir().unwrap();
        let log = StepLog::create(&d.path().join("step.log")).unwrap();
        let r = Runner {
            log: log.clone(),
            cancel: CancellationToken::new(),
            grace: Duration::from_secs(1),
        };
        let key = "client-key-data: LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVk";
        let out = r
            .output(Cmd::new("echo").arg(key).secret_stdout())
            .await
            .unwrap();
        assert_eq!(out, key, "the caller gets stdout");
        let text = std::fs::read_to_string(log.path()).unwrap();
        // The command line itself is logged; its output is not.
        assert_eq!(text.matches("client-key-data").count(), 1, "{text}");
        assert!(text.contains("kept out of this log"), "{text}");
    }

    #[test]
    fn a_failed_log_write_is_remembered() {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let log = StepLog::new(Some(full), false, Path::new("/dev/full"));
        assert!(log.write_error().is_none());
        log.line("no room for this");
        let e = log.write_error().expect("ENOSPC is remembered");
        assert!(e.contains("No space left"), "{e}");
        assert_eq!(log.tail(), "no room for this");
    }
}
