//! One trial per matrix job of every scenario in `scenarios/`, through libtest-mimic:
//!
//!   cargo test --test scenarios -- --list
//!   cargo test --test scenarios -- dry-run::release-1.20/docker/bridge
//!
//! `dry-run::<job>` runs the whole engine with actions that only say what they would do, and
//! checks every artifact it writes.

mod common;

use libtest_mimic::{Arguments, Failed, Trial};
use shakedown::engine::event::StepOutcome;
use shakedown::engine::Stop;
use shakedown::{matrix, scenario};
use std::path::PathBuf;

fn main() {
    let args = Arguments::from_args();
    let catalog = common::catalog();
    let mut trials = Vec::new();
    for file in scenario::files_in(&common::root().join("scenarios")).expect("read scenarios/") {
        let s =
            scenario::load(&file, &catalog, scenario::today()).unwrap_or_else(|e| panic!("{e}"));
        for job in matrix::expand(&s) {
            let (file, job_name) = (file.clone(), job.name.clone());
            trials.push(
                Trial::test(format!("dry-run::{}", job.name), move || {
                    dry_run(file, job_name)
                })
                .with_kind("dry-run"),
            );
        }
    }
    libtest_mimic::run(&args, trials).exit();
}

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err(what().into())
    }
}

fn dry_run(file: PathBuf, job_name: String) -> Result<(), Failed> {
    let rt = tokio::runtime::Runtime::new()?;
    let dir = tempfile::tempdir()?;
    let catalog = common::catalog();
    let s = scenario::load(&file, &catalog, scenario::today()).map_err(|e| e.to_string())?;
    let jobs: Vec<_> = matrix::expand(&s)
        .into_iter()
        .filter(|j| j.name == job_name)
        .collect();
    let job = jobs[0].clone();
    // Run just this job, through the same path a real run takes.
    let one = dir.path().join(file.file_name().unwrap());
    let text = std::fs::read_to_string(&file)?;
    std::fs::write(&one, text)?;
    let summary = rt.block_on(async {
        let s = scenario::load(&one, &catalog, scenario::today()).unwrap();
        let p = shakedown::plan::build(&s, vec![job.clone()]);
        let cx = shakedown::actions::RunContext {
            settings: shakedown::actions::RunSettings {
                run_id: "dry".into(),
                root: common::root(),
                artifacts: dir.path().join("artifacts"),
                cache_dir: dir.path().join("cache"),
                ..Default::default()
            },
            scenario: std::sync::Arc::new(s),
            catalog: std::sync::Arc::new(common::catalog()),
        };
        shakedown::engine::run(
            &p,
            cx,
            shakedown::engine::RunOptions {
                dry_run: true,
                parallel: 1,
            },
            Stop::default(),
            common::file_reporters(&dir.path().join("artifacts")),
        )
        .await
    });
    let art = dir.path().join("artifacts");
    check(summary.exit_code == 0, || {
        format!("dry run exit {}", summary.exit_code)
    })?;
    let j = &summary.jobs[0];
    for st in &j.steps {
        let ok = match &st.outcome {
            StepOutcome::DryRun { would } => !would.is_empty(),
            StepOutcome::Skipped { reason } => reason.starts_with("conformance:"),
            _ => false,
        };
        check(ok, || {
            format!("step {} did not dry-run: {:?}", st.step, st.outcome)
        })?;
        let log = art.join(st.log.as_ref().ok_or("no step log")?);
        let text = std::fs::read_to_string(&log)?;
        check(text.contains("would: "), || {
            format!("{} lacks the would-lines", log.display())
        })?;
    }
    let junit = art.join(format!("junit_{}.xml", job.context()));
    let suites = common::read_junit(&junit);
    check(
        suites.len() == 1 && suites[0].tests == j.steps.len(),
        || format!("{} does not hold one case per step", junit.display()),
    )?;
    check(suites[0].property("dry-run") == Some("true"), || {
        "dry-run property missing".into()
    })?;
    for f in [
        "started.json",
        "finished.json",
        "summary.json",
        "build-log.txt",
    ] {
        check(art.join(f).is_file(), || format!("{f} missing"))?;
    }
    let cov = summary.coverage_lines().join("\n");
    check(cov.contains("init: DRY-RUN"), || {
        format!("coverage does not say dry run: {cov}")
    })?;
    Ok(())
}
