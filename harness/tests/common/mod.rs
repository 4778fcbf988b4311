//! Helpers shared by the integration tests: the repository root, running a fixture scenario
//! through the real engine, and reading JUnit back.
#![allow(dead_code)]

use shakedown::actions::{RunSettings, Steps};
use shakedown::cni::Catalog;
use shakedown::engine::{RunSummary, Stop};
use shakedown::reporter::{self, Reporter};
use shakedown::run::Run;
use shakedown::{matrix, plan, scenario};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The release bucket tests use unless they serve one: nothing listens there, so a run that
/// would download fails at once instead of reaching dl.k8s.io.
#[allow(dead_code)]
pub const NO_RELEASE_URL: &str = "http://127.0.0.1:1";

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn catalog() -> Catalog {
    Catalog::load(&root().join("cni-variants")).expect("cni-variants load")
}

/// Every reporter a real run has, except the live progress output.
pub fn file_reporters(artifacts: &Path) -> Vec<Box<dyn Reporter>> {
    vec![
        Box::new(reporter::progress::BuildLog::new(artifacts)),
        Box::new(reporter::junit::Junit::new(artifacts)),
        Box::new(reporter::testgrid::Testgrid::new(artifacts)),
        Box::new(reporter::json::JsonSummary::new(artifacts)),
        Box::new(reporter::html::Html::new(artifacts)),
    ]
}

/// Runs a scenario file through the real engine into `artifacts`.
pub async fn run_scenario(path: &Path, artifacts: &Path, dry_run: bool, stop: Stop) -> RunSummary {
    run_scenario_with(path, artifacts, None, dry_run, stop).await
}

/// The same, with planted steps instead of the real actions when `steps` is given.
pub async fn run_scenario_with(
    path: &Path,
    artifacts: &Path,
    steps: Option<Arc<dyn Steps>>,
    dry_run: bool,
    stop: Stop,
) -> RunSummary {
    let catalog = catalog();
    let s = scenario::load(path, &catalog, scenario::today()).expect("fixture scenario is valid");
    let p = plan::build(&s, matrix::expand(&s), None);
    let settings = RunSettings {
        run_id: "test-run".into(),
        root: root(),
        artifacts: artifacts.to_path_buf(),
        cache_dir: artifacts.join("cache"),
        ..Default::default()
    };
    let mut run = Run::new(p, Arc::new(s), Arc::new(catalog), settings)
        .dry_run(dry_run)
        .stop(stop)
        .reporters(file_reporters(artifacts));
    if let Some(steps) = steps {
        run = run.steps(steps);
    }
    run.execute().await
}

pub async fn run_fixture(name: &str, dry_run: bool) -> (RunSummary, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = root()
        .join("fixtures/scenarios/engine")
        .join(format!("{name}.yaml"));
    let s = run_scenario(&path, dir.path(), dry_run, Stop::default()).await;
    (s, dir)
}

#[derive(Debug, Default, Clone)]
pub struct Case {
    pub name: String,
    pub classname: String,
    /// "passed", "failure", "skipped" or "error".
    pub result: String,
    pub message: String,
    pub text: String,
    pub system_out: String,
    /// The testcase's own `<properties>` (e.g. `flaky`).
    pub properties: Vec<(String, String)>,
}

#[derive(Debug, Default, Clone)]
pub struct Suite {
    pub name: String,
    pub tests: usize,
    pub failures: usize,
    pub properties: Vec<(String, String)>,
    pub cases: Vec<Case>,
}

impl Suite {
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn case(&self, suffix: &str) -> &Case {
        self.cases
            .iter()
            .find(|c| c.name.ends_with(&format!(" {suffix}")))
            .unwrap_or_else(|| {
                panic!(
                    "no testcase {suffix} in {:?}",
                    self.cases.iter().map(|c| &c.name).collect::<Vec<_>>()
                )
            })
    }
}

/// Parses a JUnit file the way TestGrid reads it: suites, their properties, and each case's
/// element text.
pub fn read_junit(path: &Path) -> Vec<Suite> {
    use quick_xml::events::Event;
    let xml =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut r = quick_xml::Reader::from_str(&xml);
    let mut suites: Vec<Suite> = Vec::new();
    let mut in_elem: Option<String> = None;
    let mut in_case = false;
    let attr = |e: &quick_xml::events::BytesStart, k: &str| -> String {
        e.attributes()
            .flatten()
            .find(|a| a.key.as_ref() == k.as_bytes())
            .map(|a| a.unescape_value().unwrap().into_owned())
            .unwrap_or_default()
    };
    let new_case = |e: &quick_xml::events::BytesStart| Case {
        name: attr(e, "name"),
        classname: attr(e, "classname"),
        result: "passed".into(),
        ..Default::default()
    };
    loop {
        match r.read_event().expect("well-formed JUnit") {
            Event::Eof => break,
            Event::Start(e) if e.name().as_ref() == b"testcase" => {
                in_case = true;
                suites.last_mut().unwrap().cases.push(new_case(&e));
            }
            Event::End(e) if e.name().as_ref() == b"testcase" => {
                in_case = false;
                in_elem = None;
            }
            Event::Start(e) | Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                match name.as_str() {
                    "testsuite" => suites.push(Suite {
                        name: attr(&e, "name"),
                        tests: attr(&e, "tests").parse().unwrap(),
                        failures: attr(&e, "failures").parse().unwrap(),
                        ..Default::default()
                    }),
                    "property" if in_case => {
                        let c = suites.last_mut().unwrap().cases.last_mut().unwrap();
                        c.properties.push((attr(&e, "name"), attr(&e, "value")));
                    }
                    "property" => {
                        let s = suites.last_mut().unwrap();
                        s.properties.push((attr(&e, "name"), attr(&e, "value")));
                    }
                    "testcase" => suites.last_mut().unwrap().cases.push(new_case(&e)),
                    "failure" | "skipped" | "error" => {
                        let c = suites.last_mut().unwrap().cases.last_mut().unwrap();
                        c.result = name.clone();
                        c.message = attr(&e, "message");
                        in_elem = Some(name);
                    }
                    "system-out" => in_elem = Some(name),
                    _ => {}
                }
            }
            Event::CData(t) => {
                let text = String::from_utf8_lossy(&t).into_owned();
                if let (Some(which), Some(c)) =
                    (&in_elem, suites.last_mut().and_then(|s| s.cases.last_mut()))
                {
                    if which == "system-out" {
                        c.system_out.push_str(&text);
                    } else {
                        c.text.push_str(&text);
                    }
                }
            }
            Event::Text(t) => {
                let text = t.unescape().unwrap().into_owned();
                if let (Some(which), Some(c)) =
                    (&in_elem, suites.last_mut().and_then(|s| s.cases.last_mut()))
                {
                    if which != "system-out" {
                        c.text.push_str(&text);
                    }
                }
            }
            Event::End(_) => in_elem = None,
            _ => {}
        }
    }
    suites
}

/// True if the process still lives after a short grace: SIGKILL is asynchronous, so death is
/// checked for up to two seconds rather than at one instant.
pub fn alive(pid: i32) -> bool {
    let t = std::time::Instant::now();
    while t.elapsed() < std::time::Duration::from_secs(2) {
        if !alive_now(pid) {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    alive_now(pid)
}

/// True while a process with this pid exists (and is not a zombie).
pub fn alive_now(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .split(") ")
            .nth(1)
            .is_some_and(|rest| rest.starts_with('Z')),
        Err(_) => false,
    }
}

pub fn pid(artifacts: &Path, file: &str) -> i32 {
    let p = artifacts.join("pids").join(file);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .parse()
        .unwrap()
}

/// Every place under `dir` that holds something secret: private keys, kubeconfig client
/// keys, `token:` values, bootstrap tokens (`[a-z0-9]{6}.[a-z0-9]{16}`), ServiceAccount
/// JWTs, or a kubeconfig file. Each as `file:line: what` (the secret itself never printed).
pub fn secrets_in(dir: &Path) -> Vec<String> {
    let patterns = [
        ("private key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
        ("kubeconfig client key", r"client-key-data"),
        ("token value", r#"\btoken:\s*"?[A-Za-z0-9._\-]{8,}"#),
        ("bootstrap token", r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b"),
        (
            "ServiceAccount token",
            r"eyJhbGciOi[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}",
        ),
    ];
    let res: Vec<(&str, regex::Regex)> = patterns
        .iter()
        .map(|(w, p)| (*w, regex::Regex::new(p).unwrap()))
        .collect();
    let mut found = Vec::new();
    for p in files_under(dir) {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        if name == "kubeconfig" || name.ends_with("admin.conf") {
            found.push(format!("{}: a kubeconfig file", p.display()));
        }
        let Ok(bytes) = std::fs::read(&p) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        for (n, line) in text.lines().enumerate() {
            for (what, re) in &res {
                if re.is_match(line) {
                    found.push(format!("{}:{}: {what}", p.display(), n + 1));
                }
            }
        }
    }
    found
}

/// Every file under `dir`, at any depth (none when it does not exist).
#[allow(dead_code)]
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Containers, networks and volumes labelled with this run id, in docker and (where it is
/// installed) podman.
pub fn labelled(run_id: &str) -> Vec<String> {
    let f = format!("label=io.shakedown.run={run_id}");
    let mut v = Vec::new();
    for engine in ["docker", "podman"] {
        for (what, args) in [
            (
                "container",
                vec!["ps", "-a", "--filter", &f, "--format", "{{.Names}}"],
            ),
            (
                "network",
                vec!["network", "ls", "--filter", &f, "--format", "{{.Name}}"],
            ),
            ("volume", vec!["volume", "ls", "-q", "--filter", &f]),
        ] {
            let out = std::process::Command::new(engine).args(&args).output();
            let Ok(out) = out else { continue };
            v.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|n| format!("{engine} {what} {n}")),
            );
        }
    }
    // The podman provider's FORWARD rules, marked with the run's cluster names.
    let mark = format!("shakedown:sd-{run_id}-");
    if let Ok(out) = std::process::Command::new("iptables")
        .args(["-S", "FORWARD"])
        .output()
    {
        v.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains(&mark))
                .map(|l| format!("iptables rule {l}")),
        );
    }
    v
}

/// `docker <args>`: its stdout lines, empty when docker fails.
pub fn docker_lines(args: &[&str]) -> Vec<String> {
    std::process::Command::new("docker")
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `f` every 200 ms for at most `limit`.
pub fn wait_for(
    what: &str,
    limit: std::time::Duration,
    mut f: impl FnMut() -> bool,
) -> Result<(), libtest_mimic::Failed> {
    let t = std::time::Instant::now();
    while !f() {
        if t.elapsed() > limit {
            return Err(format!("{what} did not happen within {limit:?}").into());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Ok(())
}
