//! `shakedown ci generate`: Prow and GitHub Actions jobs from scenarios/.

use super::*;

/// Every scenario in scenarios/, validated; all problems at once.
pub(super) fn load_all(root: &Path) -> Result<Vec<LoadedScenario>, CliError> {
    let catalog = load_catalog(root)?;
    let dir = root.join("scenarios");
    let files = scenario::files_in(&dir).map_err(|e| CliError::Infra {
        what: format!("read {}", dir.display()),
        source: Box::new(e),
    })?;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match scenario::load(&f, &catalog, scenario::today()) {
            Ok(s) => out.push(s),
            Err(e) => errors.extend(e.0),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(errors).into())
    }
}

pub(super) fn ci_generate(root: &Path, a: CiGenerateArgs) -> Result<ExitKind, CliError> {
    let scenarios = load_all(root)?;
    let jobs: Vec<String> = scenarios
        .iter()
        .flat_map(|s| matrix::expand(s).into_iter().map(|j| j.name))
        .collect();
    if let Some(unknown) = a.leave_out.iter().find(|k| !jobs.contains(k)) {
        return Err(CliError::Usage(format!(
            "--leave-out {unknown}: no scenario has this job (`shakedown list` shows them)"
        )));
    }
    let settings = ci::Settings {
        repo: a.repo,
        image: a.image,
        leave_out: a.leave_out,
    };
    let out = a.out.unwrap_or_else(|| root.join("ci"));
    let infra = |what: &str, e: ci::CiError| CliError::Infra {
        what: what.to_string(),
        source: Box::new(e),
    };
    let files = ci::generate(&scenarios, root, &settings).map_err(|e| match e {
        // Two cells named alike is the scenario's to fix: a configuration error.
        ci::CiError::DuplicateName { .. } => CliError::Usage(e.to_string()),
        e => infra("generate the CI jobs", e),
    })?;
    if a.check {
        let findings = ci::check(&out, &files).map_err(|e| infra("check the CI jobs", e))?;
        if findings.is_empty() {
            println!(
                "{} is up to date ({} generated files)",
                shown(root, &out),
                files.len()
            );
            return Ok(ExitKind::Passed);
        }
        for f in &findings {
            let line = f.to_string();
            let root_s = format!("{}/", root.display());
            eprintln!("{}", line.strip_prefix(&root_s).unwrap_or(&line));
        }
        eprintln!(
            "{} file(s) differ from what `{}` writes: change the scenarios, not ci/, and run it",
            findings.len(),
            settings.command()
        );
        return Ok(ExitKind::TestFailure);
    }
    let changes = ci::write(&out, &files).map_err(|e| infra("write the CI jobs", e))?;
    for c in changes {
        match c {
            ci::Change::Written(p) => println!("wrote {}", shown(root, &p)),
            ci::Change::Unchanged(p) => println!("unchanged {}", shown(root, &p)),
            ci::Change::Removed(p) => {
                println!("removed {} (no scenario generates it)", shown(root, &p))
            }
            ci::Change::Foreign(p) => eprintln!(
                "warning: {} is not generated and has no generated header; left alone \
                 (`--check` reports it)",
                shown(root, &p)
            ),
        }
    }
    Ok(ExitKind::Passed)
}
