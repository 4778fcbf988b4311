//! Kubernetes artifacts and images, built here without any registry: binaries from Debian's
//! source package (or a folder the user gives), component images, and the node image. Each
//! stage is cached by the content of its inputs under the cache folder, so a second run
//! only checks.

pub mod load_balancer;
pub mod registry;
pub mod release;
pub mod set;
pub mod vm;

use crate::download::Downloader;
use crate::process::{Cmd, CommandError, Runner};
use crate::release::bucket::Bucket;
use crate::release::mirror::Mirror;
use crate::release::{era, KubeVersion};
use set::{DnsAddon, ImageSet};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const IMAGE_REPO: &str = "shakedown.local";
pub const ETCD_TAG: &str = "3.4.23-shakedown";
pub const PAUSE_TAG: &str = "3.4.1";
pub const AGNHOST_TAG: &str = "2.21";
pub const BUSYBOX_TAG: &str = "1.29";

/// Binaries every node needs.
pub const NODE_BINARIES: &[&str] = &["kubeadm", "kubelet", "kubectl"];

/// Binaries the images built here need (without them every image is pulled instead).
pub const IMAGE_BINARIES: &[&str] = &[
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
    "pause",
    "agnhost",
];

/// What a job's cluster is made from.
#[derive(Debug, Clone)]
pub struct KubeArtifacts {
    pub version: KubeVersion,
    /// The runtime the node image carries for kubelet.
    pub runtime: era::Runtime,
    /// The version as released, e.g. `v1.21.0-rc.0` (tags and kubeadm's config use it).
    pub raw_version: String,
    pub bin_dir: PathBuf,
    /// Where images come from and what they are called.
    pub image_set: ImageSet,
    /// Every image preloaded into nodes, e.g. `shakedown.local/agnhost:2.21`.
    pub images: Vec<String>,
    pub node_image: String,
    /// The Kubernetes source tree, when built from source (conformance reads its test data).
    pub source_tree: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub enum BinarySource {
    DebianSource {
        debian_version: String,
    },
    Folder(PathBuf),
    /// A release from the bucket (dl.k8s.io or a mirror), verified against its digests.
    Release {
        bucket: Bucket,
        wanted: release::Wanted,
    },
}

#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub root: PathBuf,
    pub cache: PathBuf,
    pub version: KubeVersion,
    /// The version string a source build stamps into its binaries and image tags when it
    /// is not `version` itself, e.g. `v1.20.3-shakedown.1` for the same tree built again.
    pub raw_version: Option<String>,
    pub binaries: BinarySource,
    /// Use this node image as it is.
    pub node_image: Option<String>,
    /// The nodes' container runtime (docker: a node image with dockerd for dockershim).
    pub runtime: era::Runtime,
    /// Registry mirrors: with any, every image not in a release's server tarball is pulled
    /// through them under its upstream name instead of preloaded.
    pub mirrors: Vec<Mirror>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("failed to reach the docker daemon (run `shakedown host setup`, or start dockerd)")]
    NoDocker(#[source] CommandError),
    #[error("failed to reach the docker daemon{}: `docker info` had no answer within {after:?} (a hung dockerd, or DOCKER_HOST pointing at something that is not one)", host.as_ref().map(|h| format!(" at {h}")).unwrap_or_default())]
    DockerHung {
        host: Option<String>,
        after: Duration,
    },
    #[error("failed to find apt-get: building from Debian's source package needs a Debian host")]
    NoApt,
    #[error("not enough disk space in {path}: {free_gib} GiB free, {need_gib} GiB needed")]
    Disk {
        path: PathBuf,
        free_gib: u64,
        need_gib: u64,
    },
    #[error("failed to obtain Kubernetes from the release bucket")]
    Release(#[source] Box<release::ReleaseError>),
    #[error(
        "failed to read the version of {kubeadm}: `kubeadm version -o short` printed {output:?}"
    )]
    BinaryVersion { kubeadm: PathBuf, output: String },
    #[error("failed to use binaries in {dir}: missing {missing}")]
    MissingBinaries { dir: PathBuf, missing: String },
    #[error("failed to run stage {stage}")]
    Stage {
        stage: &'static str,
        #[source]
        source: CommandError,
    },
    #[error("failed to reach the registry at {url} after 50 tries: {last}")]
    RegistryDown { url: String, last: String },
    #[error("{what}")]
    BridgeAddress { what: String },
    #[error("failed to prepare {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The cache key of a stage: a hash over its recipe and inputs.
pub fn key(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let d = h.finalize();
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn read(path: &Path) -> Result<Vec<u8>, BuildError> {
    std::fs::read(path).map_err(io(path))
}

/// All files under `dir`, in order, as (relative path, content) for hashing.
fn tree_bytes(dir: &Path) -> Result<Vec<u8>, BuildError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(io(&d))? {
            let p = e.map_err(io(&d))?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    for f in files {
        out.extend_from_slice(
            f.strip_prefix(dir)
                .unwrap_or(&f)
                .to_string_lossy()
                .as_bytes(),
        );
        out.extend_from_slice(&read(&f)?);
    }
    Ok(out)
}

/// Checks the host can build: docker answers, enough disk, apt for source builds.
pub async fn preflight(req: &BuildRequest, r: &Runner) -> Result<(), BuildError> {
    docker_answers(r, DAEMON_ANSWERS_WITHIN).await?;
    std::fs::create_dir_all(&req.cache).map_err(io(&req.cache))?;
    let need_gib = match req.binaries {
        BinarySource::DebianSource { .. } => 12,
        _ => 4,
    };
    if let Ok(st) = nix::sys::statvfs::statvfs(&req.cache) {
        // fsblkcnt_t and c_ulong are u64 here but narrower on other targets.
        #[allow(clippy::unnecessary_cast)]
        let free_gib = st.blocks_available() as u64 * st.fragment_size() as u64 / (1 << 30);
        if free_gib < need_gib {
            return Err(BuildError::Disk {
                path: req.cache.clone(),
                free_gib,
                need_gib,
            });
        }
    }
    if matches!(req.binaries, BinarySource::DebianSource { .. })
        && crate::process::on_path("apt-get").is_none()
    {
        return Err(BuildError::NoApt);
    }
    Ok(())
}

/// How long the daemon may take to answer `docker info` before a build gives up on it: a
/// hung daemon fails the step in seconds, not at its deadline.
pub const DAEMON_ANSWERS_WITHIN: Duration = Duration::from_secs(15);

/// `docker info` answers within `within`; the command is stopped (its process group
/// signalled) when it does not.
pub async fn docker_answers(r: &Runner, within: Duration) -> Result<(), BuildError> {
    let bounded = Runner {
        cancel: r.cancel.child_token(),
        ..r.clone()
    };
    let timer = {
        let token = bounded.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(within).await;
            token.cancel();
        })
    };
    let res = bounded
        .run(Cmd::new("docker").args(["info", "--format", "{{.ServerVersion}}"]))
        .await;
    timer.abort();
    match res {
        Ok(_) => Ok(()),
        // Stopped from outside (Ctrl-C, the step's deadline): not the daemon's fault.
        Err(e) if r.cancel.is_cancelled() => Err(BuildError::Stage {
            stage: "the docker daemon check",
            source: e,
        }),
        Err(_) if bounded.cancel.is_cancelled() => Err(BuildError::DockerHung {
            host: std::env::var("DOCKER_HOST").ok(),
            after: within,
        }),
        Err(e) => Err(BuildError::NoDocker(e)),
    }
}

/// Runs every stage that is not cached yet; `note` hears what each stage is doing.
pub async fn build(
    req: &BuildRequest,
    r: &Runner,
    note: &(dyn Fn(String) + Sync),
) -> Result<KubeArtifacts, BuildError> {
    // One build at a time per cache: a second run waits here instead of racing.
    let _lock = crate::paths::CacheLock::acquire(&req.cache, &r.cancel, note)
        .await
        .map_err(io(&req.cache))?;
    // A download needs no docker: an unreachable bucket is reported before the host is.
    let downloads = matches!(req.binaries, BinarySource::Release { .. });
    if !downloads {
        preflight(req, r).await?;
    }
    let scripts = req.root.join("harness/scripts");
    let version = req
        .raw_version
        .clone()
        .unwrap_or_else(|| req.version.to_string());

    // Stage 1: binaries.
    let mut source_tree = None;
    let mut unpacked = None;
    let (bin_dir, bin_key) = match &req.binaries {
        BinarySource::Release { bucket, wanted } => {
            let dl = Downloader::new(&req.cache, r.log.clone(), r.cancel.clone());
            // This build holds the cache lock: a partial file now is a killed run's.
            dl.clear_partials();
            let (raw, v) = release::resolve(&dl, bucket, wanted).await?;
            note(format!(
                "release: Kubernetes {raw} from {}{}",
                bucket.base(),
                match wanted {
                    release::Wanted::Marker(m) => format!(" (marker {m})"),
                    release::Wanted::Version(_) => String::new(),
                }
            ));
            let u = release::fetch(&dl, bucket, &raw, v, &req.cache, note).await?;
            let out = (u.bin_dir.clone(), u.key.clone());
            unpacked = Some(u);
            out
        }
        BinarySource::Folder(dir) => {
            let mut ident = Vec::new();
            for b in NODE_BINARIES.iter().chain(IMAGE_BINARIES) {
                let p = dir.join(b);
                let md = std::fs::metadata(&p).ok();
                ident.extend_from_slice(
                    format!(
                        "{b}:{:?}:{:?}",
                        md.as_ref().map(|m| m.len()),
                        md.and_then(|m| m.modified().ok())
                    )
                    .as_bytes(),
                );
            }
            (
                dir.clone(),
                key(&[b"folder", dir.to_string_lossy().as_bytes(), &ident]),
            )
        }
        BinarySource::DebianSource { debian_version } => {
            let script = scripts.join("build-kubernetes.sh");
            let go = r
                .output(Cmd::new("go").arg("version"))
                .await
                .unwrap_or_default();
            let k = key(&[
                &read(&script)?,
                debian_version.as_bytes(),
                version.as_bytes(),
                go.as_bytes(),
            ]);
            let out = req.cache.join("kubernetes").join(&k);
            if out.join(".done").is_file() {
                note(format!("binaries: cached ({})", out.display()));
            } else {
                note(format!("binaries: building Kubernetes {version} from Debian source {debian_version} (cold: about 10 minutes)"));
                let _ = std::fs::remove_dir_all(&out);
                r.run(
                    Cmd::new("bash")
                        .arg(script.display().to_string())
                        .env("DEB_VERSION", debian_version)
                        .env("KUBE_VERSION", &version)
                        .env("SRC_CACHE", req.cache.join("src").display().to_string())
                        .env("OUT", out.display().to_string()),
                )
                .await
                .map_err(|source| BuildError::Stage {
                    stage: "binaries",
                    source,
                })?;
                std::fs::write(out.join(".done"), &k).map_err(io(&out))?;
            }
            source_tree = Some(
                req.cache
                    .join("src")
                    .join(format!("kubernetes-{debian_version}")),
            );
            (out.join("bin"), k)
        }
    };
    let missing: Vec<&str> = NODE_BINARIES
        .iter()
        .copied()
        .filter(|b| !bin_dir.join(b).is_file())
        .collect();
    if !missing.is_empty() {
        return Err(BuildError::MissingBinaries {
            dir: bin_dir,
            missing: missing.join(", "),
        });
    }
    // The version is the binaries' own: a folder or a marker may hold another than asked.
    let (raw_version, version_parsed) = match &unpacked {
        Some(u) => (u.raw.clone(), u.version),
        None if matches!(req.binaries, BinarySource::Folder(_)) => {
            binaries_version(&bin_dir.join("kubeadm"), r)
                .await
                .unwrap_or_else(|| (version.clone(), req.version))
        }
        None => (version.clone(), req.version),
    };
    let version = raw_version.clone();
    if downloads {
        preflight(req, r).await?;
    }

    // Stage 2: images. Preloaded from this machine's build, or pulled under their upstream
    // names (with mirrors, or for a release whose control plane comes in its server tarball).
    let can_build = IMAGE_BINARIES.iter().all(|b| bin_dir.join(b).is_file());
    let pulled = unpacked.is_some() || !req.mirrors.is_empty() || !can_build;
    let work = req.cache.join("work");
    let (image_set, images) = if pulled {
        if !can_build && unpacked.is_none() && req.mirrors.is_empty() {
            note(format!(
                "images: {} has no {}: every image is pulled from its registry",
                bin_dir.display(),
                IMAGE_BINARIES
                    .iter()
                    .filter(|b| !bin_dir.join(b).is_file())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        pulled_set(
            req,
            r,
            note,
            &bin_dir,
            &raw_version,
            version_parsed,
            unpacked.as_ref(),
        )
        .await?
    } else {
        let (tar, images) = local_images(
            req,
            r,
            note,
            &scripts,
            &bin_dir,
            &bin_key,
            &version,
            source_tree.as_deref(),
        )
        .await?;
        (ImageSet::local(tar), images)
    };
    // Stage 3: the node image.
    let node_image = match &req.node_image {
        Some(img) => {
            note(format!("node image: using {img} as given"));
            img.clone()
        }
        None => {
            let node_script = scripts.join("build-node-image.sh");
            let assets = req.root.join("harness/assets/node");
            let runtime = req.runtime.to_string();
            let k = key(&[
                &read(&node_script)?,
                &tree_bytes(&assets)?,
                bin_key.as_bytes(),
                runtime.as_bytes(),
            ]);
            let flavour = match req.runtime {
                era::Runtime::Containerd => String::new(),
                era::Runtime::Docker => "-dockershim".into(),
            };
            let tag = format!(
                "{IMAGE_REPO}/node:{}{flavour}-{k}",
                era::image_tag(&version)
            );
            let present = r
                .run(Cmd::new("docker").args(["image", "inspect", "--format", "{{.Id}}", &tag]))
                .await
                .is_ok();
            if present {
                note(format!("node image: cached ({tag})"));
            } else {
                note(format!(
                    "node image: building {tag} (debootstrap rootfs is cached)"
                ));
                r.run(
                    Cmd::new("bash")
                        .arg(node_script.display().to_string())
                        .env("BIN_DIR", bin_dir.display().to_string())
                        .env("KUBE_VERSION", &version)
                        .env("IMAGE_REPO", IMAGE_REPO)
                        .env("WORK", work.display().to_string())
                        .env("NODE_TAG", &tag)
                        .env("RUNTIME", &runtime),
                )
                .await
                .map_err(|source| BuildError::Stage {
                    stage: "node image",
                    source,
                })?;
            }
            tag
        }
    };
    Ok(KubeArtifacts {
        version: version_parsed,
        runtime: req.runtime,
        raw_version,
        bin_dir,
        image_set,
        images,
        node_image,
        source_tree,
    })
}

/// The version `kubeadm version -o short` reports (kubeadm 1.8+; None before, or when it
/// cannot run here).
async fn binaries_version(kubeadm: &Path, r: &Runner) -> Option<(String, KubeVersion)> {
    let out = r
        .output(Cmd::new(kubeadm.display().to_string()).args(["version", "-o", "short"]))
        .await
        .ok()?;
    let raw = out.lines().next()?.trim().to_string();
    let v = raw.parse().ok()?;
    Some((raw, v))
}

/// Stage 2 for a preloaded cluster: the component images built here, saved into one tarball.
#[allow(clippy::too_many_arguments)]
async fn local_images(
    req: &BuildRequest,
    r: &Runner,
    note: &(dyn Fn(String) + Sync),
    scripts: &Path,
    bin_dir: &Path,
    bin_key: &str,
    version: &str,
    source_tree: Option<&Path>,
) -> Result<(PathBuf, Vec<String>), BuildError> {
    let work = req.cache.join("work");
    let images_script = scripts.join("build-images.sh");
    let k = key(&[
        &read(&images_script)?,
        &read(&scripts.join("image-lib.sh"))?,
        bin_key.as_bytes(),
    ]);
    let images_dir = req.cache.join("images").join(&k);
    let images_tar = images_dir.join("images.tar");
    if images_dir.join(".done").is_file() && images_tar.is_file() {
        note(format!("images: cached ({})", images_tar.display()));
    } else {
        note("images: building component images (kube-apiserver, etcd, pause, kube-proxy, agnhost, busybox, ...)".into());
        std::fs::create_dir_all(&images_dir).map_err(io(&images_dir))?;
        r.run(
            Cmd::new("bash")
                .arg(images_script.display().to_string())
                .env("BIN_DIR", bin_dir.display().to_string())
                .env("KUBE_VERSION", version)
                .env("IMAGE_REPO", IMAGE_REPO)
                .env("ETCD_TAG", ETCD_TAG)
                .env("PAUSE_TAG", PAUSE_TAG)
                .env("AGNHOST_TAG", AGNHOST_TAG)
                .env("BUSYBOX_TAG", BUSYBOX_TAG)
                .env(
                    "AGNHOST_TLS_DIR",
                    source_tree
                        .map(|t| t.join("test/images/agnhost/porter").display().to_string())
                        .unwrap_or_default(),
                )
                .env("WORK", work.display().to_string()),
        )
        .await
        .map_err(|source| BuildError::Stage {
            stage: "images",
            source,
        })?;
        for f in ["images.tar", "images.txt"] {
            std::fs::rename(work.join(f), images_dir.join(f)).map_err(io(&images_dir))?;
        }
        std::fs::write(images_dir.join(".done"), &k).map_err(io(&images_dir))?;
    }
    let images = std::fs::read_to_string(images_dir.join("images.txt"))
        .map_err(io(&images_dir))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    Ok((images_tar, images))
}

/// Stage 2 for a cluster that pulls: the names kubeadm of this release pulls, a release's
/// control-plane images preloaded from its server tarball, and whether the DNS addon's
/// image can be pulled at all (a mirror that lacks it says so before kubeadm waits on it).
#[allow(clippy::too_many_arguments)]
async fn pulled_set(
    req: &BuildRequest,
    r: &Runner,
    note: &(dyn Fn(String) + Sync),
    bin_dir: &Path,
    raw: &str,
    v: KubeVersion,
    unpacked: Option<&release::Unpacked>,
) -> Result<(ImageSet, Vec<String>), BuildError> {
    let repository = era::default_registry(&v).to_string();
    let listed = release::kubeadm_images(&bin_dir.join("kubeadm"), raw, &v, &repository, r)
        .await?
        .unwrap_or_default();
    let named = |what: &str| {
        listed
            .iter()
            .find(|i| {
                let last = i.rsplit('/').next().unwrap_or(i);
                last.split(':').next() == Some(what)
            })
            .cloned()
    };
    let pause = named("pause")
        .or_else(|| {
            era::pause_tag_before_1_11(&v).map(|t| {
                format!(
                    "{repository}/{}:{t}",
                    era::control_plane_image_name(&v, "pause")
                )
            })
        })
        .unwrap_or_else(|| format!("{repository}/pause"));
    let (preload, images) = match unpacked {
        Some(u) => {
            let (tar, names) = release::preload_tar(u, &repository, &req.cache, r, note).await?;
            (Some(tar), names)
        }
        None => (None, Vec::new()),
    };
    let mut set = ImageSet {
        repository,
        etcd_tag: None,
        pause,
        agnhost: era::agnhost_image(&v, AGNHOST_TAG),
        preload,
        agnhost_preloaded: false,
        mirrors: req.mirrors.clone(),
        dns: DnsAddon::Install,
    };
    if let Some(coredns) = named("coredns") {
        if let Some(url) = set.mirror_manifest_url(&coredns) {
            let dl = Downloader::new(&req.cache, r.log.clone(), r.cancel.clone());
            match dl.exists(&url).await {
                Ok(true) => {}
                Ok(false) => {
                    set.dns = DnsAddon::Skip(format!(
                        "{coredns} is not in the mirror ({url} answered 404)"
                    ))
                }
                Err(e) => {
                    set.dns = DnsAddon::Skip(format!(
                        "the mirror of {coredns} did not answer: {}",
                        crate::error::chain(&e)
                    ))
                }
            }
        }
    }
    note(format!(
        "images: pulled as kubeadm {raw} names them under {}{}; sandbox {}; agnhost {}{}",
        set.repository,
        if set.mirrors.is_empty() {
            String::new()
        } else {
            format!(" through {}", crate::release::mirror::list(&set.mirrors))
        },
        set.pause,
        set.agnhost,
        match &set.dns {
            DnsAddon::Install => String::new(),
            DnsAddon::Skip(why) => format!("; no DNS addon: {why}"),
        }
    ));
    Ok((set, images))
}

/// The conformance image built here, and its saved tarball for loading into nodes.
#[derive(Debug, Clone)]
pub struct ConformanceImage {
    pub tag: String,
    pub tar: PathBuf,
}

/// Builds the conformance image from these e2e binaries, the cluster's kubectl and the
/// source tree's entry script (`harness/scripts/build-conformance-image.sh`). The script
/// is idempotent: an image whose inputs did not change is neither imported nor saved again.
pub async fn conformance_image(
    root: &Path,
    cache: &Path,
    version: KubeVersion,
    e2e_dir: &Path,
    kubectl: &Path,
    source_tree: &Path,
    r: &Runner,
) -> Result<ConformanceImage, BuildError> {
    let tag = format!("{IMAGE_REPO}/conformance:{version}");
    let tar = cache.join("conformance").join(format!("{version}.tar"));
    let log = r.log.clone();
    let _lock = crate::paths::CacheLock::acquire(cache, &r.cancel, &move |s| log.line(&s))
        .await
        .map_err(io(cache))?;
    r.run(
        image_script(root, cache, "build-conformance-image.sh", &tag)
            .env("E2E_DIR", e2e_dir.display().to_string())
            .env("KUBECTL", kubectl.display().to_string())
            .env("SOURCE_TREE", source_tree.display().to_string())
            .env("OUT_TAR", tar.display().to_string()),
    )
    .await
    .map_err(|source| BuildError::Stage {
        stage: "conformance image",
        source,
    })?;
    Ok(ConformanceImage { tag, tar })
}

/// The tags of the e2e images `build-e2e-images.sh` builds, as the tree's
/// `test/utils/image/manifest.go` names them (an empty field is not built).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct E2eTags {
    pub httpd: Vec<String>,
    pub nginx: Vec<String>,
    pub kitten: Option<String>,
    pub nautilus: Option<String>,
    pub nonroot: Option<String>,
    pub nonewprivs: Option<String>,
    /// The aggregator spec's sample API server and its etcd sidecar.
    pub sample_apiserver: Option<String>,
    pub etcd: Option<String>,
    /// dig and nslookup for the DNS specs.
    pub jessie_dnsutils: Option<String>,
}

impl E2eTags {
    /// From the manifest's constants (`Httpd` → `httpd:2.4.38-alpine`, ...).
    pub fn from_manifest(images: &std::collections::BTreeMap<String, String>) -> E2eTags {
        let tag = |k: &str, name: &str| {
            images
                .get(k)
                .and_then(|v| v.strip_prefix(&format!("{name}:")))
                .map(String::from)
        };
        let both = |a: &str, b: &str, name: &str| -> Vec<String> {
            let mut v: Vec<String> = [tag(a, name), tag(b, name)].into_iter().flatten().collect();
            v.dedup();
            v
        };
        E2eTags {
            httpd: both("Httpd", "HttpdNew", "httpd"),
            nginx: both("Nginx", "NginxNew", "nginx"),
            kitten: tag("Kitten", "kitten"),
            nautilus: tag("Nautilus", "nautilus"),
            nonroot: tag("NonRoot", "nonroot"),
            nonewprivs: tag("Nonewprivs", "nonewprivs"),
            sample_apiserver: tag("APIServer", "sample-apiserver"),
            etcd: tag("Etcd", "etcd"),
            jessie_dnsutils: tag("JessieDnsutils", "jessie-dnsutils"),
        }
    }

    /// `name:tag` of each image these tags make (the names `build-e2e-images.sh` tags).
    pub fn names(&self) -> std::collections::BTreeSet<String> {
        let each = |name: &'static str, tags: &[String]| {
            tags.iter()
                .map(move |t| format!("{name}:{t}"))
                .collect::<Vec<_>>()
        };
        let one = |t: &Option<String>| t.iter().cloned().collect::<Vec<_>>();
        [
            each("httpd", &self.httpd),
            each("nginx", &self.nginx),
            each("kitten", &one(&self.kitten)),
            each("nautilus", &one(&self.nautilus)),
            each("nonroot", &one(&self.nonroot)),
            each("nonewprivs", &one(&self.nonewprivs)),
            each("sample-apiserver", &one(&self.sample_apiserver)),
            each("etcd", &one(&self.etcd)),
            each("jessie-dnsutils", &one(&self.jessie_dnsutils)),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    pub fn is_empty(&self) -> bool {
        *self == E2eTags::default()
    }
}

/// A `docker save` tarball of e2e images and the names in it.
#[derive(Debug, Clone)]
pub struct E2eImages {
    pub tar: PathBuf,
    pub names: Vec<String>,
}

/// Builds the e2e images of `tags` (`harness/scripts/build-e2e-images.sh`) on the agnhost
/// and busybox images of this machine's build, from Debian packages and `source_tree`.
/// The script is idempotent, so a second call only lists what is there.
pub async fn e2e_images(
    root: &Path,
    cache: &Path,
    source_tree: &Path,
    tags: &E2eTags,
    r: &Runner,
) -> Result<E2eImages, BuildError> {
    let out = cache.join("e2e-images");
    let log = r.log.clone();
    let _lock = crate::paths::CacheLock::acquire(cache, &r.cancel, &move |s| log.line(&s))
        .await
        .map_err(io(cache))?;
    let opt = |t: &Option<String>| t.clone().unwrap_or_default();
    r.run(
        image_script(root, cache, "build-e2e-images.sh", "")
            .env("OUT_DIR", out.display().to_string())
            .env("TREE", source_tree.display().to_string())
            .env("IMAGE_REPO", IMAGE_REPO)
            .env(
                "AGNHOST_IMAGE",
                format!("{IMAGE_REPO}/agnhost:{AGNHOST_TAG}"),
            )
            .env(
                "BUSYBOX_IMAGE",
                format!("{IMAGE_REPO}/busybox:{BUSYBOX_TAG}"),
            )
            .env("HTTPD_TAGS", tags.httpd.join(" "))
            .env("NGINX_TAGS", tags.nginx.join(" "))
            .env("KITTEN_TAG", opt(&tags.kitten))
            .env("NAUTILUS_TAG", opt(&tags.nautilus))
            .env("NONROOT_TAG", opt(&tags.nonroot))
            .env("NONEWPRIVS_TAG", opt(&tags.nonewprivs))
            .env("SAMPLE_APISERVER_TAG", opt(&tags.sample_apiserver))
            .env("ETCD_E2E_TAG", opt(&tags.etcd))
            .env("ETCD_IMAGE", format!("{IMAGE_REPO}/etcd:{ETCD_TAG}"))
            .env("JESSIE_DNSUTILS_TAG", opt(&tags.jessie_dnsutils))
            // The Kubernetes build's GOPATH and compiled packages: sample-apiserver shares
            // most of kube-apiserver's.
            .env("GOPATH", cache.join("src/gopath").display().to_string())
            .env("GOCACHE", cache.join("src/gocache").display().to_string()),
    )
    .await
    .map_err(|source| BuildError::Stage {
        stage: "e2e images",
        source,
    })?;
    let names = std::fs::read_to_string(out.join("e2e-images.txt"))
        .map_err(io(&out))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    Ok(E2eImages {
        tar: out.join("e2e-images.tar"),
        names,
    })
}

/// `bash harness/scripts/<script>` building image `tag`, with the cache's work folder: how
/// the image recipes are run (each is idempotent and caches by its inputs).
pub(crate) fn image_script(root: &Path, cache: &Path, script: &str, tag: &str) -> Cmd {
    Cmd::new("bash")
        .arg(
            root.join("harness/scripts")
                .join(script)
                .display()
                .to_string(),
        )
        .env("TAG", tag)
        .env("WORK", cache.join("work").display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_change_with_any_input_and_not_otherwise() {
        let a = key(&[b"script", b"1.20.2"]);
        assert_eq!(a, key(&[b"script", b"1.20.2"]));
        assert_ne!(a, key(&[b"script", b"1.20.3"]));
        // Boundaries between parts count: ("ab","c") differs from ("a","bc").
        assert_ne!(key(&[b"ab", b"c"]), key(&[b"a", b"bc"]));
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn e2e_tags_come_from_the_manifest_constants() {
        let m: std::collections::BTreeMap<String, String> = [
            ("Httpd", "httpd:2.4.38-alpine"),
            ("HttpdNew", "httpd:2.4.39-alpine"),
            ("Nginx", "nginx:1.14-alpine"),
            ("NginxNew", "nginx:1.15-alpine"),
            ("Kitten", "kitten:1.0"),
            ("NonRoot", "nonroot:1.0"),
            ("APIServer", "sample-apiserver:1.17"),
            ("Etcd", "etcd:3.4.13-0"),
            ("Agnhost", "agnhost:2.21"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let t = E2eTags::from_manifest(&m);
        assert_eq!(t.httpd, ["2.4.38-alpine", "2.4.39-alpine"]);
        assert_eq!(t.nginx, ["1.14-alpine", "1.15-alpine"]);
        assert_eq!(t.kitten.as_deref(), Some("1.0"));
        assert_eq!(t.nonroot.as_deref(), Some("1.0"));
        // Not in this manifest: not built.
        assert_eq!(t.nautilus, None);
        assert_eq!(t.nonewprivs, None);
        assert_eq!(t.sample_apiserver.as_deref(), Some("1.17"));
        assert_eq!(t.etcd.as_deref(), Some("3.4.13-0"));
        assert_eq!(t.jessie_dnsutils, None);
        assert_eq!(
            t.names().into_iter().collect::<Vec<_>>(),
            [
                "etcd:3.4.13-0",
                "httpd:2.4.38-alpine",
                "httpd:2.4.39-alpine",
                "kitten:1.0",
                "nginx:1.14-alpine",
                "nginx:1.15-alpine",
                "nonroot:1.0",
                "sample-apiserver:1.17"
            ]
        );
        assert!(E2eTags::from_manifest(&Default::default()).is_empty());
    }

    #[test]
    fn tree_hash_sees_file_names_and_contents() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/a"), "1").unwrap();
        let one = tree_bytes(d.path()).unwrap();
        std::fs::write(d.path().join("etc/a"), "2").unwrap();
        let two = tree_bytes(d.path()).unwrap();
        assert_ne!(one, two);
        std::fs::rename(d.path().join("etc/a"), d.path().join("etc/b")).unwrap();
        assert_ne!(two, tree_bytes(d.path()).unwrap());
    }
}
