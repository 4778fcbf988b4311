//! The kind provider against a recording fake `kind` (`fixtures/tools/fake-kind.sh`): kind
//! and its node images cannot be obtained on an offline machine, so these trials are named
//! `fake-kind::` and show what shakedown asks of kind, never that a kind cluster worked.

use super::*;
use std::path::Path;
use std::process::Command;

/// kind's v1alpha4 `Cluster`, field for field as kind's `pkg/apis/config/v1alpha4` types
/// declare them, refusing any other field: the config shakedown writes must be one kind
/// would accept. Fields not checked below are there to be accepted, as kind accepts them.
#[allow(dead_code)]
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KindCluster {
    kind: String,
    api_version: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    nodes: Vec<KindNode>,
    #[serde(default)]
    networking: Option<KindNetworking>,
    #[serde(default)]
    feature_gates: Option<serde_yaml::Value>,
    #[serde(default)]
    runtime_config: Option<serde_yaml::Value>,
    #[serde(default)]
    kubeadm_config_patches: Vec<String>,
    #[serde(default, rename = "kubeadmConfigPatchesJSON6902")]
    kubeadm_config_patches_json6902: Vec<serde_yaml::Value>,
    #[serde(default)]
    containerd_config_patches: Vec<String>,
    #[serde(default, rename = "containerdConfigPatchesJSON6902")]
    containerd_config_patches_json6902: Vec<String>,
}

#[allow(dead_code)]
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KindNode {
    role: String,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    labels: Option<serde_yaml::Value>,
    #[serde(default)]
    extra_mounts: Vec<serde_yaml::Value>,
    #[serde(default)]
    extra_port_mappings: Vec<serde_yaml::Value>,
    #[serde(default)]
    kubeadm_config_patches: Vec<String>,
    #[serde(default, rename = "kubeadmConfigPatchesJSON6902")]
    kubeadm_config_patches_json6902: Vec<serde_yaml::Value>,
}

#[allow(dead_code)]
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KindNetworking {
    #[serde(default)]
    ip_family: Option<String>,
    #[serde(default)]
    api_server_port: Option<i32>,
    #[serde(default)]
    api_server_address: Option<String>,
    #[serde(default)]
    pod_subnet: Option<String>,
    #[serde(default)]
    service_subnet: Option<String>,
    #[serde(default, rename = "disableDefaultCNI")]
    disable_default_cni: Option<bool>,
    #[serde(default)]
    kube_proxy_mode: Option<String>,
    #[serde(default)]
    dns_search: Option<Vec<String>>,
}

const FAKE_NODE_IMAGE: &str = "shakedown.local/busybox:1.29";

/// Removes the network the fake made (it labels its own; a real kind's is left alone).
struct FakeNetwork;

impl Drop for FakeNetwork {
    fn drop(&mut self) {
        let fake = !common::docker_lines(&[
            "network",
            "ls",
            "--filter",
            "label=io.shakedown.fake-kind=true",
            "-q",
        ])
        .is_empty();
        if fake {
            let _ = Command::new("docker")
                .args(["network", "rm", "kind"])
                .output();
        }
    }
}

/// `fake-kind::bring-up`: `scenario fixtures/scenarios/cluster/kind.yaml` through the binary
/// with `SHAKEDOWN_KIND` at the fake. The recorded calls and config show what kind was
/// asked: a v1alpha4 config kind's own types accept (1 control plane, 2 workers, no default
/// CNI, the scenario's subnets), `--image kindest/node:v1.20.2`, the kubeconfig into the
/// run's private folder, `export logs` into the artifacts and `delete cluster` of the same
/// name. init and join say kind ran them, and nothing of the cluster is left.
pub fn bring_up() -> Result<(), Failed> {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let bin = env!("CARGO_BIN_EXE_shakedown");
    let root = common::root();
    // The fake's nodes sleep in a container of the busybox image built here (cached).
    if common::docker_lines(&["image", "inspect", "--format", "{{.Id}}", FAKE_NODE_IMAGE])
        .is_empty()
    {
        let built = Command::new(bin)
            .arg("--root")
            .arg(&root)
            .args(["image", "build", "--kubernetes", "v1.20.2"])
            .status()?;
        check(built.success(), || format!("image build failed: {built}"))?;
    }
    // The fake's `kind` network goes however the trial ends.
    let _network = FakeNetwork;
    let dir = trial_dir("fake-kind");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let record = dir.join("fake-kind-record");
    let t = std::time::Instant::now();
    let out = Command::new(bin)
        .arg("--root")
        .arg(&root)
        .arg("scenario")
        .arg(root.join("fixtures/scenarios/cluster/kind.yaml"))
        .arg("--artifacts")
        .arg(&dir)
        .arg("--history")
        .arg(dir.join("history.sqlite"))
        .env("SHAKEDOWN_KIND", root.join("fixtures/tools/fake-kind.sh"))
        .env("FAKE_KIND_RECORD", &record)
        .env("FAKE_KIND_NODE_IMAGE", FAKE_NODE_IMAGE)
        .output()?;
    eprintln!(
        "  exit {:?} in {:.1}s",
        out.status.code(),
        t.elapsed().as_secs_f64()
    );
    check(out.status.success(), || {
        format!(
            "shakedown scenario kind.yaml exited {}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let calls = std::fs::read_to_string(record.join("calls.txt"))?;
    let calls: Vec<&str> = calls.lines().collect();
    eprintln!("  kind was called {} time(s):", calls.len());
    for c in &calls {
        eprintln!("    kind {c}");
    }
    let create = calls
        .iter()
        .find(|c| c.starts_with("create cluster "))
        .ok_or("kind create cluster was never called")?;
    let words: Vec<&str> = create.split_whitespace().collect();
    let flag = |f: &str| -> Option<&str> {
        words
            .iter()
            .position(|w| *w == f)
            .and_then(|i| words.get(i + 1).copied())
    };
    let name = flag("--name").ok_or("create had no --name")?.to_string();
    check(
        name.starts_with("sd-") && name.ends_with("-kind-bridge"),
        || format!("cluster name {name}"),
    )?;
    check(flag("--image") == Some("kindest/node:v1.20.2"), || {
        format!("--image {:?}", flag("--image"))
    })?;
    // The kubeconfig (kind's holds a client key) went to the run's private folder and is
    // gone with the cluster.
    let kubeconfig = flag("--kubeconfig").ok_or("create had no --kubeconfig")?;
    check(!Path::new(kubeconfig).exists(), || {
        format!("the kubeconfig {kubeconfig} is still there after the run")
    })?;
    for want in [
        format!("get nodes --name {name}"),
        format!("delete cluster --name {name}"),
    ] {
        check(calls.iter().any(|c| c.starts_with(&want)), || {
            format!("kind was never asked `{want}`")
        })?;
    }
    check(
        calls
            .iter()
            .any(|c| c.starts_with("export logs ") && c.ends_with(&format!("--name {name}"))),
        || "kind was never asked to export logs".into(),
    )?;
    // The config, read as kind's own types would.
    let text = std::fs::read_to_string(record.join(format!("config-{name}.yaml")))?;
    let cfg: KindCluster = serde_yaml::from_str(&text)
        .map_err(|e| format!("kind's v1alpha4 types refuse the config: {e}\n{text}"))?;
    check(
        cfg.kind == "Cluster" && cfg.api_version == "kind.x-k8s.io/v1alpha4",
        || format!("{} {}", cfg.kind, cfg.api_version),
    )?;
    let roles: Vec<&str> = cfg.nodes.iter().map(|n| n.role.as_str()).collect();
    check(roles == ["control-plane", "worker", "worker"], || {
        format!("roles {roles:?}")
    })?;
    let net = cfg.networking.as_ref().ok_or("no networking")?;
    check(net.disable_default_cni == Some(true), || {
        "the default CNI is not disabled: the scenario's variant could not apply".into()
    })?;
    check(
        net.api_server_address.as_deref() == Some("127.0.0.1"),
        || {
            format!(
                "the API server would listen on {:?}, not the loopback",
                net.api_server_address
            )
        },
    )?;
    check(
        net.pod_subnet.as_deref() == Some("10.244.0.0/16")
            && net.service_subnet.as_deref() == Some("10.96.0.0/12"),
        || format!("subnets {:?} {:?}", net.pod_subnet, net.service_subnet),
    )?;
    // The run's own account: init and join name kind and what it printed.
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json"))?)?;
    let context = summary["jobs"][0]["context"]
        .as_str()
        .unwrap_or("kind-bridge")
        .to_string();
    let suite = &common::read_junit(&dir.join(format!("junit_{context}.xml")))[0];
    cases_are(
        suite,
        "passed",
        ["up", "init", "join", "export-logs", "down"].map(String::from),
    )?;
    let job = dir.join(format!("jobs/{context}"));
    let init = std::fs::read_to_string(job.join("02-init.log"))?;
    let line = init
        .lines()
        .find(|l| l.contains("was run by kind"))
        .ok_or("the init step does not say kind ran kubeadm init")?;
    eprintln!("  {line}");
    check(
        init.contains("kind reported: Starting control-plane"),
        || "the init step does not list what kind reported".into(),
    )?;
    let exported = job.join("logs/kind");
    check(exported.is_dir(), || {
        format!("kind's log export is not in {}", exported.display())
    })?;
    // Nothing of the cluster is left; the fake's network goes too.
    let left = common::docker_lines(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=io.x-k8s.kind.cluster={name}"),
        "--format",
        "{{.Names}}",
    ]);
    check(left.is_empty(), || format!("left after the run: {left:?}"))?;
    Ok(())
}
