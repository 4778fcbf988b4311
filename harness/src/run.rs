//! One way to assemble a run, for `scenario`, `bench` and the tests: the plan, the real
//! actions (or planted ones), the reporters, and the exit rule that a run whose artifacts
//! could not be written is an infrastructure failure.

use crate::actions::{Actions, RunContext, RunSettings, Steps};
use crate::cni::Catalog;
use crate::engine::{self, RunOptions, RunSummary, Stop};
use crate::exit::ExitKind;
use crate::plan::Plan;
use crate::reporter::{self, Reporter};
use crate::scenario::LoadedScenario;
use std::sync::Arc;
use tokio::sync::mpsc;

pub struct Run {
    plan: Plan,
    context: RunContext,
    dry_run: bool,
    parallel: usize,
    steps: Arc<dyn Steps>,
    stop: Stop,
    reporters: Vec<Box<dyn Reporter>>,
}

impl Run {
    /// A run of `plan` with the real actions, one job at a time, no reporters yet.
    pub fn new(
        plan: Plan,
        scenario: Arc<LoadedScenario>,
        catalog: Arc<Catalog>,
        settings: RunSettings,
    ) -> Run {
        Run {
            plan,
            context: RunContext {
                settings,
                scenario,
                catalog,
            },
            dry_run: false,
            parallel: 1,
            steps: Arc::new(Actions),
            stop: Stop::default(),
            reporters: Vec::new(),
        }
    }

    /// Only say what each step would do.
    pub fn dry_run(mut self, yes: bool) -> Run {
        self.dry_run = yes;
        self
    }

    /// Jobs to run at once.
    pub fn parallel(mut self, jobs: usize) -> Run {
        self.parallel = jobs;
        self
    }

    /// What runs each step, instead of the real actions (tests plant their own).
    pub fn steps(mut self, steps: Arc<dyn Steps>) -> Run {
        self.steps = steps;
        self
    }

    /// How the run is stopped early (wire it to signals with [`Stop::on_signals`]).
    pub fn stop(mut self, stop: Stop) -> Run {
        self.stop = stop;
        self
    }

    pub fn reporters(mut self, reporters: Vec<Box<dyn Reporter>>) -> Run {
        self.reporters.extend(reporters);
        self
    }

    /// Runs every job and returns once every reporter has written its files.
    pub async fn execute(self) -> RunSummary {
        let (tx, rx) = mpsc::unbounded_channel();
        let reporters = tokio::spawn(reporter::drive(rx, self.reporters));
        let opts = RunOptions {
            dry_run: self.dry_run,
            parallel: self.parallel,
            steps: self.steps,
        };
        let mut summary = engine::run(&self.plan, self.context, opts, self.stop, tx).await;
        summary.reporter_errors.extend(
            reporters
                .await
                .unwrap_or_else(|e| vec![format!("reporter task failed: {e}")]),
        );
        // Artifacts that could not be written make the run an infrastructure failure: a
        // pass nobody can read back is not a pass.
        if !summary.reporter_errors.is_empty() && summary.exit != ExitKind::Interrupted {
            summary.exit = ExitKind::Infrastructure;
            summary.exit_code = summary.exit.code();
        }
        summary
    }
}
