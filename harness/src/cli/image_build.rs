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
    release_url: Option<crate::release::bucket::Bucket>,
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
        (None, None) => BinarySource::Release {
            bucket: release_url.unwrap_or_else(crate::release::bucket::Bucket::default_bucket),
            wanted: images::release::Wanted::Version(version.to_string()),
        },
    };
    let req = BuildRequest {
        raw_version: None,
        root: root.to_path_buf(),
        cache: paths::cache_dir(),
        version: v,
        binaries: source,
        node_image,
        runtime: crate::release::era::default_runtime(&v),
        mirrors: Vec::new(),
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
    println!("kubernetes: {}", a.raw_version);
    println!("binaries:   {}", a.bin_dir.display());
    println!(
        "images:     {} ({} images)",
        a.image_set
            .preload
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "none: every image is pulled".into()),
        a.images.len()
    );
    println!("node image: {}", a.node_image);
    println!("log:        {}", log_path.display());
    Ok(ExitKind::Passed)
}

/// This machine's own build of `version` (cached), for commands that serve it to others.
pub(super) async fn local_build(
    root: &Path,
    version: &str,
    r: &process::Runner,
) -> Result<crate::images::KubeArtifacts, CliError> {
    use crate::images::{self, BinarySource, BuildRequest};
    let v: crate::release::KubeVersion = version
        .parse()
        .map_err(|e: crate::release::version::VersionError| CliError::Usage(e.to_string()))?;
    // A pre-release of the known tree's minor (v1.20.3-shakedown.1) is that tree stamped
    // with the name, as a scenario's other versions are: it says it is not a real release.
    let tree: crate::release::KubeVersion = "v1.20.2".parse().expect("a valid version");
    let stamped = version.contains('-') && (v.major, v.minor) == (tree.major, tree.minor);
    let debian_version = debian_version_for(if stamped { &tree } else { &v }).ok_or_else(|| {
        CliError::Usage(format!(
            "{version} cannot be built on this machine: only Debian's source package of v1.20.2 is known (a pre-release of 1.20, e.g. v1.20.3-shakedown.1, is that tree stamped)"
        ))
    })?;
    let req = BuildRequest {
        raw_version: stamped.then(|| crate::actions::build::with_v(version)),
        root: root.to_path_buf(),
        cache: paths::cache_dir(),
        version: v,
        binaries: BinarySource::DebianSource {
            debian_version: debian_version.into(),
        },
        node_image: None,
        runtime: crate::release::era::Runtime::Containerd,
        mirrors: Vec::new(),
    };
    let note = |s: String| eprintln!("{s}");
    images::build(&req, r, &note)
        .await
        .map_err(|e| CliError::Infra {
            what: format!("build Kubernetes {version}"),
            source: Box::new(e),
        })
}
