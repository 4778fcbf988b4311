//! Trials against real local stand-ins for what a networked machine reaches: a release
//! bucket served from 127.0.0.1 (`shakedown release layout` of this machine's own build,
//! served by Python's http.server) and a registry (Debian's docker-registry, published on
//! 127.0.0.1 and docker's bridge address only). Nothing here contacts another address.

use super::*;
use std::process::{Child, Command, Stdio};

/// One stand-in trial at a time: their setup (a release layout tags images in the host's
/// docker, a registry push) runs outside the cluster lock and must not interleave.
static STANDINS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    STANDINS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A free TCP port on 127.0.0.1 (the kernel picks one; it is released at once).
fn free_port() -> Result<u16, Failed> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn shakedown(args: &[&str]) -> Result<String, Failed> {
    let out = Command::new(env!("CARGO_BIN_EXE_shakedown"))
        .args(args)
        .env("SHAKEDOWN_ROOT", common::root())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    check(out.status.success(), || {
        format!(
            "shakedown {} failed ({}):\n{stdout}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok(stdout)
}

/// A release bucket on 127.0.0.1, removed with its server when dropped.
pub struct Bucket {
    pub url: String,
    pub dir: tempfile::TempDir,
    server: Child,
    log: PathBuf,
}

impl Bucket {
    /// Lays out each version in turn (the last one's `latest-` marker wins, as the newest
    /// build's does on dl.k8s.io) and serves them all.
    pub fn serve_versions(versions: &[&str]) -> Result<Bucket, Failed> {
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("bucket");
        for v in versions {
            shakedown(&[
                "release",
                "layout",
                "--out",
                &out.display().to_string(),
                "--kubernetes",
                v,
            ])?;
        }
        Bucket::serve_dir(dir, out)
    }

    fn serve_dir(dir: tempfile::TempDir, root: PathBuf) -> Result<Bucket, Failed> {
        let port = free_port()?;
        let log = dir.path().join("http.log");
        let python = ["/usr/bin/python3", "python3"]
            .into_iter()
            .find(|p| Command::new(p).arg("--version").output().is_ok())
            .ok_or("no python3 to serve the bucket with (apt-get install python3)")?;
        let server = Command::new(python)
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
            .arg(&root)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let url = format!("http://127.0.0.1:{port}");
        let b = Bucket {
            url,
            dir,
            server,
            log,
        };
        for _ in 0..50 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(b);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Err(format!("the bucket server on {} never listened", b.url).into())
    }

    /// The requests the server logged.
    pub fn requests(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Bucket {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// A registry holding this machine's images under their upstream names; stopped when
/// dropped.
pub struct Registry {
    port: u16,
    pub mirrors: Vec<shakedown::release::mirror::Mirror>,
}

impl Registry {
    pub fn start() -> Result<Registry, Failed> {
        let port = free_port()?;
        let p = port.to_string();
        shakedown(&["registry", "start", "--port", &p])?;
        // Stopped by Drop from here on, whatever fails below.
        let mut reg = Registry {
            port,
            mirrors: Vec::new(),
        };
        let out = shakedown(&["registry", "push", "--port", &p])?;
        let flags = out
            .lines()
            .find_map(|l| l.strip_prefix("use: "))
            .ok_or_else(|| format!("`registry push` printed no mirror flags:\n{out}"))?;
        let mirrors = flags
            .split_whitespace()
            .filter(|w| *w != "--registry-mirror")
            .map(|m| m.parse::<shakedown::release::mirror::Mirror>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        check(out.contains("as k8s.gcr.io/kube-apiserver:v1.20.2"), || {
            format!("the control plane was not pushed:\n{out}")
        })?;
        reg.mirrors = mirrors;
        Ok(reg)
    }

    /// What the registry logged: every pull it served.
    pub fn log(&self) -> String {
        Command::new("docker")
            .args([
                "logs",
                &shakedown::images::registry::container_name(self.port),
            ])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
            })
            .unwrap_or_default()
    }

    /// Whether the registry served a manifest of `repo` (e.g. `kube-apiserver`).
    pub fn served(&self, repo: &str) -> bool {
        Registry::log_served(&self.log(), repo)
    }

    /// Whether a registry log shows a node's containerd pulling `repo`'s manifest.
    fn log_served(log: &str, repo: &str) -> bool {
        let needle = format!("/v2/{repo}/manifests/");
        log.lines().any(|l| {
            l.contains(&needle)
                && l.contains("\"GET ")
                && l.contains(" 200 ")
                && l.contains("containerd/")
        })
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = shakedown(&["registry", "stop", "--port", &self.port.to_string()]);
    }
}

fn step_passed(suite: &common::Suite, steps: &[&str]) -> Result<(), Failed> {
    for step in steps {
        let c = suite.case(step);
        check(c.result == "passed", || {
            format!("{step} did not pass: {} {}", c.result, c.text)
        })?;
    }
    Ok(())
}

/// Runs a stand-in fixture's one job and checks that the cluster came up and smoke passed;
/// returns the job's JUnit suite.
fn run_up_and_smoke(
    fixture: &str,
    job: &str,
    dir: &std::path::Path,
    t: Tweaks,
) -> Result<common::Suite, Failed> {
    let summary = real_run_with(
        &common::root()
            .join("fixtures/scenarios/cluster")
            .join(fixture),
        job,
        dir,
        t,
    )?;
    let junit = dir.join(format!("junit_{}.xml", summary.jobs[0].context));
    let suite = common::read_junit(&junit).remove(0);
    step_passed(
        &suite,
        &["build", "up", "init", "join", "nodes", "cni", "smoke"],
    )?;
    step_passed(&suite, SMOKE)?;
    Ok(suite)
}

const SMOKE: &[&str] = &[
    "smoke/nodes-ready",
    "smoke/pod-on-every-node",
    "smoke/pod-to-pod-across-nodes",
    "smoke/service-clusterip",
    "smoke/pods-in-their-namespace",
];

/// What the one release-mirror run left for its two trials to judge: the artifacts, the
/// JUnit, what the bucket served, and the registry's log (both are gone once it ends).
pub struct MirrorRun {
    pub dir: PathBuf,
    pub suite: common::Suite,
    requests: String,
    registry_log: String,
}

impl MirrorRun {
    fn served(&self, repo: &str) -> bool {
        Registry::log_served(&self.registry_log, repo)
    }
}

/// The one run of `fixtures/scenarios/cluster/release-mirror.yaml` that
/// `release-mirror::release-1.20/docker/bridge` and `skew::release-1.20/docker/bridge` read:
/// a release bucket on 127.0.0.1 holding two versions, v1.20.2 and the same tree stamped
/// v1.20.3-shakedown.1 (the newest, so `latest-1.20` names it). The control plane runs the
/// marker's version from its server tarball; the worker runs v1.20.2, one patch behind, a
/// second version fetched and verified from the same bucket as an upgrade hop's target is;
/// etcd, pause and agnhost come through the registry mirror. Run once, by whichever trial
/// comes first.
pub fn mirror_run() -> Result<&'static MirrorRun, Failed> {
    static RUN: std::sync::OnceLock<Result<MirrorRun, String>> = std::sync::OnceLock::new();
    RUN.get_or_init(|| {
        let run = || -> Result<MirrorRun, Failed> {
            let _one = one_at_a_time();
            let bucket = Bucket::serve_versions(&["v1.20.2", "v1.20.3-shakedown.1"])?;
            let reg = Registry::start()?;
            let dir = trial_dir("release-mirror-release-1.20");
            let suite = run_up_and_smoke(
                "release-mirror.yaml",
                "release-mirror/docker/bridge",
                &dir,
                Tweaks {
                    release_url: Some(bucket.url.clone()),
                    registry_mirrors: reg.mirrors.clone(),
                    ..Default::default()
                },
            )?;
            Ok(MirrorRun {
                dir,
                suite,
                requests: bucket.requests(),
                registry_log: reg.log(),
            })
        };
        run().map_err(|e| format!("the shared release-mirror run failed: {e:?}"))
    })
    .as_ref()
    .map_err(|e| e.clone().into())
}

/// `release-mirror::release-1.20/docker/bridge`: `source: release` with `marker:
/// latest-1.20` against the 127.0.0.1 bucket of [`mirror_run`]: the marker resolves to the
/// newest version, every file is verified by its digest, the control plane comes from the
/// server tarball and the rest through the registry mirror.
pub fn release_mirror() -> Result<(), Failed> {
    let run = mirror_run()?;
    let suite = &run.suite;
    check(
        suite.property("kubernetes.version") == Some("v1.20.3-shakedown.1"),
        || {
            format!(
                "latest-1.20 resolved to {:?}, not v1.20.3-shakedown.1",
                suite.property("kubernetes.version")
            )
        },
    )?;
    let req = &run.requests;
    for path in [
        "/release/latest-1.20.txt",
        "/release/v1.20.3-shakedown.1/bin/linux/amd64/kubeadm.sha512",
        "/release/v1.20.3-shakedown.1/kubernetes-server-linux-amd64.tar.gz.sha512",
        "/release/v1.20.3-shakedown.1/kubernetes-test-linux-amd64.tar.gz.sha512",
        // The worker's version: its binaries, each verified.
        "/release/v1.20.2/bin/linux/amd64/kubeadm.sha512",
        "/release/v1.20.2/bin/linux/amd64/kubelet.sha512",
    ] {
        check(req.contains(&format!("GET {path} ")), || {
            format!("the bucket never served {path}:\n{req}")
        })?;
    }
    let build = std::fs::read_to_string(run.dir.join("jobs/docker-bridge/01-build.log"))?;
    check(build.contains("verifying with SHA-512"), || {
        "the build log does not say which digest verified the files".into()
    })?;
    check(
        build.contains("control-plane images")
            && build.contains("k8s.gcr.io/kube-apiserver:v1.20.3-shakedown.1"),
        || "the control plane was not taken from the server tarball".into(),
    )?;
    // What the server tarball lacks came through the mirror, not from anywhere else.
    for repo in ["etcd", "pause", "e2e-test-images/agnhost"] {
        check(run.served(repo), || {
            format!("the registry never served {repo}:\n{}", run.registry_log)
        })?;
    }
    check(!run.served("kube-apiserver"), || {
        "kube-apiserver was pulled although the server tarball carries it".into()
    })?;
    Ok(())
}

/// `release-mirror::bad-checksum`: the bucket's kubeadm no longer matches its digest files;
/// the build step refuses it with exit 3, naming the file and both digests, and caches
/// nothing.
pub fn bad_checksum() -> Result<(), Failed> {
    let _one = one_at_a_time();
    let root = common::root();
    let dir = tempfile::tempdir()?;
    let bucket_dir = dir.path().join("bucket");
    shakedown(&[
        "release",
        "layout",
        "--out",
        &bucket_dir.display().to_string(),
    ])?;
    let kubeadm = bucket_dir.join("release/v1.20.2/bin/linux/amd64/kubeadm");
    let mut bytes = std::fs::read(&kubeadm)?;
    bytes.extend_from_slice(b"tampered");
    std::fs::write(&kubeadm, bytes)?;
    let bucket = Bucket::serve_dir(dir, bucket_dir)?;
    let cache = tempfile::tempdir()?;
    let art = trial_dir("release-mirror-bad-checksum");
    let summary = real_run_with(
        &root.join("fixtures/scenarios/cluster/release-mirror.yaml"),
        "release-mirror/docker/bridge",
        &art,
        Tweaks {
            release_url: Some(bucket.url.clone()),
            cache_dir: Some(cache.path().to_path_buf()),
            ..Default::default()
        },
    )?;
    let message = build_failure(&summary)?;
    let expected = std::fs::read_to_string(kubeadm_in(&bucket).with_extension("sha512"))?;
    let actual = shakedown::download::file_digest(
        shakedown::release::bucket::DigestKind::Sha512,
        &kubeadm_in(&bucket),
    )?;
    for want in [
        format!("{}/release/v1.20.2/bin/linux/amd64/kubeadm", bucket.url),
        expected.trim().to_string(),
        actual,
    ] {
        check(message.contains(&want), || {
            format!("the failure does not name {want}: {message}")
        })?;
    }
    // Neither the bad file nor a partial download stays in the cache.
    let left: Vec<_> = common::files_under(&cache.path().join("downloads"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("kubeadm"))
        })
        .collect();
    check(left.is_empty(), || format!("left in the cache: {left:?}"))?;
    Ok(())
}

/// The build step's failure message of a run that must have exited 3 there.
fn build_failure(summary: &shakedown::engine::RunSummary) -> Result<String, Failed> {
    check(summary.exit_code == 3, || {
        format!("exit {}, not 3", summary.exit_code)
    })?;
    let build = step_named(&summary.jobs[0].steps, "build")?;
    match &build.outcome {
        StepOutcome::Failed { message, .. } => Ok(message.clone()),
        other => Err(format!("build did not fail: {other:?}").into()),
    }
}

fn kubeadm_in(b: &Bucket) -> PathBuf {
    b.dir
        .path()
        .join("bucket/release/v1.20.2/bin/linux/amd64/kubeadm")
}

/// `release-mirror::unknown-marker`: a marker the bucket does not have fails the build with
/// exit 3, naming the marker file's URL.
pub fn unknown_marker() -> Result<(), Failed> {
    let _one = one_at_a_time();
    let root = common::root();
    let dir = tempfile::tempdir()?;
    let bucket_dir = dir.path().join("bucket/release");
    std::fs::create_dir_all(&bucket_dir)?;
    std::fs::write(bucket_dir.join("stable-1.20.txt"), "v1.20.2\n")?;
    let bucket = Bucket::serve_dir(dir, bucket_dir.parent().unwrap().to_path_buf())?;
    let art = trial_dir("release-mirror-unknown-marker");
    let summary = real_run_with(
        &root.join("fixtures/scenarios/cluster/release-unknown-marker.yaml"),
        "release-unknown-marker/docker/bridge",
        &art,
        Tweaks {
            release_url: Some(bucket.url.clone()),
            ..Default::default()
        },
    )?;
    let message = build_failure(&summary)?;
    let url = format!("{}/release/latest-1.19.txt", bucket.url);
    check(message.contains(&url) && message.contains("404"), || {
        format!("the failure does not name {url} and its 404: {message}")
    })?;
    Ok(())
}

/// `registry::release-1.20/docker/bridge`: nothing preloaded; every image pulled under its
/// upstream name through the local registry.
pub fn registry() -> Result<(), Failed> {
    let _one = one_at_a_time();
    let reg = Registry::start()?;
    let dir = trial_dir("registry-release-1.20");
    let suite = &run_up_and_smoke(
        "registry.yaml",
        "registry/docker/bridge",
        &dir,
        Tweaks {
            registry_mirrors: reg.mirrors.clone(),
            ..Default::default()
        },
    )?;
    let up = std::fs::read_to_string(dir.join("jobs/docker-bridge/02-up.log"))?;
    check(up.contains("no images to preload"), || {
        "images were preloaded into the nodes".into()
    })?;
    for repo in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kube-proxy",
        "etcd",
        "pause",
        "e2e-test-images/agnhost",
    ] {
        check(reg.served(repo), || {
            format!("the registry never served {repo}:\n{}", reg.log())
        })?;
    }
    // CoreDNS has no build here: the mirror lacks it, and the run says so instead of
    // waiting on a pull that cannot succeed.
    let dns = suite.case("smoke/dns-kubernetes-default");
    check(dns.result == "skipped", || {
        format!("dns check: {} {}", dns.result, dns.text)
    })?;
    let build = std::fs::read_to_string(dir.join("jobs/docker-bridge/01-build.log"))?;
    check(build.contains("coredns:1.7.0 is not in the mirror"), || {
        "the build does not say why CoreDNS is skipped".into()
    })?;
    Ok(())
}
