//! Where e2e.test and ginkgo come from: the cluster's own build (the default), a folder the
//! user gives, or a test tarball as the release publishes it
//! (`kubernetes-test-linux-amd64.tar.gz`). A tarball is unpacked once into the cache, under
//! a key made from its content, so a second run only hashes it.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where the e2e binaries sit inside the tarballs the release has published: the
/// per-platform test tarball (1.14 and later), and the older all-platforms one.
pub const TARBALL_LAYOUTS: &[&str] = &["kubernetes/test/bin", "kubernetes/platforms/linux/amd64"];

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("failed to find {path}")]
    Missing { path: PathBuf },
    #[error("failed to find e2e.test in {path}: looked in {looked}")]
    NoE2e { path: PathBuf, looked: String },
    #[error("failed to read the test tarball {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to unpack the test tarball {path} into {dest}")]
    Unpack {
        path: PathBuf,
        dest: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The folder holding e2e.test (and ginkgo, when the source has it), and what it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct E2eBinaries {
    pub dir: PathBuf,
    pub origin: String,
}

impl E2eBinaries {
    pub fn e2e(&self) -> PathBuf {
        self.dir.join("e2e.test")
    }
    pub fn ginkgo(&self) -> PathBuf {
        self.dir.join("ginkgo")
    }
}

/// A folder with e2e.test in it, or a `.tar.gz`/`.tgz`/`.tar` test tarball unpacked under
/// `cache/e2e/<content key>`.
pub fn resolve(path: &Path, cache: &Path) -> Result<E2eBinaries, SourceError> {
    if path.is_dir() {
        return if path.join("e2e.test").is_file() {
            Ok(E2eBinaries {
                dir: path.to_path_buf(),
                origin: format!("folder {}", path.display()),
            })
        } else {
            Err(SourceError::NoE2e {
                path: path.to_path_buf(),
                looked: "the folder itself".into(),
            })
        };
    }
    if !path.is_file() {
        return Err(SourceError::Missing {
            path: path.to_path_buf(),
        });
    }
    let read = |source| SourceError::Read {
        path: path.to_path_buf(),
        source,
    };
    let key = content_key(path).map_err(read)?;
    let dest = cache.join("e2e").join(&key);
    if !dest.join(".done").is_file() {
        // Per process: two runs unpacking the same tarball never share a half-written
        // folder; the rename makes whichever finishes first the cached copy.
        let partial = dest.with_extension(format!("partial-{}", std::process::id()));
        let unpack = |source| SourceError::Unpack {
            path: path.to_path_buf(),
            dest: dest.clone(),
            source,
        };
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial).map_err(unpack)?;
        let file = std::fs::File::open(path).map_err(read)?;
        let gz = !path.to_string_lossy().ends_with(".tar");
        let reader: Box<dyn Read> = if gz {
            Box::new(flate2::read::GzDecoder::new(file))
        } else {
            Box::new(file)
        };
        // `unpack` refuses entries that would land outside `partial`.
        tar::Archive::new(reader).unpack(&partial).map_err(unpack)?;
        std::fs::write(partial.join(".done"), &key).map_err(unpack)?;
        if dest.join(".done").is_file() {
            let _ = std::fs::remove_dir_all(&partial);
        } else {
            let _ = std::fs::remove_dir_all(&dest);
            std::fs::rename(&partial, &dest).map_err(unpack)?;
        }
    }
    let dir = TARBALL_LAYOUTS
        .iter()
        .map(|l| dest.join(l))
        .find(|d| d.join("e2e.test").is_file())
        .ok_or_else(|| SourceError::NoE2e {
            path: path.to_path_buf(),
            looked: TARBALL_LAYOUTS.join(", "),
        })?;
    Ok(E2eBinaries {
        dir,
        origin: format!("test tarball {} (sha256 {key}…)", path.display()),
    })
}

/// The first 16 hex digits of the file's SHA-256.
fn content_key(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gzipped tarball with `files` (path, content) in it.
    fn tarball(at: &Path, files: &[(&str, &str)]) {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(at).unwrap(),
            flate2::Compression::fast(),
        );
        let mut b = tar::Builder::new(gz);
        for (p, content) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(content.len() as u64);
            h.set_mode(0o755);
            h.set_cksum();
            b.append_data(&mut h, p, content.as_bytes()).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
    }

    #[test]
    fn a_test_tarball_is_unpacked_once_by_content() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("kubernetes-test-linux-amd64.tar.gz");
        tarball(
            &t,
            &[
                ("kubernetes/test/bin/e2e.test", "e2e"),
                ("kubernetes/test/bin/ginkgo", "ginkgo"),
            ],
        );
        let cache = d.path().join("cache");
        let b = resolve(&t, &cache).unwrap();
        assert_eq!(std::fs::read_to_string(b.e2e()).unwrap(), "e2e");
        assert_eq!(std::fs::read_to_string(b.ginkgo()).unwrap(), "ginkgo");
        assert!(b.origin.contains("kubernetes-test-linux-amd64.tar.gz"));
        // A second resolve reuses the unpacked folder: a file added there survives.
        std::fs::write(b.dir.join("marker"), "x").unwrap();
        assert_eq!(resolve(&t, &cache).unwrap(), b);
        assert!(b.dir.join("marker").is_file());
        // Other content, other key.
        tarball(&t, &[("kubernetes/test/bin/e2e.test", "e2e v2")]);
        let b2 = resolve(&t, &cache).unwrap();
        assert_ne!(b2.dir, b.dir);
        assert_eq!(std::fs::read_to_string(b2.e2e()).unwrap(), "e2e v2");
    }

    #[test]
    fn the_old_all_platforms_layout_is_found_too() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("kubernetes-test.tar.gz");
        tarball(&t, &[("kubernetes/platforms/linux/amd64/e2e.test", "old")]);
        let b = resolve(&t, &d.path().join("cache")).unwrap();
        assert!(b.dir.ends_with("kubernetes/platforms/linux/amd64"));
    }

    #[test]
    fn bad_sources_name_the_path_and_what_was_looked_for() {
        let d = tempfile::tempdir().unwrap();
        let cache = d.path().join("cache");
        let t = d.path().join("other.tar.gz");
        tarball(&t, &[("kubernetes/server/bin/kubectl", "k")]);
        let e = resolve(&t, &cache).unwrap_err().to_string();
        assert!(
            e.contains("other.tar.gz") && e.contains("kubernetes/test/bin"),
            "{e}"
        );

        let broken = d.path().join("broken.tar.gz");
        std::fs::write(&broken, b"not a tarball").unwrap();
        let e = resolve(&broken, &cache).unwrap_err();
        assert!(matches!(e, SourceError::Unpack { .. }), "{e:?}");
        assert!(e.to_string().contains("broken.tar.gz"));

        let e = resolve(&d.path().join("nope.tar.gz"), &cache).unwrap_err();
        assert!(e.to_string().starts_with("failed to find"), "{e}");

        let empty = d.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let e = resolve(&empty, &cache).unwrap_err().to_string();
        assert!(e.contains("e2e.test") && e.contains("empty"), "{e}");
    }

    #[test]
    fn entries_cannot_escape_the_cache_folder() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("evil.tar");
        // Written by hand: the tar crate's builder refuses `..` itself. An ordinary entry
        // first, so the test knows the archive really was unpacked.
        let entry = |name: &[u8], body: u8| {
            let mut h = tar::Header::new_gnu();
            {
                let gnu = h.as_gnu_mut().unwrap();
                gnu.name[..name.len()].copy_from_slice(name);
            }
            h.set_size(1);
            h.set_mode(0o755);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            let mut bytes = h.as_bytes().to_vec();
            bytes.push(body);
            bytes.extend_from_slice(&[0; 511]);
            bytes
        };
        let mut bytes = entry(b"kubernetes/test/bin/e2e.test", b'e');
        // Unpacked into cache/e2e/<key>.partial, `../../escaped` would land in cache/.
        bytes.extend(entry(b"../../escaped", b'x'));
        bytes.extend_from_slice(&[0; 1024]);
        std::fs::write(&t, bytes).unwrap();
        let cache = d.path().join("a/b/cache");
        let found = resolve(&t, &cache).expect("the ordinary entry is unpacked");
        assert!(found.e2e().is_file());
        assert!(
            !cache.join("escaped").exists(),
            "the entry escaped into the cache folder"
        );
        assert!(!d.path().join("a/b/escaped").exists());
        assert!(!d.path().join("a/escaped").exists());
    }
}
