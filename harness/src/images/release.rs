//! `source: release`: a release from the bucket. Node binaries one by one, the server tarball
//! (control-plane binaries and their image tars) and the test tarball (e2e.test, ginkgo), each
//! verified against its published digest. What they unpack into is cached by those digests.

use super::{io, key, BuildError};
use crate::download::{DownloadError, Downloader, Fetched};
use crate::process::{Cmd, Runner};
use crate::release::bucket::{self, published_digests, Bucket, NODE_BINARIES, SERVER_IMAGES};
use crate::release::{era, KubeVersion};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Which release to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    Version(String),
    Marker(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("failed to resolve release marker {marker}")]
    Marker {
        marker: String,
        #[source]
        source: DownloadError,
    },
    #[error("failed to resolve release marker {marker}: {url} holds {body:?}, not a version")]
    BadMarker {
        marker: String,
        url: String,
        body: String,
    },
    #[error("failed to fetch Kubernetes {version}")]
    Download {
        version: String,
        #[source]
        source: DownloadError,
    },
    #[error("failed to unpack {tarball}: it has no {entry}")]
    MissingEntry { tarball: PathBuf, entry: String },
    #[error("failed to unpack {tarball}: {entry} is not a regular file")]
    NotAFile { tarball: PathBuf, entry: String },
    #[error("failed to read the Kubernetes version {raw:?}")]
    BadVersion {
        raw: String,
        #[source]
        source: crate::release::version::VersionError,
    },
    #[error("failed to fetch Kubernetes {raw}: a release download needs a fixed version such as v1.20.2, or a marker")]
    NoPatch { raw: String },
    #[error("failed to unpack {tarball}")]
    Unpack {
        tarball: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A release, unpacked.
#[derive(Debug, Clone)]
pub struct Unpacked {
    pub raw: String,
    pub version: KubeVersion,
    /// kubeadm, kubelet, kubectl, the control-plane binaries, e2e.test and ginkgo.
    pub bin_dir: PathBuf,
    /// `(component, image tar)` from the server tarball.
    pub image_tars: Vec<(String, PathBuf)>,
    /// The cache key of everything above (the digests it was verified against).
    pub key: String,
}

/// Resolves a marker (`stable-1.20`) to the version it holds.
pub async fn resolve(
    dl: &Downloader,
    b: &Bucket,
    wanted: &Wanted,
) -> Result<(String, KubeVersion), BuildError> {
    match wanted {
        Wanted::Version(raw) => {
            let v: KubeVersion = raw.parse().map_err(|source| {
                release_err(ReleaseError::BadVersion {
                    raw: raw.clone(),
                    source,
                })
            })?;
            if v.patch.is_none() {
                return Err(release_err(ReleaseError::NoPatch { raw: raw.clone() }));
            }
            Ok((raw.clone(), v))
        }
        Wanted::Marker(m) => {
            let url = b.marker_url(m);
            let body = dl.text(&url).await.map_err(|source| {
                release_err(ReleaseError::Marker {
                    marker: m.clone(),
                    source,
                })
            })?;
            bucket::parse_marker(&body).ok_or_else(|| {
                release_err(ReleaseError::BadMarker {
                    marker: m.clone(),
                    url,
                    body: body.chars().take(80).collect(),
                })
            })
        }
    }
}

fn download_err(raw: &str) -> impl FnOnce(DownloadError) -> BuildError + '_ {
    move |source| {
        release_err(ReleaseError::Download {
            version: raw.to_string(),
            source,
        })
    }
}

/// Downloads and unpacks a release into `<cache>/release/<version>-<key>/`.
pub async fn fetch(
    dl: &Downloader,
    b: &Bucket,
    raw: &str,
    v: KubeVersion,
    cache: &Path,
    note: &(dyn Fn(String) + Sync),
) -> Result<Unpacked, BuildError> {
    let kinds = published_digests(&v);
    let mut got: Vec<(String, Fetched)> = Vec::new();
    for name in NODE_BINARIES {
        let f = dl
            .file(&b.binary_url(raw, name), name, kinds)
            .await
            .map_err(download_err(raw))?;
        got.push((name.to_string(), f));
    }
    let server = dl
        .file(&b.server_tarball_url(raw), bucket::SERVER_TARBALL, kinds)
        .await
        .map_err(download_err(raw))?;
    let test_name = bucket::test_tarball(&v);
    let test = dl
        .file(&b.test_tarball_url(&v, raw), test_name, kinds)
        .await
        .map_err(download_err(raw))?;
    let used = got
        .iter()
        .map(|(_, f)| f.kind)
        .chain([server.kind, test.kind])
        .map(|k| k.to_string())
        .collect::<std::collections::BTreeSet<_>>();
    note(format!(
        "release {raw}: {} file(s) verified with {}, {} downloaded",
        got.len() + 2,
        used.into_iter().collect::<Vec<_>>().join(" and "),
        got.iter()
            .map(|(_, f)| f)
            .chain([&server, &test])
            .filter(|f| f.downloaded)
            .count()
    ));
    let digests: Vec<&str> = got
        .iter()
        .map(|(_, f)| f.digest.as_str())
        .chain([server.digest.as_str(), test.digest.as_str()])
        .collect();
    let k = key(&digests.iter().map(|d| d.as_bytes()).collect::<Vec<_>>());
    let out = cache
        .join("release")
        .join(format!("{}-{k}", era::image_tag(raw)));
    let bin_dir = out.join("bin");
    let images_dir = out.join("images");
    let image_tars: Vec<(String, PathBuf)> = SERVER_IMAGES
        .iter()
        .map(|c| (c.to_string(), images_dir.join(format!("{c}.tar"))))
        .collect();
    if out.join(".done").is_file() {
        note(format!(
            "release {raw}: unpacked before ({})",
            out.display()
        ));
    } else {
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&bin_dir).map_err(io(&bin_dir))?;
        std::fs::create_dir_all(&images_dir).map_err(io(&images_dir))?;
        for (name, f) in &got {
            install(&f.path, &bin_dir.join(name))?;
        }
        let mut wanted: Vec<(String, PathBuf)> = Vec::new();
        for c in SERVER_IMAGES {
            wanted.push((format!("kubernetes/server/bin/{c}"), bin_dir.join(c)));
            wanted.push((
                format!("kubernetes/server/bin/{c}.tar"),
                images_dir.join(format!("{c}.tar")),
            ));
        }
        unpack(&server.path, &wanted)?;
        let test_prefix = if v.minor >= 14 {
            "kubernetes/test/bin"
        } else {
            "kubernetes/platforms/linux/amd64"
        };
        unpack(
            &test.path,
            &[
                (format!("{test_prefix}/e2e.test"), bin_dir.join("e2e.test")),
                (format!("{test_prefix}/ginkgo"), bin_dir.join("ginkgo")),
            ],
        )?;
        std::fs::write(out.join(".done"), &k).map_err(io(&out))?;
        note(format!("release {raw}: unpacked into {}", out.display()));
    }
    Ok(Unpacked {
        raw: raw.to_string(),
        version: v,
        bin_dir,
        image_tars,
        key: k,
    })
}

fn install(from: &Path, to: &Path) -> Result<(), BuildError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::copy(from, to).map_err(io(to))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).map_err(io(to))
}

/// Extracts the named entries of a `.tar.gz` into the given paths (each made executable
/// when the tarball says so); every entry must be there.
fn unpack(tarball: &Path, wanted: &[(String, PathBuf)]) -> Result<(), BuildError> {
    let err = |source| {
        release_err(ReleaseError::Unpack {
            tarball: tarball.to_path_buf(),
            source,
        })
    };
    let f = std::fs::File::open(tarball).map_err(err)?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut found = vec![false; wanted.len()];
    for entry in ar.entries().map_err(err)? {
        let mut entry = entry.map_err(err)?;
        let path = entry.path().map_err(err)?.to_string_lossy().to_string();
        let path = path.trim_start_matches("./");
        if let Some(i) = wanted.iter().position(|(w, _)| w == path) {
            if !entry.header().entry_type().is_file() {
                return Err(release_err(ReleaseError::NotAFile {
                    tarball: tarball.to_path_buf(),
                    entry: path.to_string(),
                }));
            }
            let to = &wanted[i].1;
            let partial = to.with_extension("partial");
            entry.unpack(&partial).map_err(err)?;
            std::fs::rename(&partial, to).map_err(io(to))?;
            found[i] = true;
        } else {
            // Drain what is skipped so the stream stays in step.
            std::io::copy(&mut entry.by_ref().take(u64::MAX), &mut std::io::sink()).map_err(err)?;
        }
    }
    if let Some(i) = found.iter().position(|f| !f) {
        return Err(release_err(ReleaseError::MissingEntry {
            tarball: tarball.to_path_buf(),
            entry: wanted[i].0.clone(),
        }));
    }
    Ok(())
}

/// Loads the server tarball's image tars into docker, names each as kubeadm `repository`
/// pulls it, and saves them into one tarball for the nodes. Cached by the release's key.
pub async fn preload_tar(
    rel: &Unpacked,
    repository: &str,
    cache: &Path,
    r: &Runner,
    note: &(dyn Fn(String) + Sync),
) -> Result<(PathBuf, Vec<String>), BuildError> {
    let k = key(&[rel.key.as_bytes(), repository.as_bytes()]);
    let dir = cache.join("images").join(format!("release-{k}"));
    let tar = dir.join("images.tar");
    let names: Vec<String> = rel
        .image_tars
        .iter()
        .map(|(c, _)| era::control_plane_image(&rel.version, &rel.raw, repository, c))
        .collect();
    if dir.join(".done").is_file() {
        note(format!("control-plane images: cached ({})", tar.display()));
        return Ok((tar, names));
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    for ((c, t), name) in rel.image_tars.iter().zip(&names) {
        let out = r
            .output(Cmd::new("docker").args(["load", "-i", &t.display().to_string()]))
            .await
            .map_err(|source| BuildError::Stage {
                stage: "load release images",
                source,
            })?;
        // "Loaded image: k8s.gcr.io/kube-apiserver-amd64:v1.20.2" (the tag the release wrote).
        let loaded = out
            .lines()
            .filter_map(|l| l.strip_prefix("Loaded image: "))
            .next_back()
            .ok_or_else(|| {
                release_err(ReleaseError::MissingEntry {
                    tarball: t.clone(),
                    entry: format!("a tagged image for {c} (docker load said {out:?})"),
                })
            })?;
        if loaded != name {
            r.run(Cmd::new("docker").args(["tag", loaded, name]))
                .await
                .map_err(|source| BuildError::Stage {
                    stage: "tag release images",
                    source,
                })?;
        }
    }
    let partial = dir.join("images.tar.partial");
    let mut save = Cmd::new("docker").args(["save", "-o", &partial.display().to_string()]);
    for n in &names {
        save = save.arg(n);
    }
    r.run(save).await.map_err(|source| BuildError::Stage {
        stage: "save release images",
        source,
    })?;
    std::fs::rename(&partial, &tar).map_err(io(&tar))?;
    std::fs::write(dir.join(".done"), &k).map_err(io(&dir))?;
    // The tarball is what nodes load; the host's docker keeps nothing unlabelled of ours.
    let mut rmi = Cmd::new("docker").arg("rmi");
    for n in &names {
        rmi = rmi.arg(n);
    }
    let _ = r.run(rmi).await;
    note(format!(
        "control-plane images from the server tarball, as kubeadm pulls them: {}",
        names.join(", ")
    ));
    Ok((tar, names))
}

/// The images kubeadm of this release pulls, as `kubeadm config images list` prints them
/// (kubeadm 1.11+; older kubeadm has no such command and gets None). A 1.11+ kubeadm that
/// cannot answer is an error: guessing would pull the wrong sandbox image.
pub async fn kubeadm_images(
    kubeadm: &Path,
    raw: &str,
    v: &KubeVersion,
    repository: &str,
    r: &Runner,
) -> Result<Option<Vec<String>>, BuildError> {
    if v.minor < 11 {
        return Ok(None);
    }
    let out = r
        .output(Cmd::new(kubeadm.display().to_string()).args([
            "config",
            "images",
            "list",
            "--kubernetes-version",
            raw,
            "--image-repository",
            repository,
        ]))
        .await
        .map_err(|source| BuildError::Stage {
            stage: "kubeadm config images list",
            source,
        })?;
    Ok(Some(
        out.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
    ))
}

fn release_err(e: ReleaseError) -> BuildError {
    BuildError::Release(Box::new(e))
}

/// Writes a release-bucket layout of this machine's own build under `out`, as dl.k8s.io
/// lays a release out: `release/stable-X.Y.txt` and `latest-X.Y.txt`, the node binaries
/// with `.sha256` and `.sha512` files beside them, a server tarball whose
/// `kubernetes/server/bin/` holds the control-plane binaries and their image tars (tagged
/// `k8s.gcr.io/<name>-amd64:<tag>` with a `.docker_tag`, as 1.16+ releases do), and a test
/// tarball with e2e.test and ginkgo. Served from 127.0.0.1, it is a real bucket to prove
/// `source: release` against on a machine that cannot reach dl.k8s.io.
pub async fn write_layout(
    art: &super::KubeArtifacts,
    out: &Path,
    r: &Runner,
    note: &(dyn Fn(String) + Sync),
) -> Result<(), BuildError> {
    let raw = &art.raw_version;
    let v = art.version;
    let rel = out.join("release");
    let dir = rel.join(raw);
    let bin = dir.join("bin/linux/amd64");
    std::fs::create_dir_all(&bin).map_err(io(&bin))?;
    for name in NODE_BINARIES {
        let to = bin.join(name);
        install(&art.bin_dir.join(name), &to)?;
        publish_digests(&to)?;
    }
    // The server tarball: binaries, and each control-plane image as the release tags it.
    let stage = out.join(".stage");
    let _ = std::fs::remove_dir_all(&stage);
    let server_bin = stage.join("server/kubernetes/server/bin");
    std::fs::create_dir_all(&server_bin).map_err(io(&server_bin))?;
    for c in SERVER_IMAGES {
        install(&art.bin_dir.join(c), &server_bin.join(c))?;
        let local = art
            .images
            .iter()
            .find(|i| i.rsplit('/').next().and_then(|l| l.split(':').next()) == Some(*c))
            .ok_or_else(|| {
                release_err(ReleaseError::MissingEntry {
                    tarball: art.bin_dir.clone(),
                    entry: format!("an image of {c} in the local build"),
                })
            })?;
        let tag = era::image_tag(raw);
        let released = format!("k8s.gcr.io/{c}-amd64:{tag}");
        let stage_err = |stage: &'static str| move |source| BuildError::Stage { stage, source };
        r.run(Cmd::new("docker").args(["tag", local, &released]))
            .await
            .map_err(stage_err("tag the release images"))?;
        let tar = server_bin.join(format!("{c}.tar"));
        r.run(Cmd::new("docker").args(["save", "-o", &tar.display().to_string(), &released]))
            .await
            .map_err(stage_err("save the release images"))?;
        let _ = r.run(Cmd::new("docker").args(["rmi", &released])).await;
        std::fs::write(server_bin.join(format!("{c}.docker_tag")), &tag)
            .map_err(io(&server_bin))?;
    }
    let server = dir.join(bucket::SERVER_TARBALL);
    note(format!("writing {}", server.display()));
    tar_gz(&stage.join("server"), &server)?;
    publish_digests(&server)?;
    let test_bin = stage.join("test/kubernetes/test/bin");
    std::fs::create_dir_all(&test_bin).map_err(io(&test_bin))?;
    for t in ["e2e.test", "ginkgo"] {
        install(&art.bin_dir.join(t), &test_bin.join(t))?;
    }
    let test = dir.join(bucket::test_tarball(&v));
    note(format!("writing {}", test.display()));
    tar_gz(&stage.join("test"), &test)?;
    publish_digests(&test)?;
    let _ = std::fs::remove_dir_all(&stage);
    // As dl.k8s.io: `latest-` names the newest build of the line, `stable-` the newest
    // that is no pre-release. A marker already naming a newer version stays.
    let mut markers = vec![format!("latest-{}.{}", v.major, v.minor)];
    if !raw.contains('-') {
        markers.push(format!("stable-{}.{}", v.major, v.minor));
    }
    for marker in markers {
        let p = rel.join(format!("{marker}.txt"));
        let named = std::fs::read_to_string(&p).unwrap_or_default();
        if marker_keeps(named.trim(), raw) {
            continue;
        }
        std::fs::write(&p, format!("{raw}\n")).map_err(io(&p))?;
    }
    Ok(())
}

/// Whether a marker naming `named` stays when `raw` is laid out: it names a newer version.
pub fn marker_keeps(named: &str, raw: &str) -> bool {
    match (
        crate::release::skew::parse(named),
        crate::release::skew::parse(raw),
    ) {
        (Ok(n), Ok(r)) => n.cmp_precedence(&r) == std::cmp::Ordering::Greater,
        _ => false,
    }
}

/// `<file>.sha256` and `<file>.sha512`, each holding the hex digest as dl.k8s.io's do.
fn publish_digests(file: &Path) -> Result<(), BuildError> {
    for kind in [bucket::DigestKind::Sha256, bucket::DigestKind::Sha512] {
        let d = crate::download::file_digest(kind, file).map_err(io(file))?;
        let p = PathBuf::from(format!("{}.{}", file.display(), kind.ext()));
        std::fs::write(&p, d).map_err(io(&p))?;
    }
    Ok(())
}

/// A `.tar.gz` of everything under `dir` (paths relative to it).
fn tar_gz(dir: &Path, to: &Path) -> Result<(), BuildError> {
    let partial = to.with_extension("partial");
    let f = std::fs::File::create(&partial).map_err(io(&partial))?;
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    b.append_dir_all(".", dir).map_err(io(dir))?;
    b.into_inner()
        .and_then(|gz| gz.finish())
        .and_then(|f| f.sync_all())
        .map_err(io(&partial))?;
    std::fs::rename(&partial, to).map_err(io(to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_naming_a_newer_version_stays() {
        assert!(marker_keeps("v1.20.3-shakedown.1", "v1.20.2"));
        assert!(!marker_keeps("v1.20.2", "v1.20.3-shakedown.1"));
        assert!(!marker_keeps("", "v1.20.2"));
        // A pre-release of a version comes before it.
        assert!(!marker_keeps("v1.20.3-rc.0", "v1.20.3"));
    }
}
