//! Smoke checks after bring-up, through the API with kube-rs. Each check is its own testcase:
//! every node Ready, a pod on every node, pod-to-pod traffic across nodes, a Service
//! ClusterIP answering, and pods landing in the namespace they were created for.

use crate::engine::event::{StepOutcome, SubTest};
use crate::images::{AGNHOST_TAG, IMAGE_REPO};
use crate::readiness::{self, endpoints_serving, pod_finished, wait_for};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub const LABEL_SMOKE: &str = "io.shakedown.smoke";
const SERVER_PORT: i32 = 8080;
/// How long one check may wait for a pod; the step deadline bounds the whole.
const POD_WAIT: Duration = Duration::from_secs(90);
/// Connections tried to the Service ClusterIP before it counts as failed.
const SERVICE_TRIES: u32 = 3;

pub struct Smoke {
    pub client: kube::Client,
    pub namespace: String,
    pub run_id: String,
    pub cancel: CancellationToken,
    pub results: Vec<SubTest>,
    /// Before 1.24 a ServiceAccount is usable only once its token secret exists.
    pub token_secrets: bool,
    /// The agnhost image and its pull policy (`Never` when preloaded).
    pub agnhost: String,
    pub pull_policy: &'static str,
}

/// The agnhost image of a cluster whose images are preloaded from this machine's build.
pub fn local_agnhost() -> String {
    format!("{IMAGE_REPO}/agnhost:{AGNHOST_TAG}")
}

/// Where smoke pods go and what they run.
pub struct PodTemplate<'a> {
    pub namespace: &'a str,
    pub run_id: &'a str,
    /// agnhost: preloaded (`Never` pulled) or from a registry (`IfNotPresent`).
    pub image: &'a str,
    pub pull_policy: &'a str,
}

/// A pod pinned to `node` through the scheduler (nodeSelector), tolerating control-plane
/// taints of every era.
pub fn pod(
    t: &PodTemplate<'_>,
    name: &str,
    node: &str,
    role: &str,
    args: &[String],
    restart: &str,
) -> Pod {
    let v = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": t.namespace,
            "labels": { LABEL_SMOKE: t.run_id, "app": role, "io.shakedown.node": node },
        },
        "spec": {
            "nodeSelector": { "kubernetes.io/hostname": node },
            "tolerations": [
                { "key": crate::release::TAINT_MASTER, "operator": "Exists", "effect": "NoSchedule" },
                { "key": crate::release::TAINT_CONTROL_PLANE, "operator": "Exists", "effect": "NoSchedule" },
            ],
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 1,
            "containers": [{ "name": role, "image": t.image, "imagePullPolicy": t.pull_policy, "args": args }],
        },
    });
    serde_json::from_value(v).expect("static pod shape")
}

/// A TCP readiness probe on the server's port, checked every second.
fn listening_probe() -> k8s_openapi::api::core::v1::Probe {
    serde_json::from_value(serde_json::json!({
        "tcpSocket": { "port": SERVER_PORT },
        "periodSeconds": 1,
        "failureThreshold": 1,
    }))
    .expect("static probe shape")
}

impl Smoke {
    fn template(&self) -> PodTemplate<'_> {
        PodTemplate {
            namespace: &self.namespace,
            run_id: &self.run_id,
            image: &self.agnhost,
            pull_policy: self.pull_policy,
        }
    }

    fn record(&mut self, name: &str, started: Instant, outcome: StepOutcome) -> bool {
        let ok = matches!(outcome, StepOutcome::Passed);
        self.results.push(SubTest {
            name: name.into(),
            outcome,
            duration: started.elapsed(),
            flaky: None,
        });
        ok
    }

    fn skip(&mut self, name: &str, reason: String) {
        self.results.push(SubTest {
            name: name.into(),
            outcome: StepOutcome::Skipped { reason },
            duration: Duration::ZERO,
            flaky: None,
        });
    }

    /// Runs every check in order; returns the names of the failed ones.
    pub async fn run(&mut self, nodes: &[String]) -> Vec<String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);

        // 1. Every node Ready.
        let t = Instant::now();
        let node_api: Api<Node> = Api::all(self.client.clone());
        let outcome = match node_api.list(&ListParams::default()).await {
            Ok(l) => {
                let bad: Vec<String> = l
                    .items
                    .iter()
                    .filter_map(|n| readiness::node_ready(n).err())
                    .collect();
                match readiness::nodes_registered(nodes, &l.items) {
                    Err(e) => StepOutcome::test_failure(e),
                    Ok(()) if bad.is_empty() => StepOutcome::Passed,
                    Ok(()) => StepOutcome::test_failure(bad.join("\n")),
                }
            }
            Err(e) => StepOutcome::test_failure(format!("failed to list nodes: {e}")),
        };
        self.record("nodes-ready", t, outcome);

        // Namespace for everything below.
        let ns_api: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": { "name": self.namespace, "labels": { LABEL_SMOKE: self.run_id } }
        }))
        .expect("static namespace shape");
        let created = match ns_api.create(&PostParams::default(), &ns).await {
            Ok(_) => self.wait_for_service_account().await,
            Err(e) => Err(format!(
                "failed to create namespace {}: {e}",
                self.namespace
            )),
        };
        if let Err(why) = created {
            for n in [
                "pod-on-every-node",
                "pod-to-pod-across-nodes",
                "service-clusterip",
                "pods-in-their-namespace",
            ] {
                self.skip(n, why.clone());
            }
            return self.failed();
        }

        // 2. A pod schedules and runs on every node.
        let t = Instant::now();
        let mut servers = Vec::new();
        let mut problems = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            let name = format!("server-{i}");
            let args = vec!["netexec".to_string(), format!("--http-port={SERVER_PORT}")];
            let mut server = pod(
                &self.template(),
                &name,
                node,
                "smoke-server",
                &args,
                "Always",
            );
            // Ready only once it listens: on a slow node (an emulated VM) netexec starts
            // seconds after its container.
            if let Some(c) = server.spec.as_mut().and_then(|s| s.containers.first_mut()) {
                c.readiness_probe = Some(listening_probe());
            }
            match pods.create(&PostParams::default(), &server).await {
                Ok(_) => servers.push((name, node.clone())),
                Err(e) => problems.push(format!("failed to create {name} on {node}: {e}")),
            }
        }
        let mut server_ips = Vec::new();
        for (name, node) in &servers {
            match wait_for(
                pods.clone(),
                name,
                |p: Option<&Pod>| p.is_some_and(|p| readiness::pod_ready(p).is_ok()),
                POD_WAIT,
                &self.cancel,
            )
            .await
            {
                Ok(Some(p)) => {
                    let on = p
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_default();
                    let ip = p
                        .status
                        .as_ref()
                        .and_then(|s| s.pod_ip.clone())
                        .unwrap_or_default();
                    if &on != node {
                        problems.push(format!("{name} ran on {on}, not {node}"));
                    } else {
                        server_ips.push((node.clone(), ip));
                    }
                }
                Ok(None) => problems.push(format!("{name} was deleted while waiting")),
                Err(e) => {
                    let why = pods
                        .get(name)
                        .await
                        .ok()
                        .and_then(|p| readiness::pod_ready(&p).err())
                        .unwrap_or_default();
                    problems.push(format!("{e}: {why}"));
                }
            }
        }
        let all_up = problems.is_empty();
        self.record(
            "pod-on-every-node",
            t,
            if all_up {
                StepOutcome::Passed
            } else {
                StepOutcome::test_failure(problems.join("\n"))
            },
        );

        // 3. Pod-to-pod traffic across nodes.
        let t = Instant::now();
        if !all_up {
            self.skip(
                "pod-to-pod-across-nodes",
                "skipped: pod-on-every-node failed".into(),
            );
        } else if server_ips.len() < 2 {
            self.skip(
                "pod-to-pod-across-nodes",
                "skipped: the topology has a single node".into(),
            );
        } else {
            let mut probs = Vec::new();
            for (i, (from, _)) in server_ips.iter().enumerate() {
                let (to, ip) = &server_ips[(i + 1) % server_ips.len()];
                let target = format!("{ip}:{SERVER_PORT}");
                if let Err(e) = self
                    .client_pod(&pods, &format!("p2p-{i}"), from, &target)
                    .await
                {
                    probs.push(format!("pod on {from} → pod on {to} ({target}): {e}"));
                }
            }
            self.record(
                "pod-to-pod-across-nodes",
                t,
                if probs.is_empty() {
                    StepOutcome::Passed
                } else {
                    StepOutcome::test_failure(probs.join("\n"))
                },
            );
        }

        // 4. A Service ClusterIP answers (through kube-proxy).
        let t = Instant::now();
        if !all_up {
            self.skip(
                "service-clusterip",
                "skipped: pod-on-every-node failed".into(),
            );
        } else {
            let svc: Service = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": { "name": "smoke", "namespace": self.namespace, "labels": { LABEL_SMOKE: self.run_id } },
                "spec": { "selector": { "app": "smoke-server" }, "ports": [{ "port": 80, "targetPort": SERVER_PORT }] }
            }))
            .expect("static service shape");
            let svcs: Api<Service> = Api::namespaced(self.client.clone(), &self.namespace);
            let outcome = match svcs.create(&PostParams::default(), &svc).await {
                Err(e) => StepOutcome::test_failure(format!("failed to create Service smoke: {e}")),
                Ok(s) => {
                    let ip = s.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
                    let from = &nodes[nodes.len() - 1];
                    let eps: Api<Endpoints> = Api::namespaced(self.client.clone(), &self.namespace);
                    match wait_for(eps, "smoke", endpoints_serving, POD_WAIT, &self.cancel).await {
                        Err(e) => StepOutcome::test_failure(format!(
                            "Service smoke never got endpoints: {e}"
                        )),
                        Ok(_) => {
                            // Endpoints exist; each node's kube-proxy programs them on its
                            // next sync. A few tries, as e2e's service checks poll.
                            let mut tries = Vec::new();
                            for i in 1..=SERVICE_TRIES {
                                match self
                                    .client_pod(
                                        &pods,
                                        &format!("svc-client-{i}"),
                                        from,
                                        &format!("{ip}:80"),
                                    )
                                    .await
                                {
                                    Ok(()) => {
                                        tries.clear();
                                        break;
                                    }
                                    Err(e) => tries.push(format!("try {i}: {e}")),
                                }
                                if i == SERVICE_TRIES {
                                    break;
                                }
                                tokio::select! {
                                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                                    _ = self.cancel.cancelled() => break,
                                }
                            }
                            if tries.is_empty() {
                                StepOutcome::Passed
                            } else {
                                StepOutcome::test_failure(format!(
                                    "pod on {from} → Service smoke ClusterIP {ip}:80:\n{}",
                                    tries.join("\n")
                                ))
                            }
                        }
                    }
                }
            };
            self.record("service-clusterip", t, outcome);
        }

        // 5. Cluster DNS, where a DNS addon runs.
        let t = Instant::now();
        let svcs: Api<Service> = Api::namespaced(self.client.clone(), "kube-system");
        match svcs.get_opt("kube-dns").await {
            Ok(Some(_)) => {
                let from = &nodes[0];
                let o = match self
                    .shell_pod(
                        &pods,
                        "dns",
                        from,
                        "nslookup kubernetes.default.svc.cluster.local",
                    )
                    .await
                {
                    Ok(()) => StepOutcome::Passed,
                    Err(e) => StepOutcome::test_failure(format!(
                        "kubernetes.default did not resolve from a pod on {from}: {e}"
                    )),
                };
                self.record("dns-kubernetes-default", t, o);
            }
            Ok(None) => self.skip(
                "dns-kubernetes-default",
                "skipped: no DNS addon is installed (no kube-dns Service in kube-system)".into(),
            ),
            Err(e) => {
                self.record(
                    "dns-kubernetes-default",
                    t,
                    StepOutcome::test_failure(format!(
                        "failed to look up the kube-dns Service: {e}"
                    )),
                );
            }
        }

        // 6. Data on a volume survives its pod being deleted and re-created on the same node.
        let t = Instant::now();
        let node = &nodes[nodes.len() - 1];
        let stamp = format!("{}-{}", self.run_id, t.elapsed().as_nanos());
        let o = match self.volume_survives(&pods, node, &stamp).await {
            Ok(()) => StepOutcome::Passed,
            Err(e) => StepOutcome::test_failure(e),
        };
        self.record("volume-survives-pod-recreate", t, o);

        // 7. A ServiceAccount token works against the API; 8. RBAC denies what it should.
        let api = "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT";
        let curl = "curl -sS -o /dev/null -w '%{http_code}' --cacert /var/run/secrets/kubernetes.io/serviceaccount/ca.crt \
                    -H \"Authorization: Bearer $(cat /var/run/secrets/kubernetes.io/serviceaccount/token)\"";
        let t = Instant::now();
        let script = format!("code=$({curl} {api}/api); echo \"HTTP $code\"; [ \"$code\" = 200 ]");
        let o = match self.shell_pod(&pods, "sa-token", &nodes[0], &script).await {
            Ok(()) => StepOutcome::Passed,
            Err(e) => StepOutcome::test_failure(format!(
                "the default ServiceAccount token did not authenticate GET /api: {e}"
            )),
        };
        self.record("serviceaccount-token", t, o);
        let t = Instant::now();
        let script = format!("code=$({curl} {api}/api/v1/namespaces/kube-system/secrets); echo \"HTTP $code\"; [ \"$code\" = 403 ]");
        let o = match self.shell_pod(&pods, "rbac-deny", &nodes[0], &script).await {
            Ok(()) => StepOutcome::Passed,
            Err(e) => StepOutcome::test_failure(format!(
                "listing kube-system secrets as the default ServiceAccount was not forbidden: {e}"
            )),
        };
        self.record("rbac-denies-secrets", t, o);

        // 9. Pods land in the namespace they were created for, and nowhere else.
        let t = Instant::now();
        let sel = ListParams::default().labels(&format!("{LABEL_SMOKE}={}", self.run_id));
        let outcome = match (
            pods.list(&sel).await,
            Api::<Pod>::all(self.client.clone()).list(&sel).await,
        ) {
            (Ok(here), Ok(everywhere)) => {
                let stray: Vec<String> = everywhere
                    .items
                    .iter()
                    .filter(|p| p.metadata.namespace.as_deref() != Some(self.namespace.as_str()))
                    .map(|p| {
                        format!(
                            "{}/{}",
                            p.metadata.namespace.clone().unwrap_or_default(),
                            p.metadata.name.clone().unwrap_or_default()
                        )
                    })
                    .collect();
                if here.items.is_empty() {
                    StepOutcome::test_failure(format!(
                        "no smoke pod found in namespace {}",
                        self.namespace
                    ))
                } else if !stray.is_empty() {
                    StepOutcome::test_failure(format!(
                        "smoke pods outside namespace {}: {}",
                        self.namespace,
                        stray.join(", ")
                    ))
                } else {
                    StepOutcome::Passed
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                StepOutcome::test_failure(format!("failed to list pods: {e}"))
            }
        };
        self.record("pods-in-their-namespace", t, outcome);
        self.failed()
    }

    /// A run-to-completion pod on `node` running `script` in `sh -c`; Ok when it succeeded,
    /// otherwise its phase and logs.
    async fn shell_pod(
        &self,
        pods: &Api<Pod>,
        name: &str,
        node: &str,
        script: &str,
    ) -> Result<(), String> {
        self.shell_pod_with(pods, name, node, script, None).await
    }

    async fn shell_pod_with(
        &self,
        pods: &Api<Pod>,
        name: &str,
        node: &str,
        script: &str,
        host_dir: Option<&str>,
    ) -> Result<(), String> {
        let mut p = pod(&self.template(), name, node, "smoke-client", &[], "Never");
        if let Some(spec) = p.spec.as_mut() {
            spec.containers[0].command = Some(vec!["sh".into(), "-c".into(), script.into()]);
            if let Some(dir) = host_dir {
                let v: k8s_openapi::api::core::v1::Volume =
                    serde_json::from_value(serde_json::json!({
                        "name": "data", "hostPath": { "path": dir, "type": "DirectoryOrCreate" }
                    }))
                    .expect("static volume shape");
                spec.volumes = Some(vec![v]);
                spec.containers[0].volume_mounts =
                    Some(vec![serde_json::from_value(serde_json::json!({
                        "name": "data", "mountPath": "/data"
                    }))
                    .expect("static mount shape")]);
            }
        }
        self.run_to_completion(pods, p).await
    }

    /// Writes a stamp through a hostPath volume, deletes the pod, and reads it back from a
    /// new pod on the same node.
    async fn volume_survives(
        &self,
        pods: &Api<Pod>,
        node: &str,
        stamp: &str,
    ) -> Result<(), String> {
        let dir = format!("/var/lib/shakedown-smoke/{}", self.namespace);
        self.shell_pod_with(
            pods,
            "vol-writer",
            node,
            &format!("echo {stamp} > /data/stamp"),
            Some(&dir),
        )
        .await?;
        pods.delete("vol-writer", &DeleteParams::default())
            .await
            .map_err(|e| format!("failed to delete vol-writer: {e}"))?;
        let gone = |p: Option<&Pod>| p.is_none();
        wait_for(pods.clone(), "vol-writer", gone, POD_WAIT, &self.cancel).await?;
        self.shell_pod_with(
            pods,
            "vol-reader",
            node,
            &format!("grep -qx {stamp} /data/stamp"),
            Some(&dir),
        )
        .await
        .map_err(|e| {
            format!("the data written before the pod was deleted was not there afterwards: {e}")
        })
    }

    /// A run-to-completion pod on `node` that connects to `target`; Ok when it succeeded.
    async fn client_pod(
        &self,
        pods: &Api<Pod>,
        name: &str,
        node: &str,
        target: &str,
    ) -> Result<(), String> {
        let args = vec![
            "connect".to_string(),
            target.to_string(),
            "--timeout=5s".to_string(),
        ];
        let p = pod(&self.template(), name, node, "smoke-client", &args, "Never");
        self.run_to_completion(pods, p).await
    }

    /// Creates a run-to-completion pod and waits for it; Ok when it succeeded, otherwise its
    /// phase and logs.
    async fn run_to_completion(&self, pods: &Api<Pod>, p: Pod) -> Result<(), String> {
        run_to_completion(pods, p, POD_WAIT, &self.cancel)
            .await
            .map(drop)
    }

    /// Pods cannot be created until the namespace's `default` ServiceAccount (and, before
    /// 1.24, its token) exists; the e2e framework waits for the same.
    async fn wait_for_service_account(&self) -> Result<(), String> {
        service_account_usable(
            &self.client,
            &self.namespace,
            self.token_secrets,
            &self.cancel,
        )
        .await
    }

    fn failed(&self) -> Vec<String> {
        crate::engine::event::failed_names(&self.results)
    }

    /// Deletes the smoke namespace (and with it every object the checks created).
    pub async fn cleanup(&self) {
        let ns_api: Api<Namespace> = Api::all(self.client.clone());
        let _ = ns_api
            .delete(&self.namespace, &DeleteParams::background())
            .await;
    }
}

/// Creates a run-to-completion pod and waits for it (at most `limit`): its logs when it
/// succeeded, otherwise its phase and logs.
pub async fn run_to_completion(
    pods: &Api<Pod>,
    p: Pod,
    limit: Duration,
    cancel: &CancellationToken,
) -> Result<String, String> {
    let name = p.metadata.name.clone().unwrap_or_default();
    pods.create(&PostParams::default(), &p)
        .await
        .map_err(|e| format!("failed to create {name}: {e}"))?;
    let got = wait_for(pods.clone(), &name, pod_finished, limit, cancel).await?;
    let phase = got
        .as_ref()
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let logs = pods
        .logs(&name, &LogParams::default())
        .await
        .unwrap_or_default();
    if phase == "Succeeded" {
        Ok(logs)
    } else {
        Err(format!("{name} {phase}: {}", logs.trim()))
    }
}

/// Waits (60 s at most) until namespace `ns`'s `default` ServiceAccount can run pods: it
/// exists, and before 1.24 (`token_secrets`) its token secret does too. The e2e framework
/// waits for the same.
pub async fn service_account_usable(
    client: &kube::Client,
    ns: &str,
    token_secrets: bool,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let usable = move |sa: Option<&ServiceAccount>| {
        sa.is_some_and(|sa| !token_secrets || sa.secrets.as_ref().is_some_and(|s| !s.is_empty()))
    };
    wait_for(sas, "default", usable, Duration::from_secs(60), cancel)
        .await
        .map(drop)
        .map_err(|e| format!("ServiceAccount default in {ns} not usable: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoke_pods_are_pinned_labelled_and_tolerate_every_era() {
        let agnhost = local_agnhost();
        let t = PodTemplate {
            namespace: "ns",
            run_id: "run1",
            image: &agnhost,
            pull_policy: "Never",
        };
        let p = pod(
            &t,
            "server-0",
            "cp1",
            "smoke-server",
            &["netexec".into()],
            "Always",
        );
        let spec = p.spec.unwrap();
        assert_eq!(spec.node_selector.unwrap()["kubernetes.io/hostname"], "cp1");
        let keys: Vec<String> = spec
            .tolerations
            .unwrap()
            .into_iter()
            .filter_map(|t| t.key)
            .collect();
        assert_eq!(
            keys,
            [
                crate::release::TAINT_MASTER,
                crate::release::TAINT_CONTROL_PLANE
            ]
        );
        assert_eq!(p.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(p.metadata.labels.unwrap()[LABEL_SMOKE], "run1");
        assert_eq!(
            spec.containers[0].image.as_deref(),
            Some("shakedown.local/agnhost:2.21")
        );
        assert_eq!(
            spec.containers[0].image_pull_policy.as_deref(),
            Some("Never")
        );
    }
}
