//! The layout of the Kubernetes release bucket (`https://dl.k8s.io` and its mirrors): marker
//! files, per-binary downloads, the server and test tarballs, and the digest files published
//! beside each of them in each era. Pure: URLs and facts, no I/O.

use super::KubeVersion;
use std::fmt;

/// The bucket users download from when they set nothing else.
pub const DEFAULT_RELEASE_URL: &str = "https://dl.k8s.io";
/// The environment variable that overrides [`DEFAULT_RELEASE_URL`] (as `--release-url` does).
pub const RELEASE_URL_ENV: &str = "SHAKEDOWN_RELEASE_URL";

/// The binaries a node needs, downloaded one by one from `bin/linux/amd64/`.
pub const NODE_BINARIES: &[&str] = &["kubeadm", "kubelet", "kubectl"];

/// The control-plane binaries whose image tars (`<name>.tar` + `<name>.docker_tag`) the
/// server tarball carries in `kubernetes/server/bin/`.
pub const SERVER_IMAGES: &[&str] = &[
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
];

/// A digest file published beside a release file (`kubeadm.sha256` beside `kubeadm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestKind {
    Sha512,
    Sha256,
    Sha1,
}

impl DigestKind {
    /// The file name suffix, without the dot.
    pub fn ext(self) -> &'static str {
        match self {
            DigestKind::Sha512 => "sha512",
            DigestKind::Sha256 => "sha256",
            DigestKind::Sha1 => "sha1",
        }
    }

    /// Length of the hex digest.
    pub fn hex_len(self) -> usize {
        match self {
            DigestKind::Sha512 => 128,
            DigestKind::Sha256 => 64,
            DigestKind::Sha1 => 40,
        }
    }
}

impl fmt::Display for DigestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DigestKind::Sha512 => "SHA-512",
            DigestKind::Sha256 => "SHA-256",
            DigestKind::Sha1 => "SHA-1",
        })
    }
}

/// The digest files a release is verified with, strongest first. `.sha1` (and `.md5`) exist
/// since 1.0, `.sha512` from 1.12 (kubernetes/release#630), `.sha256` from 1.16. A release
/// that publishes a SHA-2 digest is never checked with a weaker one (a mirror that drops
/// `.sha512` does not get SHA-1 checks instead); MD5 is never used.
pub fn published_digests(v: &KubeVersion) -> &'static [DigestKind] {
    match v.minor {
        16.. => &[DigestKind::Sha512, DigestKind::Sha256],
        12..=15 => &[DigestKind::Sha512],
        _ => &[DigestKind::Sha1],
    }
}

/// The test tarball's name: one all-platform tarball up to 1.13, per platform from 1.14.
pub fn test_tarball(v: &KubeVersion) -> &'static str {
    if v.minor >= 14 {
        "kubernetes-test-linux-amd64.tar.gz"
    } else {
        "kubernetes-test.tar.gz"
    }
}

pub const SERVER_TARBALL: &str = "kubernetes-server-linux-amd64.tar.gz";

/// A release bucket base URL, e.g. `https://dl.k8s.io` or `http://127.0.0.1:8080/mirror`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    base: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("failed to read release URL {0:?}: expected http://HOST[:PORT][/PATH] or https://..., without user or password (they would be logged)")]
pub struct BucketError(pub String);

impl Bucket {
    pub fn new(base: &str) -> Result<Bucket, BucketError> {
        let b = base.trim().trim_end_matches('/');
        let rest = b
            .strip_prefix("http://")
            .or_else(|| b.strip_prefix("https://"))
            .ok_or_else(|| BucketError(base.to_string()))?;
        let authority = rest.split('/').next().unwrap_or("");
        if rest.is_empty()
            || rest.starts_with('/')
            || rest.contains(char::is_whitespace)
            || authority.contains('@')
        {
            return Err(BucketError(base.to_string()));
        }
        Ok(Bucket { base: b.into() })
    }

    /// The public bucket, [`DEFAULT_RELEASE_URL`].
    pub fn default_bucket() -> Bucket {
        Bucket {
            base: DEFAULT_RELEASE_URL.into(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `release/<marker>.txt`: one line holding a version.
    pub fn marker_url(&self, marker: &str) -> String {
        format!("{}/release/{marker}.txt", self.base)
    }

    fn release_dir(&self, v: &str) -> String {
        format!("{}/release/{v}", self.base)
    }

    /// A node binary, e.g. `release/v1.20.2/bin/linux/amd64/kubeadm`.
    pub fn binary_url(&self, v: &str, name: &str) -> String {
        format!("{}/bin/linux/amd64/{name}", self.release_dir(v))
    }

    pub fn server_tarball_url(&self, v: &str) -> String {
        format!("{}/{SERVER_TARBALL}", self.release_dir(v))
    }

    pub fn test_tarball_url(&self, v: &KubeVersion, raw: &str) -> String {
        format!("{}/{}", self.release_dir(raw), test_tarball(v))
    }
}

/// The digest file of `url`.
pub fn digest_url(url: &str, kind: DigestKind) -> String {
    format!("{url}.{}", kind.ext())
}

/// Parses a digest file: the hex digest, optionally followed by a file name
/// (`sha256sum` output). Lowercased; refuses anything that is not `kind`'s length in hex.
pub fn parse_digest(kind: DigestKind, body: &str) -> Option<String> {
    let d = body.split_whitespace().next()?.to_ascii_lowercase();
    (d.len() == kind.hex_len() && d.bytes().all(|b| b.is_ascii_hexdigit())).then_some(d)
}

/// A marker file's version (`v1.20.2`, or a CI build such as `v1.21.0-rc.0.12+abcdef`).
pub fn parse_marker(body: &str) -> Option<(String, KubeVersion)> {
    let raw = body.lines().next()?.trim();
    let v: KubeVersion = raw.parse().ok()?;
    (raw.starts_with('v') && v.patch.is_some()).then(|| (raw.to_string(), v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> KubeVersion {
        s.parse().unwrap()
    }

    #[test]
    fn release_1_6_resolves_against_a_mirror_base() {
        let b = Bucket::new("http://127.0.0.1:8099/k8s/").unwrap();
        let r = "v1.6.13";
        assert_eq!(
            b.binary_url(r, "kubeadm"),
            "http://127.0.0.1:8099/k8s/release/v1.6.13/bin/linux/amd64/kubeadm"
        );
        assert_eq!(
            b.server_tarball_url(r),
            "http://127.0.0.1:8099/k8s/release/v1.6.13/kubernetes-server-linux-amd64.tar.gz"
        );
        // One all-platform test tarball in 1.6.
        assert_eq!(
            b.test_tarball_url(&v(r), r),
            "http://127.0.0.1:8099/k8s/release/v1.6.13/kubernetes-test.tar.gz"
        );
        // v1.6.13 publishes .sha1 (and .md5) only: SHA-1 is the strongest it has.
        assert_eq!(published_digests(&v(r)), &[DigestKind::Sha1]);
        assert_eq!(
            digest_url(&b.binary_url(r, "kubelet"), DigestKind::Sha1),
            "http://127.0.0.1:8099/k8s/release/v1.6.13/bin/linux/amd64/kubelet.sha1"
        );
        assert_eq!(
            b.marker_url("stable-1.6"),
            "http://127.0.0.1:8099/k8s/release/stable-1.6.txt"
        );
    }

    #[test]
    fn digests_follow_the_era() {
        assert_eq!(published_digests(&v("v1.12.0")), &[DigestKind::Sha512]);
        assert_eq!(published_digests(&v("v1.15.12")), &[DigestKind::Sha512]);
        assert_eq!(
            published_digests(&v("v1.16.0")),
            &[DigestKind::Sha512, DigestKind::Sha256]
        );
        assert_eq!(published_digests(&v("v1.11.10")), &[DigestKind::Sha1]);
        // No era with a SHA-2 digest falls back to SHA-1.
        for m in 12..40 {
            let k = published_digests(&KubeVersion {
                major: 1,
                minor: m,
                patch: Some(0),
            });
            assert!(!k.contains(&DigestKind::Sha1), "1.{m}: {k:?}");
        }
        assert_eq!(
            test_tarball(&v("v1.20.2")),
            "kubernetes-test-linux-amd64.tar.gz"
        );
    }

    #[test]
    fn default_bucket_urls() {
        let b = Bucket::new(DEFAULT_RELEASE_URL).unwrap();
        assert_eq!(
            b.binary_url("v1.20.2", "kubectl"),
            "https://dl.k8s.io/release/v1.20.2/bin/linux/amd64/kubectl"
        );
        assert_eq!(
            b.marker_url("latest"),
            "https://dl.k8s.io/release/latest.txt"
        );
    }

    #[test]
    fn bad_bases_are_refused() {
        for bad in [
            "",
            "dl.k8s.io",
            "ftp://x",
            "http://",
            "http:///x",
            "http://a b",
            "https://user:token@dl.example.com",
        ] {
            assert!(Bucket::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn digest_files_parse_with_or_without_a_name() {
        let h = "a".repeat(64);
        assert_eq!(parse_digest(DigestKind::Sha256, &h), Some(h.clone()));
        assert_eq!(
            parse_digest(
                DigestKind::Sha256,
                &format!("{}  kubeadm\n", h.to_uppercase())
            ),
            Some(h.clone())
        );
        assert_eq!(parse_digest(DigestKind::Sha512, &h), None);
        assert_eq!(
            parse_digest(DigestKind::Sha256, "<html>not found</html>"),
            None
        );
        assert_eq!(parse_digest(DigestKind::Sha1, ""), None);
    }

    #[test]
    fn markers_hold_one_fixed_version() {
        assert_eq!(
            parse_marker("v1.20.2\n"),
            Some(("v1.20.2".into(), v("v1.20.2")))
        );
        assert_eq!(
            parse_marker("v1.21.0-rc.0.12+abcdef").map(|m| m.1),
            Some(v("v1.21.0"))
        );
        assert_eq!(parse_marker("<html>"), None);
        assert_eq!(parse_marker("1.20"), None);
    }
}
