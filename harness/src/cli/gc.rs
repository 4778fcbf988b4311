//! `shakedown gc`: remove what killed runs left, by label.

use super::*;

pub(super) async fn gc(run: Option<&str>, deadline: Duration) -> Result<ExitKind, CliError> {
    let c = bounded(
        "remove leftovers",
        deadline,
        process::StepLog::stderr(),
        |r| async move {
            crate::provider::gc_all(&r, run)
                .await
                .map_err(|e| CliError::Infra {
                    what: "remove leftovers".into(),
                    source: Box::new(e),
                })
        },
    )
    .await?;
    let work = paths::remove_work_dirs(run);
    println!(
        "removed {} container(s), {} network(s), {} volume(s), {} work folder(s)",
        c.containers.len(),
        c.networks.len(),
        c.volumes.len(),
        work
    );
    Ok(ExitKind::Passed)
}
