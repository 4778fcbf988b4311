//! The commands outside the engine against the real binary: each has a deadline and stops on
//! Ctrl-C like `scenario` does (exit 3 and 130), the build cache is locked, overrides are
//! validated, and `host setup` never starts a second docker daemon.

mod common;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn shakedown() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shakedown"));
    c.arg("--root").arg(common::root());
    c
}

/// A docker socket that accepts every connection and never answers: a hung daemon.
fn hung_daemon(dir: &Path) -> String {
    let sock = dir.join("hung.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    format!("unix://{}", sock.display())
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn gc_gives_up_at_its_deadline_on_a_hung_daemon() {
    let d = tempfile::tempdir().unwrap();
    let host = hung_daemon(d.path());
    let t = Instant::now();
    let out = shakedown()
        .args(["gc", "--deadline", "2s"])
        .env("DOCKER_HOST", &host)
        .output()
        .unwrap();
    let took = t.elapsed();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(all.contains("deadline of 2s exceeded"), "{all}");
    assert!(all.contains("+ docker ps"), "the command is logged: {all}");
    // 2 s deadline + up to 10 s grace for SIGTERM; a hung daemon must not hold it longer.
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

#[test]
fn gc_stops_on_ctrl_c() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let d = tempfile::tempdir().unwrap();
    let host = hung_daemon(d.path());
    let child = shakedown()
        .args(["gc", "--deadline", "10m"])
        .env("DOCKER_HOST", &host)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let t = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(130), "{all}");
    assert!(all.contains("interrupted by SIGINT"), "{all}");
    assert!(
        t.elapsed() < Duration::from_secs(12),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn image_build_waits_for_the_cache_lock_within_its_deadline() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Another build holds the cache.
    let held = rt
        .block_on(shakedown::paths::CacheLock::acquire(
            &cache,
            &tokio_util::sync::CancellationToken::new(),
            &|_| {},
        ))
        .unwrap();
    let out = shakedown()
        .args(["image", "build", "--deadline", "2s"])
        .env("SHAKEDOWN_CACHE", &cache)
        .output()
        .unwrap();
    drop(held);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(all.contains("waiting for the build cache lock"), "{all}");
    assert!(
        all.contains(&std::process::id().to_string()),
        "names the holder: {all}"
    );
    assert!(all.contains("deadline of 2s exceeded"), "{all}");
    // Nothing was built behind the lock's back.
    assert!(!cache.join("kubernetes").exists());
}

#[test]
fn command_line_overrides_are_validated_like_the_file() {
    let d = tempfile::tempdir().unwrap();
    // release-1.20 retries flaky specs and gives each a deadline: neither fits in-cluster.
    let out = shakedown()
        .args([
            "scenario",
            "release-1.20",
            "--cni",
            "bridge",
            "--dry-run",
            "--conformance-runner",
            "in-cluster",
            "--artifacts",
        ])
        .arg(d.path().join("a"))
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("release-1.20.yaml:"), "names the file: {all}");
    assert!(all.contains("conformance.flake_attempts"), "{all}");
    assert!(all.contains("conformance.spec_deadline"), "{all}");
    assert!(!d.path().join("a/started.json").exists(), "nothing ran");
}

fn pids_of(name: &str) -> Vec<String> {
    let out = Command::new("pgrep").args(["-x", name]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// Needs what `host setup` needs (root, Debian, docker running): true when this machine
/// has it; under CI=true its absence is a failure, not a skip.
fn host_prepared() -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    let docker = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    let ok = root && docker && Path::new("/usr/bin/apt-get").exists();
    if !ok {
        let why = format!("root {root}, docker answers {docker}: run `cargo run -- host setup`");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true, and this test cannot run: {why}");
        }
        eprintln!("skipped: {why}");
    }
    ok
}

#[test]
fn host_setup_never_starts_a_daemon_for_a_docker_host_elsewhere() {
    if !host_prepared() {
        return;
    }
    let log = PathBuf::from("/var/log/shakedown-dockerd.log");
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let (log_before, daemons_before) = (size(&log), pids_of("dockerd"));
    let d = tempfile::tempdir().unwrap();
    let dead = format!("unix://{}", d.path().join("dead.sock").display());
    let t = Instant::now();
    let out = shakedown()
        .args(["host", "setup"])
        .env("DOCKER_HOST", &dead)
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(
        all.contains(&format!("DOCKER_HOST={dead}")),
        "names what it tried: {all}"
    );
    assert_eq!(
        pids_of("dockerd"),
        daemons_before,
        "a second dockerd was started"
    );
    assert!(
        size(&log) >= log_before,
        "the running daemon's log was truncated"
    );
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn the_secret_scan_finds_each_kind_of_secret_and_nothing_redacted() {
    let d = tempfile::tempdir().unwrap();
    let w = |name: &str, text: &str| std::fs::write(d.path().join(name), text).unwrap();
    w("key.pem", "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n");
    w("kc.yaml", "users:\n- user:\n    client-key-data: LS0t\n");
    w(
        "join.yaml",
        "discovery:\n  bootstrapToken:\n    token: \"abcdef.0123456789abcdef\"\n",
    );
    w("sa.log", "Authorization: Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJpc3MiOiJrdWJlcm5ldGVzIn0.sig\n");
    w("admin.conf", "apiVersion: v1\n");
    // What the harness writes instead: nothing to find.
    w(
        "kubeadm-init.yaml",
        "bootstrapTokens:\n- token: \"<redacted>\"\n",
    );
    w(
        "step.log",
        "+ kubeadm join 172.18.0.2:6443 --token <redacted>\n",
    );
    let found = common::secrets_in(d.path());
    let has = |what: &str| found.iter().any(|f| f.contains(what));
    assert!(has("key.pem:1: private key"), "{found:?}");
    assert!(has("kc.yaml:3: kubeconfig client key"), "{found:?}");
    assert!(has("join.yaml:3: token value"), "{found:?}");
    assert!(has("join.yaml:3: bootstrap token"), "{found:?}");
    assert!(has("sa.log:1: ServiceAccount token"), "{found:?}");
    assert!(has("admin.conf: a kubeconfig file"), "{found:?}");
    assert!(!has("kubeadm-init.yaml") && !has("step.log"), "{found:?}");
    assert_eq!(found.len(), 6, "{found:?}");
}

#[test]
fn any_branch_runs_against_an_existing_cluster() {
    let d = tempfile::tempdir().unwrap();
    // Without the cluster's kubeconfig: refused before anything runs.
    let out = shakedown()
        .args([
            "scenario",
            "release-1.20",
            "--provider",
            "existing",
            "--dry-run",
        ])
        .arg("--artifacts")
        .arg(d.path().join("a"))
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("--kubeconfig"), "{all}");

    // With it: one job, and no step that would make a cluster.
    let kubeconfig = d.path().join("someone-elses.conf");
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\n").unwrap();
    let out = shakedown()
        .args([
            "scenario",
            "release-1.20",
            "--provider",
            "existing",
            "--dry-run",
        ])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--artifacts")
        .arg(d.path().join("b"))
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let suites = common::read_junit(&d.path().join("b/junit_existing-bridge.xml"));
    let steps: Vec<String> = suites[0]
        .cases
        .iter()
        .map(|c| c.name.rsplit(' ').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(suites[0].name, "release-1.20/existing/bridge");
    for gone in ["init", "join", "cni", "node-loss"] {
        assert!(!steps.contains(&gone.to_string()), "{gone} in {steps:?}");
    }
    for kept in ["up", "smoke", "conformance", "down"] {
        assert!(
            steps.contains(&kept.to_string()),
            "{kept} missing from {steps:?}"
        );
    }
    assert!(all.contains("attach to the cluster of"), "{all}");
}

#[test]
fn release_1_6_fails_at_the_download_naming_the_url_it_tried() {
    if !host_prepared() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = shakedown()
        .args([
            "scenario",
            "release-1.6",
            "--release-url",
            "http://127.0.0.1:1",
        ])
        .arg("--artifacts")
        .arg(dir.path().join("artifacts"))
        .env("SHAKEDOWN_HISTORY", dir.path().join("history.sqlite"))
        .output()
        .unwrap();
    let took = start.elapsed();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "{t}");
    // v1.6.13 publishes SHA-1 digests only: the first request is the kubeadm one.
    assert!(
        t.contains(
            "failed to download http://127.0.0.1:1/release/v1.6.13/bin/linux/amd64/kubeadm.sha1"
        ),
        "{t}"
    );
    assert!(!t.contains("cannot be downloaded"), "{t}");
    // "In seconds": the host step plus three refused connections, nowhere near a deadline.
    assert!(took < Duration::from_secs(120), "took {took:?}");
    eprintln!("release-1.6 against a dead bucket: exit 3 in {took:.1?}");
}

#[test]
fn fake_kubeadm_folder_gives_its_own_version_and_needs_no_pause_or_agnhost() {
    if !host_prepared() {
        return;
    }
    // A folder with only the node binaries. kubeadm is a stand-in script that answers the
    // two questions the build asks of it; the point is what the harness does with them.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let kubeadm = "#!/bin/sh\ncase \"$*\" in\n  'version -o short') echo v1.20.2 ;;\n  'config images list'*) printf 'k8s.gcr.io/kube-apiserver:v1.20.2\\nk8s.gcr.io/pause:3.2\\nk8s.gcr.io/etcd:3.4.13-0\\nk8s.gcr.io/coredns:1.7.0\\n' ;;\n  *) exit 1 ;;\nesac\n";
    for (name, body) in [
        ("kubeadm", kubeadm),
        ("kubelet", "#!/bin/sh\n"),
        ("kubectl", "#!/bin/sh\n"),
    ] {
        let p = bin.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let out = shakedown()
        .args([
            "image",
            "build",
            "--kubernetes",
            "v1.99.0",
            "--kubernetes-binaries",
        ])
        .arg(&bin)
        .args([
            "--node-image",
            "shakedown.local/node:given",
            "--deadline",
            "2m",
        ])
        .env("SHAKEDOWN_CACHE", dir.path().join("cache"))
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("kubernetes: v1.20.2"),
        "the version is kubeadm's, not the one asked: {t}"
    );
    assert!(t.contains("none: every image is pulled"), "{t}");
    assert!(t.contains("sandbox k8s.gcr.io/pause:3.2"), "{t}");
}
