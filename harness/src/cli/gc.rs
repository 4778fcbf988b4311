//! `shakedown gc`: remove what killed runs left, by label.

use super::*;

/// How long a leftover process has between SIGTERM and SIGKILL.
const GC_PROCESS_GRACE: Duration = Duration::from_secs(5);

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
    // Processes last: a killed run's `docker exec` clients end once their containers go.
    let procs = process::stop_run_processes(run, GC_PROCESS_GRACE).await;
    // VM taps after their qemu processes are gone.
    let taps = bounded(
        "remove VM taps",
        deadline,
        process::StepLog::stderr(),
        |r| async move {
            use crate::provider::Provider;
            crate::provider::vm::VmProvider::new()
                .gc(&r, run)
                .await
                .map_err(|e| CliError::Infra {
                    what: "remove VM taps".into(),
                    source: Box::new(e),
                })
        },
    )
    .await?;
    let mut c = c;
    c.networks.extend(taps.networks);
    let work = paths::remove_work_dirs(run);
    println!(
        "removed {} container(s), {} network(s), {} volume(s), {} process(es), {} work folder(s)",
        c.containers.len(),
        c.networks.len(),
        c.volumes.len(),
        procs.len(),
        work
    );
    Ok(ExitKind::Passed)
}
