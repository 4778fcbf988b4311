//! Downloads from a release bucket, verified against the digest files published beside each
//! file and cached by that digest: `<cache>/downloads/<kind>-<digest>/<name>`. A download
//! is written to a partial file and renamed into the cache only once its digest matched, so
//! an interrupted or corrupt download never poisons the cache.
//!
//! Every request is logged as `+ GET <url>`; a terminal gets a progress bar, a log (CI) a
//! line per quarter of the file.

use crate::process::StepLog;
use crate::release::bucket::{digest_url, parse_digest, DigestKind};
use sha2::Digest as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Connecting gives up after this long: an unreachable bucket fails in seconds.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The response headers must arrive within this long. A body has no overall limit (a large
/// tarball on a slow link is fine); the step's deadline bounds a stalled one.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("failed to download {url}")]
    Request {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("failed to download {url}: the server answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("failed to read {url}")]
    Read {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to verify {file}: no digest file exists beside it (tried {tried})")]
    NoDigest { file: String, tried: String },
    #[error("failed to read a {kind} digest from {url}: {body:?} is not one")]
    BadDigest {
        url: String,
        kind: DigestKind,
        body: String,
    },
    #[error(
        "failed to verify {file}: its {kind} is {actual}, but {digest_url} publishes {expected}"
    )]
    Mismatch {
        file: String,
        kind: DigestKind,
        digest_url: String,
        expected: String,
        actual: String,
    },
    #[error("failed to write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to download {url}: stopped")]
    Cancelled { url: String },
}

/// A verified file in the cache.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub path: PathBuf,
    pub kind: DigestKind,
    pub digest: String,
    /// False when the cache already held it.
    pub downloaded: bool,
}

/// Downloads into one cache folder, logging to one step log.
#[derive(Clone)]
pub struct Downloader {
    dir: PathBuf,
    log: StepLog,
    cancel: CancellationToken,
}

/// Whether `url` names this machine or a private network (a docker bridge, a local mirror):
/// such requests never go through a proxy from the environment.
fn is_local(url: &str) -> bool {
    let Some(host) = url
        .parse::<ureq::http::Uri>()
        .ok()
        .and_then(|u| u.host().map(String::from))
    else {
        return false;
    };
    if matches!(host.as_str(), "localhost" | "[::1]" | "::1") {
        return true;
    }
    host.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|ip| ip.is_loopback() || ip.is_private() || ip.is_link_local())
}

fn agent(url: &str) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_recv_response(Some(RESPONSE_TIMEOUT))
        .http_status_as_error(false);
    if is_local(url) {
        // A proxy in the environment must not see requests meant for this machine.
        config = config.proxy(None);
    }
    config.build().into()
}

fn request_err(url: &str) -> impl FnOnce(ureq::Error) -> DownloadError + '_ {
    move |e| DownloadError::Request {
        url: url.to_string(),
        source: Box::new(e),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One hasher per digest kind.
enum Hasher {
    Sha512(sha2::Sha512),
    Sha256(sha2::Sha256),
    Sha1(sha1::Sha1),
}

impl Hasher {
    fn new(kind: DigestKind) -> Hasher {
        match kind {
            DigestKind::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
            DigestKind::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            DigestKind::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
        }
    }
    fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Sha512(h) => h.update(b),
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha1(h) => h.update(b),
        }
    }
    fn finish(self) -> String {
        match self {
            Hasher::Sha512(h) => hex(&h.finalize()),
            Hasher::Sha256(h) => hex(&h.finalize()),
            Hasher::Sha1(h) => hex(&h.finalize()),
        }
    }
}

/// The digest of a file on disk.
pub fn file_digest(kind: DigestKind, path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Hasher::new(kind);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}

enum Got {
    Found(String),
    Missing,
}

impl Downloader {
    pub fn new(cache: &Path, log: StepLog, cancel: CancellationToken) -> Downloader {
        Downloader {
            dir: cache.join("downloads"),
            log,
            cancel,
        }
    }

    /// Runs blocking HTTP work off the async threads; Ctrl-C or a deadline abandons it.
    async fn blocking<T: Send + 'static>(
        &self,
        url: &str,
        work: impl FnOnce() -> Result<T, DownloadError> + Send + 'static,
    ) -> Result<T, DownloadError> {
        tokio::select! {
            r = tokio::task::spawn_blocking(work) => r.unwrap_or_else(|e| Err(DownloadError::Read { url: url.into(), source: std::io::Error::other(e) })),
            _ = self.cancel.cancelled() => Err(DownloadError::Cancelled { url: url.into() }),
        }
    }

    /// Removes partial downloads a killed run left. Call it holding the build cache lock,
    /// when no other download into this cache can be running.
    pub fn clear_partials(&self) {
        let dir = self.dir.join("partial");
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }

    /// A small text file (a marker or a digest); a 404 is `Missing`.
    async fn get_text(&self, url: &str) -> Result<Got, DownloadError> {
        self.log.line(&format!("+ GET {url}"));
        let u = url.to_string();
        self.blocking(url, move || -> Result<Got, DownloadError> {
            let resp = agent(&u).get(&u).call().map_err(request_err(&u))?;
            match resp.status().as_u16() {
                200 => {}
                404 | 403 => return Ok(Got::Missing),
                status => return Err(DownloadError::Status { url: u, status }),
            }
            let body = resp
                .into_body()
                .with_config()
                .limit(64 * 1024)
                .read_to_string()
                .map_err(|e| DownloadError::Read {
                    url: u.clone(),
                    source: std::io::Error::other(e),
                })?;
            Ok(Got::Found(body))
        })
        .await
    }

    /// A text file that must exist (a release marker): a 404 is an error naming the URL.
    pub async fn text(&self, url: &str) -> Result<String, DownloadError> {
        match self.get_text(url).await? {
            Got::Found(s) => Ok(s),
            Got::Missing => Err(DownloadError::Status {
                url: url.into(),
                status: 404,
            }),
        }
    }

    /// Whether a registry has a manifest at `url` (HEAD; 404 is false, other errors fail).
    pub async fn exists(&self, url: &str) -> Result<bool, DownloadError> {
        self.log.line(&format!("+ HEAD {url}"));
        let u = url.to_string();
        self.blocking(url, move || -> Result<bool, DownloadError> {
            let resp = agent(&u)
                .head(&u)
                .header(
                    "Accept",
                    "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
                )
                .call()
                .map_err(request_err(&u))?;
            match resp.status().as_u16() {
                200 => Ok(true),
                404 => Ok(false),
                status => Err(DownloadError::Status { url: u, status }),
            }
        })
        .await
    }

    /// The strongest digest published beside `url`, trying `kinds` in order.
    pub async fn published_digest(
        &self,
        url: &str,
        kinds: &[DigestKind],
    ) -> Result<(DigestKind, String, String), DownloadError> {
        let mut tried = Vec::new();
        for &kind in kinds {
            let durl = digest_url(url, kind);
            match self.get_text(&durl).await? {
                Got::Found(body) => {
                    let d = parse_digest(kind, &body).ok_or_else(|| DownloadError::BadDigest {
                        url: durl.clone(),
                        kind,
                        body: body.chars().take(80).collect(),
                    })?;
                    return Ok((kind, d, durl));
                }
                Got::Missing => tried.push(durl),
            }
        }
        Err(DownloadError::NoDigest {
            file: url.into(),
            tried: tried.join(", "),
        })
    }

    /// Downloads `url` as `name`, verified against the strongest published digest of
    /// `kinds`; a file already in the cache under that digest is not downloaded again.
    pub async fn file(
        &self,
        url: &str,
        name: &str,
        kinds: &[DigestKind],
    ) -> Result<Fetched, DownloadError> {
        let (kind, expected, durl) = self.published_digest(url, kinds).await?;
        let weak = if kind == DigestKind::Sha1 {
            " (the strongest this release publishes; SHA-1 is weak)"
        } else {
            ""
        };
        self.log
            .line(&format!("{name}: verifying with {kind} from {durl}{weak}"));
        let dir = self.dir.join(format!("{}-{expected}", kind.ext()));
        let path = dir.join(name);
        if path.is_file() {
            self.log
                .line(&format!("{name}: cached ({})", path.display()));
            return Ok(Fetched {
                path,
                kind,
                digest: expected,
                downloaded: false,
            });
        }
        let partial_dir = self.dir.join("partial");
        std::fs::create_dir_all(&partial_dir).map_err(io(&partial_dir))?;
        let partial = partial_dir.join(format!("{name}.{}", ulid::Ulid::new()));
        self.log.line(&format!("+ GET {url}"));
        let stop = Arc::new(AtomicBool::new(false));
        let work = {
            let (u, p, log, stop, name) = (
                url.to_string(),
                partial.clone(),
                self.log.clone(),
                stop.clone(),
                name.to_string(),
            );
            let (expected, durl, dir, path) =
                (expected.clone(), durl.clone(), dir.clone(), path.clone());
            tokio::task::spawn_blocking(move || -> Result<(), DownloadError> {
                // Gone on every way out: an error, a mismatch, an abandoned step; after the
                // rename there is nothing left to remove.
                let _partial = RemoveOnDrop(&p);
                let actual = stream(&u, &p, kind, &log, &stop, &name)?;
                if actual != expected {
                    return Err(DownloadError::Mismatch {
                        file: u,
                        kind,
                        digest_url: durl,
                        expected,
                        actual,
                    });
                }
                std::fs::create_dir_all(&dir).map_err(io(&dir))?;
                std::fs::rename(&p, &path).map_err(io(&path))
            })
        };
        let cancelled = self.cancel.clone();
        let watch = async {
            cancelled.cancelled().await;
            stop.store(true, Ordering::Relaxed);
            std::future::pending::<()>().await
        };
        tokio::select! {
            r = work => r.unwrap_or_else(|e| Err(DownloadError::Read { url: url.into(), source: std::io::Error::other(e) }))?,
            _ = watch => unreachable!(),
        };
        Ok(Fetched {
            path,
            kind,
            digest: expected,
            downloaded: true,
        })
    }
}

/// Removes a partial download when dropped.
struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// Streams `url` into `path`, hashing as it goes; returns the hex digest.
fn stream(
    url: &str,
    path: &Path,
    kind: DigestKind,
    log: &StepLog,
    stop: &AtomicBool,
    name: &str,
) -> Result<String, DownloadError> {
    let resp = agent(url)
        .get(url)
        .call()
        .map_err(|e| DownloadError::Request {
            url: url.into(),
            source: Box::new(e),
        })?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(DownloadError::Status {
            url: url.into(),
            status,
        });
    }
    let total = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut reader = resp.into_body().into_with_config().limit(u64::MAX).reader();
    let mut out = std::fs::File::create(path).map_err(io(path))?;
    let mut h = Hasher::new(kind);
    let mut buf = vec![0u8; 1 << 16];
    let bar = progress_bar(total, name);
    let (mut done, mut next_quarter, start) = (0u64, 1u64, Instant::now());
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(DownloadError::Cancelled { url: url.into() });
        }
        let n = reader
            .read(&mut buf)
            .map_err(|source| DownloadError::Read {
                url: url.into(),
                source,
            })?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io(path))?;
        done += n as u64;
        if let Some(b) = &bar {
            b.set_position(done);
        }
        if let Some(t) = total.filter(|t| *t > 0) {
            while next_quarter <= 4 && done * 4 >= t * next_quarter {
                log.line(&format!(
                    "{name}: {}% of {} MiB after {:.0?}",
                    next_quarter * 25,
                    t >> 20,
                    start.elapsed()
                ));
                next_quarter += 1;
            }
        }
    }
    out.sync_all().map_err(io(path))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    log.line(&format!(
        "{name}: {} bytes in {:.1?}",
        done,
        start.elapsed()
    ));
    Ok(h.finish())
}

/// A progress bar where a person watches a terminal; none under CI or in a log.
fn progress_bar(total: Option<u64>, name: &str) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() || std::env::var_os("CI").is_some() {
        return None;
    }
    let b = indicatif::ProgressBar::new(total.unwrap_or(0));
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
    ) {
        b.set_style(style);
    }
    b.set_message(name.to_string());
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_of_known_inputs() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("abc");
        std::fs::write(&f, "abc").unwrap();
        assert_eq!(
            file_digest(DigestKind::Sha256, &f).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            file_digest(DigestKind::Sha1, &f).unwrap(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert!(file_digest(DigestKind::Sha512, &f)
            .unwrap()
            .starts_with("ddaf35a193617aba"));
    }

    #[test]
    fn only_local_addresses_skip_the_proxy() {
        assert!(is_local("http://127.0.0.1:8080/x"));
        assert!(is_local("http://localhost/x"));
        assert!(is_local("http://172.17.0.1:5000/v2/"));
        assert!(!is_local("https://dl.k8s.io/release/stable.txt"));
        assert!(!is_local("http://8.8.8.8/"));
    }
}
