//! Records every finished run in the run history (SQLite or PostgreSQL), then sends the notifications
//! that are due. Neither a down webhook nor a failed notification fails the run.

use super::{ReportError, Reporter};
use crate::engine::event::Event;
use crate::history::notify::{self, Notifier};
use crate::history::Location;
use crate::history::{History, Trigger};
use std::path::PathBuf;

pub struct HistoryRecorder {
    at: Location,
    trigger: Trigger,
    notifier: Option<Notifier>,
    artifacts: Option<PathBuf>,
}

impl HistoryRecorder {
    pub fn new(at: impl Into<Location>, trigger: Trigger) -> HistoryRecorder {
        HistoryRecorder {
            at: at.into(),
            trigger,
            notifier: None,
            artifacts: None,
        }
    }

    /// Also notify, naming `artifacts` in the messages.
    pub fn with_notifier(mut self, n: Notifier, artifacts: PathBuf) -> HistoryRecorder {
        self.notifier = Some(n);
        self.artifacts = Some(artifacts);
        self
    }
}

impl Reporter for HistoryRecorder {
    fn name(&self) -> &'static str {
        "history"
    }

    fn on_event(&mut self, ev: &Event) -> Result<(), ReportError> {
        let Event::RunFinished(s) = ev else {
            return Ok(());
        };
        let mut h = History::open(self.at.clone())?;
        h.record(s, self.trigger)?;
        if let Some(n) = &self.notifier {
            let due = notify::due(
                &h,
                s,
                self.trigger,
                n.failure_streak,
                n.run_url.as_deref(),
                self.artifacts.as_deref(),
            )?;
            notify::send(&h, n, &due)?;
        }
        Ok(())
    }
}
