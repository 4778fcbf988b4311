//! Where things are: the repository root (scenarios/, cni-variants/), the cache, artifacts.

use std::path::{Path, PathBuf};

/// The repository root: `--root`, else `$SHAKEDOWN_ROOT`, else the nearest ancestor of the
/// current directory holding `scenarios/` and `cni-variants/`, else the checkout this binary
/// was built from.
pub fn find_root(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("SHAKEDOWN_ROOT") {
        return PathBuf::from(p);
    }
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            if dir.join("scenarios").is_dir() && dir.join("cni-variants").is_dir() {
                return dir.to_path_buf();
            }
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// `$SHAKEDOWN_CACHE`, else `$XDG_CACHE_HOME/shakedown`, else `~/.cache/shakedown`.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("SHAKEDOWN_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("shakedown");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache").join("shakedown")
}

/// A run id that sorts by time and does not collide between runs on one machine.
pub fn new_run_id() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year][month][day]-[hour][minute][second]");
    let stamp = now.format(&fmt).unwrap_or_default();
    let salt = (now.unix_timestamp_nanos() as u64 ^ (std::process::id() as u64) << 16) & 0xffff;
    format!("{stamp}-{salt:04x}")
}

/// The run history beside the artifacts folders: the parent of one run's artifacts (or of
/// `$ARTIFACTS`), else `artifacts/history.sqlite`.
pub fn default_history(artifacts: Option<&Path>) -> PathBuf {
    match artifacts.and_then(Path::parent) {
        Some(p) if !p.as_os_str().is_empty() => p.join(crate::history::FILE_NAME),
        _ => Path::new("artifacts").join(crate::history::FILE_NAME),
    }
}
