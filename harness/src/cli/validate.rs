//! `shakedown validate`: scenario files, each error with file, line and field.

use super::*;

pub(super) fn validate(root: &Path, files: Vec<PathBuf>) -> Result<ExitKind, CliError> {
    let catalog = load_catalog(root)?;
    let files = if files.is_empty() {
        scenario::files_in(&root.join("scenarios")).map_err(|e| CliError::Infra {
            what: format!("read {}", root.join("scenarios").display()),
            source: Box::new(e),
        })?
    } else {
        files
    };
    let mut errors = Vec::new();
    for f in &files {
        match scenario::load(f, &catalog, scenario::today()) {
            Ok(s) => println!("ok: {} ({} jobs)", f.display(), matrix::expand(&s).len()),
            Err(e) => errors.extend(e.0),
        }
    }
    if errors.is_empty() {
        Ok(ExitKind::Passed)
    } else {
        Err(ConfigErrors(errors).into())
    }
}
