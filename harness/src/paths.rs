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

/// A run id that sorts by time, reads as a time, and does not collide: the UTC second, then
/// 60 of a ULID's 80 random bits (Crockford base32, lowercase, as docker names want).
/// `20261201-200000-` + 12 characters = 28; node names add at most 26 more.
pub fn new_run_id() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year][month][day]-[hour][minute][second]");
    let stamp = now.format(&fmt).unwrap_or_default();
    let random = ulid::Ulid::new().to_string().to_ascii_lowercase();
    // A ULID is 10 characters of milliseconds, then 16 of randomness; the second is already
    // in the stamp.
    format!("{stamp}-{}", &random[14..])
}

/// Where runs keep what must not go into artifacts (the admin kubeconfig): one private
/// folder per run under `$SHAKEDOWN_WORK`, else `runs/` in the cache folder (the user's
/// own, unlike a shared /tmp). `cluster-down` empties a run's folder; `gc` removes the
/// folders of runs it cleans up.
pub fn work_root() -> PathBuf {
    std::env::var_os("SHAKEDOWN_WORK")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("runs"))
}

/// One run's work folder (see [`work_root`]).
pub fn work_dir(run_id: &str) -> PathBuf {
    work_root().join(run_id)
}

/// Creates a run's work folder, readable by its owner only.
pub fn create_work_dir(run_id: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::fs::PermissionsExt;
    let root = work_root();
    std::fs::create_dir_all(&root)?;
    let d = root.join(run_id);
    std::fs::create_dir_all(&d)?;
    // Someone else's folder, or a link planted in our place, is refused, not chmod'ed.
    for p in [&root, &d] {
        let md = std::fs::symlink_metadata(p)?;
        if md.file_type().is_symlink() || md.uid() != nix::unistd::Uid::effective().as_raw() {
            return Err(std::io::Error::other(format!(
                "{} is a link or belongs to another user",
                p.display()
            )));
        }
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(d)
}

/// Removes the work folder of one run, or of every run; returns how many went.
pub fn remove_work_dirs(run_id: Option<&str>) -> usize {
    let dirs: Vec<PathBuf> = match run_id {
        Some(id) => vec![work_dir(id)],
        None => std::fs::read_dir(work_root())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect(),
    };
    dirs.into_iter()
        .filter(|d| d.is_dir() && std::fs::remove_dir_all(d).is_ok())
        .count()
}

/// An exclusive lock on the build cache (`flock` on `<cache>/.lock`), held while slow stages
/// are built or unpacked, so two runs (or `--parallel` jobs) on a cold cache never race.
/// Released when dropped, and by the kernel when the process dies.
pub struct CacheLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl CacheLock {
    /// Waits for the lock without a runtime (plan time), saying once what it waits for.
    pub fn acquire_blocking(cache: &Path, note: &dyn Fn(String)) -> std::io::Result<CacheLock> {
        use nix::fcntl::{Flock, FlockArg};
        std::fs::create_dir_all(cache)?;
        let path = cache.join(".lock");
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .read(true)
                .open(&path)
        };
        let lock = match Flock::lock(open()?, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                note(format!(
                    "waiting for the build cache lock {} (held by pid {})",
                    path.display(),
                    holder.trim()
                ));
                Flock::lock(file, FlockArg::LockExclusive)
                    .map_err(|(_, e)| std::io::Error::from(e))?
            }
            Err((_, e)) => return Err(std::io::Error::from(e)),
        };
        {
            use std::io::{Seek, Write};
            let mut f = &*lock;
            let _ = f.set_len(0);
            let _ = f.seek(std::io::SeekFrom::Start(0));
            let _ = writeln!(f, "{}", std::process::id());
        }
        Ok(CacheLock { _lock: lock })
    }

    /// Waits for the lock, saying once what it waits for; gives up when `cancel` fires.
    pub async fn acquire(
        cache: &Path,
        cancel: &tokio_util::sync::CancellationToken,
        note: &(dyn Fn(String) + Sync),
    ) -> std::io::Result<CacheLock> {
        use nix::fcntl::{Flock, FlockArg};
        std::fs::create_dir_all(cache)?;
        let path = cache.join(".lock");
        let mut said = false;
        loop {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .read(true)
                .open(&path)?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => {
                    use std::io::{Seek, Write};
                    let mut f = &*lock;
                    let _ = f.set_len(0);
                    let _ = f.seek(std::io::SeekFrom::Start(0));
                    let _ = writeln!(f, "{}", std::process::id());
                    return Ok(CacheLock { _lock: lock });
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    if !said {
                        let holder = std::fs::read_to_string(&path).unwrap_or_default();
                        note(format!(
                            "waiting for the build cache lock {} (held by pid {})",
                            path.display(),
                            holder.trim()
                        ));
                        said = true;
                    }
                }
                Err((_, e)) => return Err(std::io::Error::from(e)),
            }
            tokio::select! {
                _ = cancel.cancelled() => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::Interrupted,
                        format!("stopped while waiting for the build cache lock {}", path.display()),
                    ))
                }
                _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{new_run_id, CacheLock};
    use tokio_util::sync::CancellationToken;

    #[tokio::test]
    async fn the_cache_lock_is_exclusive_and_released_on_drop() {
        let d = tempfile::tempdir().unwrap();
        let never = CancellationToken::new();
        let notes = std::sync::Mutex::new(Vec::new());
        let note = |s: String| notes.lock().unwrap().push(s);
        let first = CacheLock::acquire(d.path(), &never, &note).await.unwrap();
        // A second holder waits, says so, and gives up when cancelled.
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            c2.cancel();
        });
        let e = CacheLock::acquire(d.path(), &cancel, &note)
            .await
            .err()
            .expect("the lock is held");
        assert_eq!(e.kind(), std::io::ErrorKind::Interrupted);
        let said = notes.lock().unwrap().join("\n");
        assert!(
            said.contains("waiting for the build cache lock")
                && said.contains(&std::process::id().to_string()),
            "{said}"
        );
        drop(first);
        CacheLock::acquire(d.path(), &never, &note).await.unwrap();
    }

    #[test]
    fn run_ids_are_unique_readable_and_sorted_by_time() {
        // Many ids within the same second: the old 16-bit salt collided here (birthday
        // bound: about 300 ids for an even chance).
        let ids: Vec<String> = (0..20_000).map(|_| new_run_id()).collect();
        let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "run ids collided");
        for id in &ids {
            assert_eq!(id.len(), 28, "{id}");
            let (stamp, rest) = id.split_at(16);
            assert!(
                stamp
                    .chars()
                    .filter(|c| *c != '-')
                    .all(|c| c.is_ascii_digit()),
                "{id}"
            );
            assert!(
                rest.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
                "{id}"
            );
        }
        // The stamp leads, so ids of later seconds sort after earlier ones.
        let first = &ids[0][..15];
        let last = &ids[ids.len() - 1][..15];
        assert!(first <= last);
    }
}
