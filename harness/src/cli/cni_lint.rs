//! `shakedown cni lint`: CNI manifests against one Kubernetes release.

use super::*;

/// What one `cni lint` target names: a variant's release, or manifest files.
struct LintTarget {
    label: String,
    report: crate::cni::lint::Report,
    objects: Vec<crate::cni::manifest::ManifestObject>,
}

fn lint_target(
    root: &Path,
    target: &str,
    version: &crate::release::KubeVersion,
    catalog: &mut Option<Catalog>,
) -> Result<LintTarget, CliError> {
    use crate::cni::lint;
    let path = Path::new(target);
    if path.is_file() {
        let (report, objects) = lint::lint_files(&[path.to_path_buf()], version);
        return Ok(LintTarget {
            label: target.to_string(),
            report,
            objects,
        });
    }
    if catalog.is_none() {
        *catalog = Some(load_catalog(root)?);
    }
    let catalog = catalog
        .as_ref()
        .ok_or_else(|| CliError::Usage("no catalog".into()))?;
    let (variant, dir) = match (catalog.get(target), catalog.dir(target)) {
        (Some(v), Some(d)) => (v, d),
        _ => {
            return Err(CliError::Usage(format!(
                "{target:?} is neither a CNI variant nor a file; known variants: {}",
                catalog.names().join(", ")
            )))
        }
    };
    let (report, objects) =
        lint::lint_variant(variant, dir, version).map_err(|e| CliError::Usage(e.to_string()))?;
    let release = &variant.releases
        [lint::release_index(variant, version).map_err(|e| CliError::Usage(e.to_string()))?];
    Ok(LintTarget {
        label: format!("{} {}", variant.name, release.version),
        report,
        objects,
    })
}

pub(super) async fn cni_lint(root: &Path, a: LintArgs) -> Result<ExitKind, CliError> {
    use crate::cni::{apply, lint};
    let version: crate::release::KubeVersion = a
        .kubernetes
        .parse()
        .map_err(|e: crate::release::version::VersionError| CliError::Usage(e.to_string()))?;
    let client = match &a.kubeconfig {
        Some(k) => Some(apply::client(k).await.map_err(|e| CliError::Infra {
            what: "reach the cluster for the dry run".into(),
            source: Box::new(e),
        })?),
        None => None,
    };
    let mut catalog = None;
    let mut errors = 0;
    for t in &a.targets {
        let LintTarget {
            label,
            mut report,
            objects,
        } = lint_target(root, t, &version, &mut catalog)?;
        if let Some(client) = &client {
            let found = lint::dry_run_findings(client, &objects)
                .await
                .map_err(|e| CliError::Infra {
                    what: format!("dry-run {label}"),
                    source: Box::new(e),
                })?;
            report.findings.extend(found);
        }
        let report = report.sorted();
        for f in &report.findings {
            println!("{f}");
        }
        println!(
            "{label} for Kubernetes {version}: {} objects, {} error(s), {} warning(s){}",
            report.objects,
            report.errors(),
            report.warnings(),
            if client.is_some() {
                ", dry-run on the cluster"
            } else {
                ""
            }
        );
        errors += report.errors();
    }
    Ok(if errors > 0 {
        ExitKind::TestFailure
    } else {
        ExitKind::Passed
    })
}
