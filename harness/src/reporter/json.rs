//! `summary.json`: the whole run, machine-readable.

use super::{write_file, ReportError, Reporter};
use crate::engine::event::Event;
use std::path::PathBuf;

pub struct JsonSummary {
    path: PathBuf,
}

impl JsonSummary {
    pub fn new(artifacts: &std::path::Path) -> JsonSummary {
        JsonSummary {
            path: artifacts.join("summary.json"),
        }
    }
}

impl Reporter for JsonSummary {
    fn name(&self) -> &'static str {
        "json"
    }

    fn on_event(&mut self, ev: &Event) -> Result<(), ReportError> {
        if let Event::RunFinished(s) = ev {
            let mut bytes = serde_json::to_vec_pretty(s).map_err(|e| ReportError::Encode {
                what: "summary.json",
                message: e.to_string(),
            })?;
            bytes.push(b'\n');
            write_file(&self.path, &bytes)?;
        }
        Ok(())
    }
}
