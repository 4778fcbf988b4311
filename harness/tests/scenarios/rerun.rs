//! `rerun::` and `report::`: `--rerun-failed` through the binary on real clusters, and the
//! `report.html` of those runs rendered by a real browser.
//!
//! One shared sequence (`fixtures/scenarios/cluster/rerun.yaml`, one control plane that takes
//! pods): a first run whose two specs fail their 2 s spec deadline (exit 1); a re-run of its
//! artifacts with a copy of the scenario whose deadline is 10m and whose focus selects a third
//! spec too (exit 0); a re-run of that passing run (nothing to do).

use super::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Runs {
    first: PathBuf,
    again: PathBuf,
    first_id: String,
    again_out: Output,
    nothing: PathBuf,
    nothing_out: Output,
    history: PathBuf,
}

/// The specs of the fixture, and the one the fixed copy adds.
const THIRD: &str = "[k8s.io] Variable Expansion should allow composing env vars into new env vars [NodeConformance] [Conformance]";

fn shakedown(args: &[&std::ffi::OsStr]) -> Result<Output, Failed> {
    let root = common::root();
    let shown: Vec<String> = args.iter().map(|a| a.to_string_lossy().into()).collect();
    eprintln!("  + shakedown {}", shown.join(" "));
    Ok(Command::new(env!("CARGO_BIN_EXE_shakedown"))
        .arg("--root")
        .arg(&root)
        .args(args)
        .output()?)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn runs() -> Result<&'static Runs, Failed> {
    static RUNS: std::sync::OnceLock<Result<Runs, String>> = std::sync::OnceLock::new();
    RUNS.get_or_init(|| make().map_err(|e| format!("the shared re-run sequence failed: {e:?}")))
        .as_ref()
        .map_err(|e| e.clone().into())
}

fn make() -> Result<Runs, Failed> {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = trial_dir("rerun");
    std::fs::create_dir_all(&dir)?;
    let history = dir.join("history.sqlite");
    let fixture = common::root().join("fixtures/scenarios/cluster/rerun.yaml");
    let url = common::NO_RELEASE_URL;
    let first = dir.join("first");
    let out = shakedown(&[
        "scenario".as_ref(),
        fixture.as_os_str(),
        "--artifacts".as_ref(),
        first.as_os_str(),
        "--history".as_ref(),
        history.as_os_str(),
        "--release-url".as_ref(),
        url.as_ref(),
    ])?;
    check(out.status.code() == Some(1), || {
        format!(
            "the first run should fail its specs (exit 1), got {:?}:\n{}",
            out.status.code(),
            text(&out)
        )
    })?;
    let first_id = json(&first)?["run_id"]
        .as_str()
        .ok_or("no run_id in the first summary")?
        .to_string();

    // What a user does next: fix the deadline (and, here, widen the focus).
    let original = std::fs::read_to_string(&fixture)?;
    let fixed = original
        .replace("spec_deadline: 2s", "spec_deadline: 10m")
        .replace(
            "focus: substituting",
            "focus: composing env vars into new env vars|substituting",
        );
    check(
        fixed.matches("10m").count() > original.matches("10m").count(),
        || "the fixture's spec_deadline line changed; update the trial".into(),
    )?;
    // The same file name: a scenario's branch must match it.
    std::fs::create_dir_all(dir.join("fixed"))?;
    let fixed_file = dir.join("fixed/rerun.yaml");
    std::fs::write(&fixed_file, fixed)?;
    let again = dir.join("again");
    let again_out = shakedown(&[
        "scenario".as_ref(),
        fixed_file.as_os_str(),
        "--rerun-failed".as_ref(),
        first.as_os_str(),
        "--artifacts".as_ref(),
        again.as_os_str(),
        "--history".as_ref(),
        history.as_os_str(),
        "--release-url".as_ref(),
        url.as_ref(),
    ])?;
    let nothing = dir.join("nothing");
    let nothing_out = shakedown(&[
        "scenario".as_ref(),
        fixed_file.as_os_str(),
        "--rerun-failed".as_ref(),
        again.as_os_str(),
        "--artifacts".as_ref(),
        nothing.as_os_str(),
        "--history".as_ref(),
        history.as_os_str(),
        "--release-url".as_ref(),
        url.as_ref(),
    ])?;
    Ok(Runs {
        first,
        again,
        first_id,
        again_out,
        nothing,
        nothing_out,
        history,
    })
}

fn json(dir: &Path) -> Result<serde_json::Value, Failed> {
    let p = dir.join("summary.json");
    Ok(serde_json::from_str(
        &std::fs::read_to_string(&p).map_err(|e| format!("read {}: {e}", p.display()))?,
    )?)
}

/// The conformance step's specs: (name, outcome, message or reason, flaky).
fn specs(summary: &serde_json::Value) -> Vec<(String, String, String, Option<String>)> {
    let steps = summary["jobs"][0]["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let conf = steps.iter().find(|s| s["step"] == "conformance");
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    conf.and_then(|c| c["subtests"].as_array())
        .map(|subs| {
            subs.iter()
                .map(|t| {
                    (
                        s(&t["name"]),
                        s(&t["outcome"]),
                        format!("{}{}", s(&t["message"]), s(&t["reason"])),
                        t["flaky"].as_str().map(String::from),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `rerun::release-1.20/docker/bridge`: the first run's two specs fail at their 2 s spec
/// deadline. `--rerun-failed` of its artifacts, with the deadline fixed and a third spec in
/// the focus, runs exactly those two on a fresh cluster: both pass and are flaky (JUnit
/// property, summary line, `shakedown history`'s flaky specs). A re-run of that passing run
/// has nothing to do, says so, exits 0 and brings up nothing.
pub fn rerun() -> Result<(), Failed> {
    let r = runs()?;
    let first = specs(&json(&r.first)?);
    let failed: Vec<&str> = first
        .iter()
        .filter(|s| s.1 == "failed")
        .map(|s| s.0.as_str())
        .collect();
    check(failed.len() == 2 && first.len() == 2, || {
        format!("the first run should fail both specs: {first:?}")
    })?;
    check(
        first
            .iter()
            .all(|s| s.2.contains("spec deadline of 2s exceeded")),
        || format!("the first run failed for another reason than its deadline: {first:?}"),
    )?;

    let out = text(&r.again_out);
    check(r.again_out.status.success(), || {
        format!("the re-run failed: {out}")
    })?;
    check(
        out.contains(&format!(
            "re-run of run {}: rerun/docker/bridge: 2 failed, 0 without a result",
            r.first_id
        )),
        || format!("the re-run did not say what it re-runs: {out}"),
    )?;
    let again = json(&r.again)?;
    check(
        again["jobs"][0]["steps"][0]["job"] == "rerun/docker/bridge",
        || format!("the re-run ran another job: {}", again["jobs"][0]["name"]),
    )?;
    let again_specs = specs(&again);
    let mut ran: Vec<&str> = again_specs.iter().map(|s| s.0.as_str()).collect();
    ran.sort();
    let mut want = failed.clone();
    want.sort();
    check(ran == want, || {
        format!("the re-run ran {ran:?}, not exactly the failed {want:?}")
    })?;
    check(!ran.contains(&THIRD), || "the third spec ran".into())?;
    let flaky_why = format!("failed in run {}, passed on re-run", r.first_id);
    for (name, outcome, _, flaky) in &again_specs {
        check(outcome == "passed", || format!("{name}: {outcome}"))?;
        check(flaky.as_deref() == Some(flaky_why.as_str()), || {
            format!("{name} is not reported flaky: {flaky:?}")
        })?;
        check(
            out.contains(&format!("flaky: {name} ({flaky_why})")),
            || format!("no summary line for flaky {name}: {out}"),
        )?;
    }
    // The focus selected three specs; the re-run kept the two.
    let log = std::fs::read_to_string(r.again.join("jobs/docker-bridge/05-conformance.log"))?;
    check(
        log.contains("3 spec(s) selected")
            && log.contains(&format!(
                "re-run of run {}: 2 spec(s) that failed or had no result there",
                r.first_id
            )),
        || "the conformance log does not show 3 selected, 2 re-run".into(),
    )?;
    let suite = &common::read_junit(&r.again.join("junit_docker-bridge.xml"))[0];
    check(suite.property("conformance.flaky") == Some("2"), || {
        format!(
            "conformance.flaky = {:?}",
            suite.property("conformance.flaky")
        )
    })?;
    check(
        suite.property("conformance.rerun-of") == Some(r.first_id.as_str()),
        || "no conformance.rerun-of property".into(),
    )?;
    for name in &want {
        let c = suite.case(&format!("conformance/{name}"));
        check(
            c.result == "passed"
                && c.properties
                    .iter()
                    .any(|(k, v)| k == "flaky" && *v == flaky_why),
            || format!("{name}'s testcase: {} {:?}", c.result, c.properties),
        )?;
    }
    // The history's flaky specs table has both.
    let h = Command::new(env!("CARGO_BIN_EXE_shakedown"))
        .args(["history", "--history"])
        .arg(&r.history)
        .output()?;
    let h = text(&h);
    let table = &h[h.find("flaky specs").ok_or("no flaky specs table")?..];
    for name in &want {
        check(
            table.contains(&format!(
                "{name}: 1 failed run(s), 1 passed, flaky 1 time(s)"
            )),
            || format!("{name} is not in the flaky specs table:\n{table}"),
        )?;
    }
    let nothing = text(&r.nothing_out);
    check(
        r.nothing_out.status.success() && nothing.contains("nothing to re-run"),
        || format!("re-running a passed run: {nothing}"),
    )?;
    check(!r.nothing.exists(), || {
        "re-running a passed run made an artifacts folder".into()
    })?;
    for dir in [&r.first, &r.again] {
        let found = common::secrets_in(dir);
        check(found.is_empty(), || {
            format!("secrets in the artifacts:\n{}", found.join("\n"))
        })?;
    }
    eprintln!(
        "  first run: {} failed at the spec deadline; re-run: {} passed, flaky, the third spec not run",
        failed.len(),
        again_specs.len()
    );
    Ok(())
}

/// Chromium's flags: headless, and no network of its own (no background services, no
/// component updates): the page is a local file.
const QUIET: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
];

fn chromium(extra: &[String], url: &str) -> Result<Output, Failed> {
    eprintln!("  + chromium {} {} {url}", QUIET.join(" "), extra.join(" "));
    let out = Command::new("chromium")
        .args(QUIET)
        .args(extra)
        .arg(url)
        .output()?;
    check(out.status.success(), || {
        format!("chromium failed: {}", text(&out))
    })?;
    Ok(out)
}

/// The page's DOM as chromium parsed it (kept beside it as `.dom.html`), and a screenshot
/// (`.png`) of more than a blank page's size.
fn render(page: &Path) -> Result<String, Failed> {
    let url = format!("file://{}", page.display());
    let dom = String::from_utf8(chromium(&["--dump-dom".into()], &url)?.stdout)?;
    std::fs::write(page.with_extension("dom.html"), &dom)?;
    let shot = page.with_extension("png");
    chromium(
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,1600".into(),
        ],
        &url,
    )?;
    let png = std::fs::read(&shot)?;
    check(png.starts_with(b"\x89PNG") && png.len() > 10_000, || {
        format!(
            "{} is not a rendered page ({} bytes)",
            shot.display(),
            png.len()
        )
    })?;
    Ok(dom)
}

/// `report::chromium`: Debian's chromium, headless, renders the `report.html` of both
/// re-run trial runs. The DOM has a timeline row and bar per step with the step's outcome,
/// the failed specs first (before the step table) with their failure text, the flaky
/// specs with their reason, and the spec counts; a screenshot of each is kept.
pub fn report() -> Result<(), Failed> {
    let r = runs()?;
    for (dir, which) in [(&r.first, "first"), (&r.again, "again")] {
        let summary = json(dir)?;
        let dom = render(&dir.join("report.html"))?;
        let steps = summary["jobs"][0]["steps"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        check(
            dom.contains(r#"<table class="timeline" data-job="rerun/docker/bridge""#),
            || format!("{which}: no timeline table in the DOM"),
        )?;
        check(
            dom.matches(r#"<tr class="step""#).count() == steps.len(),
            || format!("{which}: the timeline does not have one row per step"),
        )?;
        for st in &steps {
            let (name, outcome) = (
                st["step"].as_str().unwrap_or_default(),
                st["outcome"].as_str().unwrap_or_default(),
            );
            let row = dom
                .find(&format!(r#"<tr class="step" data-step="{name}">"#))
                .ok_or_else(|| format!("{which}: no timeline row for {name}"))?;
            check(
                dom[row..].contains(&format!(r#"<div class="bar {outcome}""#)),
                || format!("{which}: {name}'s bar is not {outcome}"),
            )?;
        }
        let steps_table = dom.find("<h3>Steps</h3>").ok_or("no step table")?;
        let failed_at = dom.find("<h3 id=").ok_or("no failed section")?;
        check(failed_at < steps_table, || {
            format!("{which}: the failed section is not before the steps")
        })?;
        let count = |k: &str| {
            let at = format!(r#"data-count="{k}">"#);
            dom.find(&at).map(|i| {
                dom[i + at.len()..]
                    .split('<')
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
        };
        if which == "first" {
            check(dom.contains(">Failed (2)</h3>"), || {
                "first: the failed heading does not count 2".into()
            })?;
            check(
                dom.matches(r#"<tr class="failed-check">"#).count() == 2
                    && dom.matches("spec deadline of 2s exceeded").count() >= 2,
                || "first: the failed specs are not listed with their failure".into(),
            )?;
            check(count("failed").as_deref() == Some("2"), || {
                format!("first: failed count {:?}", count("failed"))
            })?;
        } else {
            check(
                dom.contains(">Failed (0)</h3>") && dom.contains("<h3>Flaky (2)</h3>"),
                || "again: the headings do not say 0 failed, 2 flaky".into(),
            )?;
            check(
                dom.matches(r#"<tr class="flaky-check">"#).count() == 2
                    && dom.contains(&format!("failed in run {}", r.first_id)),
                || "again: the flaky specs are not listed with their reason".into(),
            )?;
            check(
                count("passed").as_deref() == Some("2") && count("flaky").as_deref() == Some("2"),
                || format!("again: counts {:?} {:?}", count("passed"), count("flaky")),
            )?;
        }
        eprintln!(
            "  {which}: {} timeline rows, DOM {} bytes, screenshot {}",
            steps.len(),
            dom.len(),
            dir.join("report.png").display()
        );
    }
    Ok(())
}

/// Why `report::` cannot run here, if it cannot.
pub fn no_browser() -> Option<String> {
    shakedown::process::on_path("chromium")
        .is_none()
        .then(|| "chromium is not installed (`shakedown host setup` installs it)".to_string())
}
