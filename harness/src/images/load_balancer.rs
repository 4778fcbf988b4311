//! The load balancer's image: Debian's haproxy, built locally like every image here
//! (`scripts/build-lb-image.sh`) and cached by its inputs.

use super::BuildError;
use crate::process::Runner;
use std::path::Path;

/// The tag of the load-balancer image (haproxy 2.6 from Debian 12).
pub const LB_IMAGE: &str = "shakedown.local/haproxy:2.6";

/// Builds the image unless one from the same inputs exists; returns its tag.
pub async fn ensure(root: &Path, cache: &Path, r: &Runner) -> Result<String, BuildError> {
    r.run(super::image_script(
        root,
        cache,
        "build-lb-image.sh",
        LB_IMAGE,
    ))
    .await
    .map_err(|source| BuildError::Stage {
        stage: "load-balancer image",
        source,
    })?;
    Ok(LB_IMAGE.to_string())
}
