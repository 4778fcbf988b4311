//! `image-build`: Kubernetes binaries, component images and the node image, each stage
//! cached by content.

use super::{Action, StepContext, StepError};
use crate::actions::JobStateExt;
use crate::images::{self, BinarySource, BuildRequest};
use crate::scenario::SourceKind;

pub struct ImageBuild;

pub fn request(cx: &StepContext<'_>) -> Result<BuildRequest, StepError> {
    let s = &cx.run.scenario;
    let k = &s.scenario.kubernetes;
    let version = s.version.filter(|v| v.patch.is_some()).ok_or_else(|| {
        StepError::infra(format!(
            "failed to resolve Kubernetes {}: release markers need the release bucket, which this machine cannot reach; pass --kubernetes-binaries DIR",
            s.version_label()
        ))
    })?;
    let binaries = match (&cx.run.settings.kubernetes_binaries, k.source) {
        (Some(dir), _) => BinarySource::Folder(dir.clone()),
        (None, SourceKind::Binaries) => BinarySource::Folder(
            cx.run
                .settings
                .root
                .join(k.binaries.clone().unwrap_or_default()),
        ),
        (None, SourceKind::DebianSource) => BinarySource::DebianSource {
            debian_version: k.debian_version.clone().unwrap_or_default(),
        },
        (None, SourceKind::Release) => BinarySource::Release,
    };
    Ok(BuildRequest {
        root: cx.run.settings.root.clone(),
        cache: cx.run.settings.cache_dir.clone(),
        version,
        binaries,
        node_image: cx.run.settings.node_image.clone(),
    })
}

#[async_trait::async_trait]
impl Action for ImageBuild {
    fn describe(&self, cx: &StepContext<'_>) -> Vec<String> {
        match request(cx) {
            Ok(r) => vec![
                format!(
                    "obtain Kubernetes {} binaries from {:?}",
                    r.version, r.binaries
                ),
                format!(
                    "build component images and a node image, cached under {}",
                    r.cache.display()
                ),
            ],
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
            "node image {}, images {}",
            art.node_image,
            art.images_tar.display()
        ));
        cx.job_mut().artifacts = Some(art);
        Ok(())
    }
}
