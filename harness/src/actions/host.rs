//! `host-setup`: install what real clusters need and start dockerd (idempotent).

use super::{Action, StepContext, StepError};
use crate::process::Cmd;

pub struct HostSetup;

#[async_trait::async_trait]
impl Action for HostSetup {
    fn describe(&self, cx: &StepContext<'_>) -> Vec<String> {
        vec![format!(
            "run {}/harness/scripts/host-setup.sh (Debian packages, deb-src, dockerd)",
            cx.run.settings.root.display()
        )]
    }

    async fn run(&self, cx: &mut StepContext<'_>) -> Result<(), StepError> {
        let script = cx.run.settings.root.join("harness/scripts/host-setup.sh");
        cx.cmd(Cmd::new("bash").arg(script.display().to_string()))
            .await?;
        Ok(())
    }
}
