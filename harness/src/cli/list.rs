//! `shakedown list`: scenarios and their matrix jobs.

use super::*;

pub(super) fn list(root: &Path) -> Result<ExitKind, CliError> {
    let catalog = load_catalog(root)?;
    let files = scenario::files_in(&root.join("scenarios")).map_err(|e| CliError::Infra {
        what: format!("read {}", root.join("scenarios").display()),
        source: Box::new(e),
    })?;
    let mut errors = Vec::new();
    for f in files {
        match scenario::load(&f, &catalog, scenario::today()) {
            Ok(s) => {
                println!(
                    "{} (Kubernetes {}, conformance tier {:?}{})",
                    s.name(),
                    s.version_label(),
                    s.scenario.conformance.tier,
                    if s.scenario.conformance.disabled.is_some() {
                        ", DISABLED"
                    } else {
                        ""
                    }
                );
                for j in matrix::expand(&s) {
                    println!("  {}", j.name);
                }
            }
            Err(e) => errors.extend(e.0),
        }
    }
    if errors.is_empty() {
        Ok(ExitKind::Passed)
    } else {
        Err(ConfigErrors(errors).into())
    }
}
