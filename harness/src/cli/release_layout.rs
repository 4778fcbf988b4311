//! `shakedown release layout --out DIR`: this machine's own build laid out as a release
//! bucket (markers, binaries, server and test tarballs, digest files), to serve from
//! 127.0.0.1 and point `--release-url` at.

use super::*;

pub(super) async fn release_layout(
    root: &Path,
    out: &Path,
    kubernetes: &str,
    deadline: Duration,
) -> Result<ExitKind, CliError> {
    bounded(
        "write a release layout",
        deadline,
        process::StepLog::stderr(),
        |r| async move {
            let art = image_build::local_build(root, kubernetes, &r).await?;
            let note = |s: String| eprintln!("{s}");
            crate::images::release::write_layout(&art, out, &r, &note)
                .await
                .map_err(|e| CliError::Infra {
                    what: format!("write a release layout into {}", out.display()),
                    source: Box::new(e),
                })?;
            println!("release layout of {} in {}", art.raw_version, out.display());
            Ok(())
        },
    )
    .await?;
    Ok(ExitKind::Passed)
}
