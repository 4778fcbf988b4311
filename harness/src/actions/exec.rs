//! `exec`: run a command as a step. The generic escape hatch, and what the engine tests use
//! with the fake tools in `fixtures/tools/`.

use super::{Action, StepContext, StepError};
use crate::process::Cmd;
use std::path::Path;

pub struct Exec;

impl Exec {
    fn command(cx: &StepContext<'_>) -> Cmd {
        let argv = &cx.step.command;
        let program = &argv[0];
        let resolved = if program.contains('/') && !Path::new(program).is_absolute() {
            cx.run.settings.root.join(program).display().to_string()
        } else {
            program.clone()
        };
        Cmd::new(resolved)
            .args(argv[1..].iter().cloned())
            .cwd(&cx.run.settings.root)
            .env("SHAKEDOWN_RUN_ID", &cx.run.settings.run_id)
            .env("SHAKEDOWN_JOB", &cx.job.name)
            .env("SHAKEDOWN_STEP", &cx.step.name)
            .env(
                "SHAKEDOWN_ARTIFACTS",
                cx.run.settings.artifacts.display().to_string(),
            )
            .env("SHAKEDOWN_JOB_DIR", cx.job_dir().display().to_string())
    }
}

#[async_trait::async_trait]
impl Action for Exec {
    fn describe(&self, cx: &StepContext<'_>) -> Vec<String> {
        vec![format!("run `{}`", Self::command(cx))]
    }

    async fn run(&self, cx: &mut StepContext<'_>) -> Result<(), StepError> {
        cx.cmd(Self::command(cx)).await?;
        Ok(())
    }
}
