//! The conformance image run in-cluster, as sonobuoy and hydrophone run it: a Pod with a
//! cluster-admin ServiceAccount runs the image's own entry script (`run_e2e.sh`: ginkgo with
//! `E2E_FOCUS`, `E2E_SKIP`, `E2E_PARALLEL`, `E2E_DRYRUN`, results in `RESULTS_DIR`). A second
//! container of the same image waits for the `done` file the script writes and prints the
//! JUnit files to its log, so results come back through the pod log API: no exec, no copy,
//! and the upstream image works unchanged.
//!
//! Everything here is data: the objects to apply, the pod, the conditions to wait for and
//! the parsing of what comes back. `actions::conformance` drives it.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use serde_json::json;

pub const NAMESPACE: &str = "shakedown-conformance";
pub const SERVICE_ACCOUNT: &str = "shakedown-conformance";
pub const RESULTS_DIR: &str = "/tmp/results";
/// The conformance container and the one that hands its results back.
pub const RUNNER: &str = "conformance";
pub const RESULTS: &str = "results";
/// Printed by the results container before each JUnit file.
pub const FILE_MARKER: &str = "=== shakedown-results: ";
const REPO_LIST_DIR: &str = "/etc/shakedown";

/// What one conformance pod runs.
#[derive(Debug, Clone)]
pub struct RunnerPod {
    pub name: String,
    pub image: String,
    pub run_id: String,
    pub focus: String,
    pub skip: Option<String>,
    /// ginkgo `--p` (the entry script then skips `[Serial]` specs itself).
    pub parallel: bool,
    pub dry_run: bool,
}

fn labels(run_id: &str) -> serde_json::Value {
    json!({
        "io.shakedown.managed": "true",
        "io.shakedown.run": run_id,
        "app.kubernetes.io/component": "conformance",
    })
}

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("objects built here match their schema")
}

/// The namespace, its ServiceAccount bound to cluster-admin (conformance creates and
/// deletes namespaces, nodes' taints and cluster-scoped objects), and the repo list.
pub fn namespace(run_id: &str) -> Namespace {
    from_json(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": labels(run_id)},
    }))
}

pub fn service_account(run_id: &str) -> ServiceAccount {
    from_json(json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE, "labels": labels(run_id)},
    }))
}

pub fn cluster_role_binding(run_id: &str) -> ClusterRoleBinding {
    from_json(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": SERVICE_ACCOUNT, "labels": labels(run_id)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}],
    }))
}

pub fn repo_list_config_map(run_id: &str, repo_list: &str) -> ConfigMap {
    from_json(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "repo-list", "namespace": NAMESPACE, "labels": labels(run_id)},
        "data": {"repo-list.yaml": repo_list},
    }))
}

/// The results container's script: it ignores SIGTERM so that a pod deleted at a deadline
/// still hands back whatever the entry script saved, waits for `done`, then prints each
/// JUnit file after a marker line.
pub fn results_script() -> String {
    format!(
        "trap '' TERM; until [ -f {RESULTS_DIR}/done ]; do sleep 2; done; \
         for f in {RESULTS_DIR}/junit_*.xml; do [ -f \"$f\" ] || continue; echo \"{FILE_MARKER}${{f##*/}}\"; cat \"$f\"; echo; done"
    )
}

/// `E2E_SKIP`. The entry script prepends `\[Serial\]|` in parallel mode, so an empty skip
/// would end in `|`, which matches every spec and skips them all.
fn skip(p: &RunnerPod) -> String {
    match &p.skip {
        Some(s) => s.clone(),
        None if p.parallel => r"\[Serial\]".into(),
        None => String::new(),
    }
}

pub fn pod(p: &RunnerPod) -> Pod {
    let mut env = vec![
        json!({"name": "E2E_FOCUS", "value": p.focus}),
        json!({"name": "E2E_SKIP", "value": skip(p)}),
        json!({"name": "E2E_PROVIDER", "value": "skeleton"}),
        json!({"name": "E2E_PARALLEL", "value": if p.parallel { "y" } else { "1" }}),
        json!({"name": "E2E_VERBOSITY", "value": "4"}),
        json!({"name": "RESULTS_DIR", "value": RESULTS_DIR}),
    ];
    if p.dry_run {
        env.push(json!({"name": "E2E_DRYRUN", "value": "true"}));
    }
    // The e2e test images (agnhost, busybox, ...) are the ones built here, whatever image
    // runs the suite.
    env.push(
        json!({"name": "KUBE_TEST_REPO_LIST", "value": format!("{REPO_LIST_DIR}/repo-list.yaml")}),
    );
    let mounts = vec![
        json!({"name": "results", "mountPath": RESULTS_DIR}),
        json!({"name": "repo-list", "mountPath": REPO_LIST_DIR, "readOnly": true}),
    ];
    let volumes = vec![
        json!({"name": "results", "emptyDir": {}}),
        json!({"name": "repo-list", "configMap": {"name": "repo-list"}}),
    ];
    from_json(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": p.name, "namespace": NAMESPACE, "labels": labels(&p.run_id)},
        "spec": {
            "serviceAccountName": SERVICE_ACCOUNT,
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": RUNNER, "image": p.image, "imagePullPolicy": "IfNotPresent",
                    "env": env, "volumeMounts": mounts,
                },
                {
                    "name": RESULTS, "image": p.image, "imagePullPolicy": "IfNotPresent",
                    "command": ["/bin/sh", "-c", results_script()],
                    "volumeMounts": [{"name": "results", "mountPath": RESULTS_DIR}],
                },
            ],
            "volumes": volumes,
        },
    }))
}

/// ginkgo focus selecting exactly these specs.
pub fn focus_any(names: &[String]) -> String {
    names
        .iter()
        .map(|n| super::focus_exactly(n))
        .collect::<Vec<_>>()
        .join("|")
}

/// Why the pod can never start, if it cannot: an image that cannot be pulled, a bad
/// configuration, or a pod the scheduler cannot place. Waiting out the deadline would
/// only hide this.
pub fn stuck(pod: &Pod) -> Option<String> {
    const FATAL: &[&str] = &[
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
    ];
    let status = pod.status.as_ref()?;
    for c in status.container_statuses.iter().flatten() {
        if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.as_deref().unwrap_or_default();
            if FATAL.contains(&reason) {
                return Some(format!(
                    "container {} cannot start: {reason}: {}",
                    c.name,
                    w.message.as_deref().unwrap_or("no message")
                ));
            }
        }
    }
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .filter(|c| c.reason.as_deref() == Some("Unschedulable"))
        .map(|c| {
            format!(
                "the pod cannot be scheduled: {}",
                c.message.as_deref().unwrap_or("no message")
            )
        })
}

/// The runner container's exit code, once it has ended.
pub fn runner_exit(pod: &Pod) -> Option<i32> {
    pod.status
        .as_ref()?
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == RUNNER)?
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

/// The JUnit files in the results container's log, by name.
pub fn junit_files(results_log: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in results_log.lines() {
        if let Some(name) = line.strip_prefix(FILE_MARKER) {
            out.push((name.trim().to_string(), String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_from(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn env_of(p: &Pod) -> Vec<(String, String)> {
        p.spec.as_ref().unwrap().containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect()
    }

    fn runner(dry_run: bool, parallel: bool, skip: Option<&str>) -> RunnerPod {
        RunnerPod {
            name: "e2e".into(),
            image: "shakedown.local/conformance:v1.20.2".into(),
            run_id: "sd-1".into(),
            focus: r"\[Conformance\]".into(),
            skip: skip.map(Into::into),
            parallel,
            dry_run,
        }
    }

    #[test]
    fn the_pod_speaks_the_conformance_image_contract() {
        let p = pod(&runner(true, false, Some("Flaky")));
        let env = env_of(&p);
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{k} not set"))
        };
        assert_eq!(get("E2E_FOCUS"), r"\[Conformance\]");
        assert_eq!(get("E2E_SKIP"), "Flaky");
        assert_eq!(get("E2E_PARALLEL"), "1");
        assert_eq!(get("E2E_DRYRUN"), "true");
        assert_eq!(get("RESULTS_DIR"), RESULTS_DIR);
        assert_eq!(get("KUBE_TEST_REPO_LIST"), "/etc/shakedown/repo-list.yaml");
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.service_account_name.as_deref(), Some(SERVICE_ACCOUNT));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.containers[1].name, RESULTS);
        assert_eq!(
            p.metadata.labels.as_ref().unwrap()["io.shakedown.run"],
            "sd-1"
        );
        // Not a dry run: no E2E_DRYRUN at all (the script tests it for being set).
        let env = env_of(&pod(&runner(false, true, None)));
        assert!(!env.iter().any(|(n, _)| n == "E2E_DRYRUN"));
        assert!(env.contains(&("E2E_PARALLEL".into(), "y".into())));
    }

    #[test]
    fn parallel_mode_never_gets_a_skip_that_matches_everything() {
        let env = env_of(&pod(&runner(false, true, None)));
        let skip = &env.iter().find(|(n, _)| n == "E2E_SKIP").unwrap().1;
        // run_e2e.sh builds `\[Serial\]|${E2E_SKIP}`.
        let re = regex::Regex::new(&format!(r"\[Serial\]|{skip}")).unwrap();
        assert!(!re.is_match("[sig-apps] Deployment should run [Conformance]"));
        assert!(re.is_match("[sig-apps] Daemon set should rollback [Serial] [Conformance]"));
        // Serially, no skip means no skip: certified mode keeps its [Serial] specs.
        let env = env_of(&pod(&runner(false, false, None)));
        assert!(env.contains(&("E2E_SKIP".into(), String::new())));
    }

    #[test]
    fn rbac_binds_the_service_account_to_cluster_admin() {
        let b = cluster_role_binding("sd-1");
        assert_eq!(b.role_ref.name, "cluster-admin");
        let s = &b.subjects.unwrap()[0];
        assert_eq!(
            (s.name.as_str(), s.namespace.as_deref()),
            (SERVICE_ACCOUNT, Some(NAMESPACE))
        );
        let cm = repo_list_config_map("sd-1", "e2eRegistry: shakedown.local\n");
        assert!(cm.data.unwrap()["repo-list.yaml"].contains("shakedown.local"));
        assert_eq!(namespace("sd-1").metadata.name.as_deref(), Some(NAMESPACE));
        assert_eq!(
            service_account("sd-1").metadata.namespace.as_deref(),
            Some(NAMESPACE)
        );
    }

    #[test]
    fn focus_any_matches_only_the_listed_specs() {
        let names = vec![
            "[sig-apps] A should work [Conformance]".to_string(),
            "[sig-node] B (with parens) [Conformance]".to_string(),
        ];
        let re = regex::Regex::new(&focus_any(&names)).unwrap();
        assert!(re.is_match("[Top Level] [sig-apps] A should work [Conformance]"));
        assert!(re.is_match("[sig-node] B (with parens) [Conformance]"));
        assert!(!re.is_match("[sig-node] C [Conformance]"));
    }

    #[test]
    fn pod_conditions_from_status() {
        let running = pod_from(
            r#"
status:
  phase: Running
  containerStatuses:
  - name: conformance
    state: {running: {startedAt: "2026-11-21T10:00:00Z"}}
"#,
        );
        assert!(!crate::readiness::pod_finished(Some(&running)));
        assert_eq!(stuck(&running), None);
        assert_eq!(runner_exit(&running), None);

        let done = pod_from(
            r#"
status:
  phase: Failed
  containerStatuses:
  - name: results
    state: {terminated: {exitCode: 0}}
  - name: conformance
    state: {terminated: {exitCode: 1}}
"#,
        );
        assert!(crate::readiness::pod_finished(Some(&done)));
        assert_eq!(runner_exit(&done), Some(1));

        let pull = pod_from(
            r#"
status:
  phase: Pending
  containerStatuses:
  - name: conformance
    state:
      waiting:
        reason: ErrImagePull
        message: 'failed to resolve reference "registry.k8s.io/conformance:v1.20.2"'
"#,
        );
        let why = stuck(&pull).unwrap();
        assert!(
            why.contains("conformance")
                && why.contains("ErrImagePull")
                && why.contains("registry.k8s.io"),
            "{why}"
        );

        let creating = pod_from(
            r#"
status:
  phase: Pending
  containerStatuses:
  - name: conformance
    state: {waiting: {reason: ContainerCreating}}
"#,
        );
        assert_eq!(stuck(&creating), None);

        let unschedulable = pod_from(
            r#"
status:
  phase: Pending
  conditions:
  - type: PodScheduled
    status: "False"
    reason: Unschedulable
    message: 0/2 nodes are available
"#,
        );
        assert!(stuck(&unschedulable).unwrap().contains("0/2 nodes"));
    }

    #[test]
    fn junit_files_are_split_at_the_markers() {
        let log = format!(
            "{FILE_MARKER}junit_01.xml\n<testsuite tests=\"1\">\n</testsuite>\n\n{FILE_MARKER}junit_02.xml\n<testsuite tests=\"2\"></testsuite>\n"
        );
        let files = junit_files(&log);
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].0, "junit_01.xml");
        assert!(files[0].1.contains("tests=\"1\""));
        assert!(files[1].1.contains("tests=\"2\""));
        assert!(junit_files("ls: no such file\n").is_empty());
    }

    #[test]
    fn the_results_script_prints_each_file_after_a_marker() {
        // Runs the script for real against a folder standing in for the results volume.
        let d = tempfile::tempdir().unwrap();
        let script = results_script().replace(RESULTS_DIR, &d.path().display().to_string());
        std::fs::write(d.path().join("junit_01.xml"), "<testsuite/>").unwrap();
        std::fs::write(d.path().join("done"), "").unwrap();
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        let files = junit_files(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(
            files,
            vec![("junit_01.xml".into(), "<testsuite/>\n".into())]
        );
    }
}
