//! `shakedown image build`: Kubernetes binaries, component images and the node image.

use super::*;

/// The Debian source package that holds a Kubernetes version, where one is known.
pub fn debian_version_for(v: &crate::release::KubeVersion) -> Option<&'static str> {
    (v.minor == 20 && v.patch == Some(2)).then_some("1.20.5+really1.20.2-1.1+deb12u1")
}

pub(super) async fn image_build(
    root: &Path,
    version: &str,
    debian_version: Option<String>,
    binaries: Option<PathBuf>,
    node_image: Option<String>,
    deadline: Duration,
) -> Result<ExitKind, CliError> {
    use crate::images::{self, BinarySource, BuildRequest};
    let v: crate::release::KubeVersion = version
        .parse()
        .map_err(|e: crate::release::version::VersionError| CliError::Usage(e.to_string()))?;
    let source = match (
        binaries,
        debian_version.or_else(|| debian_version_for(&v).map(String::from)),
    ) {
        (Some(dir), _) => BinarySource::Folder(dir),
        (None, Some(d)) => BinarySource::DebianSource { debian_version: d },
        (None, None) => BinarySource::Release,
    };
    let req = BuildRequest {
        root: root.to_path_buf(),
        cache: paths::cache_dir(),
        version: v,
        binaries: source,
        node_image,
    };
    let log_path = req
        .cache
        .join("logs")
        .join(format!("image-build-{}.log", paths::new_run_id()));
    let log = process::StepLog::create(&log_path).map_err(|e| CliError::Infra {
        what: format!("create {}", log_path.display()),
        source: Box::new(e),
    })?;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    // A hidden bar (not a terminal: CI) prints nothing, so notes go to stderr as lines.
    let note = |s: String| {
        if bar.is_hidden() {
            eprintln!("{s}");
        } else {
            bar.println(&s);
            bar.set_message(s);
        }
    };
    let what = format!("build images (log: {})", log_path.display());
    let (req, note, what2) = (&req, &note, what.clone());
    let result = bounded(&what, deadline, log, |runner| async move {
        images::build(req, &runner, note)
            .await
            .map_err(|e| CliError::Infra {
                what: what2,
                source: Box::new(e),
            })
    })
    .await;
    bar.finish_and_clear();
    let a = result?;
    println!("binaries:   {}", a.bin_dir.display());
    println!(
        "images:     {} ({} images)",
        a.images_tar.display(),
        a.images.len()
    );
    println!("node image: {}", a.node_image);
    println!("log:        {}", log_path.display());
    Ok(ExitKind::Passed)
}
