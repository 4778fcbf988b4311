//! CNI manifests: known-bad fixtures are caught with the right finding, the shipped variants
//! pass the lint for every release their ranges cover, and `shakedown cni lint` exits as
//! documented. The live dry run against a real cluster is here too, ignored by default.

mod common;

use clap::Parser;
use shakedown::cni::lint::{self, Check, Finding, Severity};
use shakedown::cni::ApplyMethod;
use shakedown::exit::ExitKind;
use shakedown::release::KubeVersion;
use std::path::PathBuf;

fn v(s: &str) -> KubeVersion {
    s.parse().unwrap()
}

fn fixture(name: &str) -> PathBuf {
    common::root().join("fixtures/cni").join(name)
}

/// The findings of one fixture, errors and warnings alike.
fn lint_fixture(name: &str, version: &str) -> Vec<Finding> {
    let (report, _) = lint::lint_files(&[fixture(name)], &v(version));
    report.sorted().findings
}

/// (object, field, line) of each finding, for compact assertions.
fn located(found: &[Finding]) -> Vec<(&str, &str, usize)> {
    found
        .iter()
        .map(|f| (f.object.as_str(), f.field.as_str(), f.line))
        .collect()
}

#[test]
fn a_daemonset_without_the_master_toleration_fails_for_1_6() {
    let found = lint_fixture("no-master-toleration.yaml", "1.6");
    assert_eq!(
        located(&found),
        vec![(
            "DaemonSet kube-system/weave-net",
            "spec.template.spec.tolerations",
            46
        )],
        "{found:#?}"
    );
    let f = &found[0];
    assert_eq!((f.severity, f.check), (Severity::Error, Check::Toleration));
    assert_eq!(
        f.message,
        "does not tolerate the control-plane taint node-role.kubernetes.io/master:NoSchedule that kubeadm v1.6 puts on control-plane nodes; its pods cannot run there, so those nodes get no pod network and stay NotReady"
    );
    assert!(f.file.ends_with("fixtures/cni/no-master-toleration.yaml"));
}

#[test]
fn a_removed_api_version_fails_for_1_20_and_only_warns_on_1_15() {
    let found = lint_fixture("removed-api.yaml", "1.20");
    assert_eq!(
        located(&found),
        vec![("DaemonSet kube-system/kube-router", "apiVersion", 31)],
        "{found:#?}"
    );
    assert_eq!(
        (found[0].severity, found[0].check),
        (Severity::Error, Check::ApiVersion)
    );
    assert_eq!(
        found[0].message,
        "extensions/v1beta1 DaemonSet is not served by Kubernetes v1.20: it was removed after 1.15; use apps/v1"
    );
    let on_1_15 = lint_fixture("removed-api.yaml", "1.15");
    assert_eq!(
        on_1_15
            .iter()
            .map(|f| (f.severity, f.line, f.message.as_str()))
            .collect::<Vec<_>>(),
        vec![(
            Severity::Warning,
            31,
            "extensions/v1beta1 DaemonSet is removed in Kubernetes 1.16; apps/v1 is already served"
        )],
        "1.15 still serves it, and already serves its replacement"
    );
}

#[test]
fn missing_rbac_names_the_service_account_and_the_missing_role() {
    let found = lint_fixture("missing-rbac.yaml", "1.20");
    assert!(found
        .iter()
        .all(|f| f.check == Check::Rbac && f.severity == Severity::Error));
    assert_eq!(
        located(&found),
        vec![
            (
                "DaemonSet kube-system/kube-flannel-ds",
                "spec.template.spec.serviceAccountName",
                19
            ),
            (
                "DaemonSet kube-system/kube-flannel-ds",
                "spec.template.spec.serviceAccountName",
                19
            ),
            ("ClusterRoleBinding canal", "roleRef.name", 41),
        ],
        "{found:#?}"
    );
    let messages: Vec<&str> = found.iter().map(|f| f.message.as_str()).collect();
    assert!(messages.contains(
        &"runs as ServiceAccount kube-system/flannel, which these manifests do not create"
    ));
    assert!(messages.contains(
        &"ServiceAccount kube-system/flannel is bound to no ClusterRole by a ClusterRoleBinding of these manifests; with RBAC (on by default since Kubernetes 1.6) its API requests are forbidden"
    ));
    assert_eq!(
        found[2].message,
        "binds ServiceAccount kube-system/canal (of DaemonSet kube-system/canal) to ClusterRole canal-flannel, which these manifests do not create"
    );
}

#[test]
fn unpinned_images_are_findings_and_pinned_ones_are_not() {
    let found = lint_fixture("unpinned-image.yaml", "1.20");
    assert_eq!(
        located(&found),
        vec![
            (
                "DaemonSet kube-system/cni-installer",
                "spec.template.spec.initContainers[0].image",
                22
            ),
            (
                "DaemonSet kube-system/cni-installer",
                "spec.template.spec.containers[0].image",
                25
            ),
        ],
        "{found:#?}"
    );
    assert!(found.iter().all(|f| f.check == Check::Image));
    assert_eq!(
        found[0].message,
        "image weaveworks/weave-kube:latest uses the moving tag :latest: runs are not reproducible and the image cannot be preloaded"
    );
    assert_eq!(
        found[1].message,
        "image busybox has no tag, which means :latest: runs are not reproducible and the image cannot be preloaded"
    );
}

/// The minor releases a range covers, up to `newest` for an open range.
fn minors(min: &str, max: Option<&str>, newest: u32) -> Vec<KubeVersion> {
    let lo = v(min).minor;
    let hi = max.map(|m| v(m).minor).unwrap_or(newest);
    (lo..=hi).map(|m| v(&format!("1.{m}"))).collect()
}

#[test]
fn shipped_manifests_pass_for_every_release_they_cover() {
    let catalog = common::catalog();
    let mut checked = Vec::new();
    for name in catalog.names() {
        let variant = catalog.get(name).unwrap();
        if variant.apply != ApplyMethod::Manifests {
            continue;
        }
        let dir = catalog.dir(name).unwrap();
        for release in &variant.releases {
            let range = &release.kubernetes;
            for version in minors(&range.min, range.max.as_deref(), 33) {
                let (report, objects) = lint::lint_variant(variant, dir, &version).unwrap();
                let errors: Vec<String> = report
                    .findings
                    .iter()
                    .filter(|f| f.severity == Severity::Error)
                    .map(|f| f.to_string())
                    .collect();
                assert!(
                    errors.is_empty(),
                    "{name} {} for {version}:\n{}",
                    release.version,
                    errors.join("\n")
                );
                assert!(
                    objects.iter().any(|o| o.kind() == "DaemonSet"),
                    "{name} {} ships no DaemonSet",
                    release.version
                );
                checked.push(format!("{name} {} {version}", release.version));
            }
        }
    }
    for expected in [
        "weave 2.1.2 v1.6",
        "calico v2.2.1 v1.6",
        "weave 2.8.1 v1.20",
        "calico v3.19.1 v1.20",
        "calico v3.26.3 v1.33",
    ] {
        assert!(
            checked.iter().any(|c| c == expected),
            "{expected} was not checked: {checked:?}"
        );
    }
}

#[test]
fn the_1_6_era_manifests_would_have_failed_on_a_newer_release() {
    // The lint is what tells a release range is wrong: the 1.6-era weave DaemonSet is
    // extensions/v1beta1, gone in 1.16.
    let catalog = common::catalog();
    let weave = catalog.get("weave").unwrap();
    let dir = catalog.dir("weave").unwrap();
    let old = dir.join(&weave.releases[0].manifests[0]);
    let (report, _) = lint::lint_files(&[old], &v("1.16"));
    assert!(report.findings.iter().any(|f| f.check == Check::ApiVersion
        && f.object == "DaemonSet kube-system/weave-net"
        && f.severity == Severity::Error));
}

/// Runs the command line in this process (the shared target folder's binary may belong to
/// another branch's build), returning its exit code.
async fn shakedown(args: &[&str]) -> i32 {
    let root = common::root().display().to_string();
    let argv = ["shakedown", "--root", root.as_str()]
        .into_iter()
        .chain(args.iter().copied());
    let cli = shakedown::cli::Cli::try_parse_from(argv);
    match cli {
        Ok(cli) => shakedown::cli::run(cli).await.code(),
        Err(e) => {
            eprintln!("{e}");
            ExitKind::Configuration.code()
        }
    }
}

#[tokio::test]
async fn the_lint_command_exits_by_what_it_found() {
    assert_eq!(
        shakedown(&["cni", "lint", "--kubernetes", "1.6", "weave", "calico"]).await,
        0,
        "the 1.6-era releases are clean for 1.6"
    );
    let bad = fixture("removed-api.yaml").display().to_string();
    assert_eq!(
        shakedown(&["cni", "lint", "--kubernetes", "1.20", &bad]).await,
        1,
        "an error finding"
    );
    assert_eq!(
        shakedown(&["cni", "lint", "--kubernetes", "1.15", &bad]).await,
        0,
        "warnings alone pass"
    );
    assert_eq!(
        shakedown(&["cni", "lint", "--kubernetes", "1.8", "calico"]).await,
        2,
        "no calico release covers 1.8"
    );
    assert_eq!(
        shakedown(&["cni", "lint", "--kubernetes", "1.x", "weave"]).await,
        2
    );
    assert_eq!(
        shakedown(&["cni", "lint", "--kubernetes", "1.20", "nosuch"]).await,
        2
    );
}

/// Needs a kubeconfig in SHAKEDOWN_KUBECONFIG for a running cluster: the release of weave
/// and of calico that serves the cluster's version, linted and dry-run on the API server.
#[tokio::test]
#[ignore = "needs a live cluster: run by the scenario trials"]
async fn live_dry_run_of_current_weave_and_calico() {
    let kubeconfig = std::env::var_os("SHAKEDOWN_KUBECONFIG")
        .map(PathBuf::from)
        .expect("set SHAKEDOWN_KUBECONFIG to the cluster's kubeconfig");
    let found = lint::live_dry_run(&kubeconfig, &common::catalog(), &["weave", "calico"])
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", std::error::Error::source(&e)));
    for f in &found {
        println!("{f}");
    }
    let errors: Vec<&Finding> = found
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}
