//! `shakedown history`: streaks, slowest and flaky steps from the run history.

use super::*;

pub(super) fn show_history(a: HistoryArgs) -> Result<ExitKind, CliError> {
    let h = History::open_existing(history_path(a.history)).map_err(history_error)?;
    if a.spec_durations {
        let d = h.spec_durations().map_err(history_error)?;
        print!(
            "{}",
            scenario::durations::write_duration_table(
                &d,
                "each conformance spec's last passed duration, from the run history"
            )
        );
        return Ok(ExitKind::Passed);
    }
    if let Some(job) = &a.job {
        let known = h.job_names().map_err(history_error)?;
        if !known.iter().any(|j| history::selects(Some(job), j)) {
            return Err(CliError::Usage(format!(
                "no recorded runs of {job:?} in {}; recorded jobs: {}",
                h.location(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
    }
    print!(
        "{}",
        history::report(&h, a.job.as_deref()).map_err(history_error)?
    );
    Ok(ExitKind::Passed)
}
