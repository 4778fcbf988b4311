//! A scenario's spec duration table (`conformance.durations`): how long each conformance
//! spec took on a measured run, so a run without history starts the longest first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a spec duration table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DurationTableError {
    #[error("failed to read the spec duration table {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// A spec duration table: `SECONDS<TAB>SPEC NAME` per line; `#` starts a comment line.
pub fn read_duration_table(path: &Path) -> Result<BTreeMap<String, Duration>, DurationTableError> {
    let text = std::fs::read_to_string(path).map_err(|source| DurationTableError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_duration_table(&text).map_err(|(line, message)| DurationTableError::Line {
        path: path.to_path_buf(),
        line,
        message,
    })
}

fn parse_duration_table(text: &str) -> Result<BTreeMap<String, Duration>, (usize, String)> {
    let mut out = BTreeMap::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() || l.starts_with('#') {
            continue;
        }
        let (secs, name) = l
            .split_once('\t')
            .ok_or((i + 1, "expected SECONDS<TAB>SPEC NAME".to_string()))?;
        let secs: f64 = secs
            .trim()
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite() && *s >= 0.0)
            .ok_or((i + 1, format!("{secs:?} is not a number of seconds")))?;
        if name.trim().is_empty() {
            return Err((i + 1, "the spec name is empty".into()));
        }
        out.insert(name.to_string(), Duration::from_secs_f64(secs));
    }
    Ok(out)
}

/// The table's text for `durations`, longest first, with a comment line saying where the
/// figures came from.
pub fn write_duration_table(durations: &BTreeMap<String, Duration>, source: &str) -> String {
    let mut rows: Vec<(&String, &Duration)> = durations.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut out = format!("# {source}\n");
    for (name, d) in rows {
        out.push_str(&format!("{:.1}\t{name}\n", d.as_secs_f64()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_tables_round_trip_and_bad_lines_are_located() {
        let mut d = BTreeMap::new();
        d.insert("[sig-a] quick".to_string(), Duration::from_millis(4200));
        d.insert("[sig-b] slow one".to_string(), Duration::from_secs(240));
        let text = write_duration_table(&d, "measured here");
        assert!(text.starts_with("# measured here\n240.0\t[sig-b]"));
        assert_eq!(parse_duration_table(&text).unwrap().len(), 2);
        assert_eq!(
            parse_duration_table("# c\n3\tok\nnope\n"),
            Err((3, "expected SECONDS<TAB>SPEC NAME".to_string()))
        );
        assert_eq!(parse_duration_table("x\tname").unwrap_err().0, 1);
        assert_eq!(parse_duration_table("-1\tname").unwrap_err().0, 1);
        assert_eq!(parse_duration_table("2\t ").unwrap_err().0, 1);
    }
}
