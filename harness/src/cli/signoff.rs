//! `shakedown signoff`: go/no-go for a release branch.

use super::*;

pub(super) fn signoff(root: &Path, a: SignoffArgs) -> Result<ExitKind, CliError> {
    let (s, _) = load_scenario(root, &a.branch)?;
    let h = History::open_existing(history_path(a.history)).map_err(history_error)?;
    let result = history::signoff::signoff(
        &h,
        &s,
        &history::signoff::Options {
            version: a.version,
            within: Duration::from_secs(a.hours * 3600),
            now: std::time::SystemTime::now(),
        },
    )
    .map_err(history_error)?;
    print!("{}", result.render());
    Ok(if result.go() {
        ExitKind::Passed
    } else {
        ExitKind::TestFailure
    })
}
