//! `shakedown host setup`: the Debian packages and dockerd real clusters need.

use super::*;

pub(super) async fn host_setup(root: &Path, deadline: Duration) -> Result<ExitKind, CliError> {
    let script = root.join("harness/scripts/host-setup.sh");
    let cmd = process::Cmd::new("bash").arg(script.display().to_string());
    bounded(
        "prepare this host",
        deadline,
        process::StepLog::stderr(),
        |r| async move {
            r.run(cmd).await.map_err(|e| CliError::Infra {
                what: "prepare this host".into(),
                source: Box::new(e),
            })
        },
    )
    .await?;
    Ok(ExitKind::Passed)
}
