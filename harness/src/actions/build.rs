//! `image-build`: Kubernetes binaries, component images and the node image, each stage
//! cached by content.

use super::{Action, StepContext, StepError};
use crate::actions::JobStateExt;
use crate::images::release::Wanted;
use crate::images::{self, BinarySource, BuildRequest};
use crate::release::bucket::Bucket;
use crate::scenario::SourceKind;

pub struct ImageBuild;

pub fn request(cx: &StepContext<'_>) -> Result<BuildRequest, StepError> {
    let s = &cx.run.scenario;
    let k = &s.scenario.kubernetes;
    let settings = &cx.run.settings;
    let version = s.version.ok_or_else(|| {
        StepError::new(format!(
            "failed to read the Kubernetes version of {}",
            s.version_label()
        ))
    })?;
    let binaries = match (&settings.kubernetes_binaries, k.source) {
        (Some(dir), _) => BinarySource::Folder(dir.clone()),
        (None, SourceKind::Binaries) => {
            BinarySource::Folder(settings.root.join(k.binaries.clone().unwrap_or_default()))
        }
        (None, SourceKind::DebianSource) => {
            if version.patch.is_none() {
                return Err(StepError::new(format!(
                    "failed to build Kubernetes {}: a Debian source build needs a fixed version, not a marker",
                    s.version_label()
                )));
            }
            BinarySource::DebianSource {
                debian_version: k.debian_version.clone().unwrap_or_default(),
            }
        }
        (None, SourceKind::Release) => BinarySource::Release {
            bucket: settings
                .release_url
                .clone()
                .unwrap_or_else(Bucket::default_bucket),
            wanted: match (&k.marker, &k.version) {
                (Some(m), _) => Wanted::Marker(m.clone()),
                (None, Some(v)) => Wanted::Version(v.clone()),
                (None, None) => Wanted::Version(version.to_string()),
            },
        },
    };
    let mut mirrors = s.scenario.cluster.registry_mirrors.clone();
    for m in &settings.registry_mirrors {
        // The command line wins over the scenario for the same registry.
        mirrors.retain(|x| x.registry != m.registry);
        mirrors.push(m.clone());
    }
    Ok(BuildRequest {
        root: settings.root.clone(),
        cache: settings.cache_dir.clone(),
        version,
        // A source build stamps the version as written (`v1.20.3-shakedown.1`).
        raw_version: match k.source {
            SourceKind::DebianSource => k.version.as_deref().map(with_v),
            _ => None,
        },
        binaries,
        node_image: settings.node_image.clone(),
        runtime: s
            .scenario
            .cluster
            .runtime
            .unwrap_or_else(|| crate::release::era::default_runtime(&version)),
        mirrors,
    })
}

/// A version string as binaries and image tags carry it: `1.20.2` → `v1.20.2`.
pub fn with_v(v: &str) -> String {
    if v.starts_with('v') {
        v.to_string()
    } else {
        format!("v{v}")
    }
}

/// The versions besides the main one this job runs: each upgrade hop, and the workers'
/// version when the topology pins one.
pub fn other_versions(cx: &StepContext<'_>) -> Vec<String> {
    let s = &cx.run.scenario.scenario;
    let mut v: Vec<String> = s
        .upgrade
        .as_ref()
        .map(|u| u.through.clone())
        .unwrap_or_default();
    v.extend(cx.job.topology.worker_version.clone());
    let mut seen = std::collections::HashSet::new();
    v.retain(|x| seen.insert(x.clone()));
    v
}

/// The main request, for another version: the same source, stamped or fetched as `wanted`,
/// and the main node image (nodes get the other binaries copied in, not another image).
fn other_request(
    main: &BuildRequest,
    wanted: &str,
    node_image: &str,
) -> Result<BuildRequest, StepError> {
    let version = wanted
        .parse()
        .ok()
        .or_else(|| crate::release::version::marker_minor(wanted))
        .ok_or_else(|| {
            StepError::new(format!("failed to read the Kubernetes version {wanted:?}"))
        })?;
    let binaries = match &main.binaries {
        BinarySource::Release { bucket, .. } => BinarySource::Release {
            bucket: bucket.clone(),
            wanted: if crate::release::skew::parse(wanted).is_ok() {
                Wanted::Version(wanted.to_string())
            } else {
                Wanted::Marker(wanted.to_string())
            },
        },
        other => other.clone(),
    };
    Ok(BuildRequest {
        version,
        raw_version: matches!(binaries, BinarySource::DebianSource { .. }).then(|| with_v(wanted)),
        binaries,
        node_image: Some(node_image.to_string()),
        ..main.clone()
    })
}

fn describe_source(b: &BinarySource, version: &str) -> String {
    match b {
        BinarySource::Release { bucket, wanted } => format!(
            "download Kubernetes {} from the release bucket {} (kubeadm, kubelet, kubectl, the server and test tarballs), each verified against its published digest",
            match wanted {
                Wanted::Marker(m) => format!("{m} (resolved from {})", bucket.marker_url(m)),
                Wanted::Version(v) => v.clone(),
            },
            bucket.base()
        ),
        BinarySource::Folder(d) => format!(
            "take Kubernetes binaries from {} (their version is kubeadm's own)",
            d.display()
        ),
        BinarySource::DebianSource { debian_version } => format!(
            "build Kubernetes {version} from Debian's source package {debian_version}"
        ),
    }
}

#[async_trait::async_trait]
impl Action for ImageBuild {
    fn describe(&self, cx: &StepContext<'_>) -> Vec<String> {
        match request(cx) {
            Ok(r) => {
                let images = if r.mirrors.is_empty() {
                    match r.binaries {
                        BinarySource::Release { .. } => "load the control-plane images of the server tarball into nodes; pull the rest (etcd, pause, CoreDNS, agnhost) from their registries".to_string(),
                        _ => "build component images to preload into nodes".to_string(),
                    }
                } else {
                    format!(
                        "pull images under their upstream names through {}",
                        crate::release::mirror::list(&r.mirrors)
                    )
                };
                vec![
                    describe_source(&r.binaries, &r.version.to_string()),
                    format!(
                        "{images}; build a node image, cached under {}",
                        r.cache.display()
                    ),
                ]
            }
            Err(e) => vec![format!("fail: {}", e.message)],
        }
    }

    async fn run(&self, cx: &mut StepContext<'_>) -> Result<(), StepError> {
        let req = request(cx)?;
        let r = cx.runner();
        let note = |s: String| cx.note(s);
        let art = images::build(&req, &r, &note)
            .await
            .map_err(|e| StepError::infra(crate::error::chain(&e)))?;
        cx.note(format!(
            "Kubernetes {}, node image {}, preloaded images {}",
            art.raw_version,
            art.node_image,
            art.image_set
                .preload
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "none".into())
        ));
        cx.property("kubernetes.version", &art.raw_version);
        let node_image = art.node_image.clone();
        let mut others = Vec::new();
        for wanted in other_versions(cx) {
            let other = other_request(&req, &wanted, &node_image)?;
            cx.note(format!(
                "other version {wanted}: {}",
                describe_source(&other.binaries, &wanted)
            ));
            let built = images::build(&other, &r, &note).await.map_err(|e| {
                StepError::infra(format!(
                    "failed to build {wanted}: {}",
                    crate::error::chain(&e)
                ))
            })?;
            cx.note(format!(
                "other version {wanted}: Kubernetes {}, images {}",
                built.raw_version,
                built
                    .image_set
                    .preload
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "pulled".into())
            ));
            others.push((wanted, built));
        }
        if cx.job.provider == crate::scenario::ProviderKind::Vm {
            let vm = &cx.run.scenario.scenario.vm;
            let kernel = images::vm::kernel(&req.root, &req.cache, &vm.kernel_package)
                .map_err(|e| StepError::infra(crate::error::chain(&e)))?;
            // containerd's store can be filled on this machine; dockerd's is loaded after boot.
            let preload = match art.runtime {
                crate::release::era::Runtime::Containerd => art.image_set.preload.clone(),
                crate::release::era::Runtime::Docker => None,
            };
            let disk = images::vm::disk(
                &req.root,
                &req.cache,
                &kernel,
                &node_image,
                preload.as_deref(),
                &r,
                &note,
            )
            .await
            .map_err(|e| StepError::infra(crate::error::chain(&e)))?;
            cx.note(format!(
                "vm: kernel {} ({}), disk {}",
                kernel.version,
                kernel.dir.display(),
                disk.image.display()
            ));
            cx.property("vm.kernel", &kernel.version);
            cx.job_mut().vm_disk = Some(disk);
        }
        cx.job_mut().artifacts = Some(art);
        cx.job_mut().other_builds.extend(others);
        Ok(())
    }
}
