//! `etcd-backup`: an etcd snapshot on the first control plane, checked with `snapshot
//! status`, then a restore drill: the snapshot is restored into a throwaway etcd on the same
//! node and its key count compared with the live cluster's at the snapshot's revision.
//! The snapshot holds every secret of the cluster: it never leaves the node, is never
//! exported, and is removed when the step ends, however it ends.

use super::cluster::cluster;
use super::{Action, StepContext, StepError};
use crate::actions::JobStateExt;
use crate::process::Runner;
use crate::provider::Cluster;
use std::time::{Duration, Instant};

pub struct EtcdBackup;

/// Where the snapshot and the restored data live on the node (root only).
const BACKUP_DIR: &str = "/var/lib/shakedown-backup";
/// The throwaway etcd's ports on the node's loopback.
const DRILL_CLIENT: &str = "http://127.0.0.1:22379";
const DRILL_PEER: &str = "http://127.0.0.1:22380";

#[derive(Debug, serde::Deserialize, PartialEq, Eq)]
pub struct SnapshotStatus {
    pub hash: u64,
    pub revision: i64,
    #[serde(rename = "totalKey")]
    pub total_key: u64,
    #[serde(rename = "totalSize")]
    pub total_size: u64,
}

/// `etcdctl snapshot status -w json`.
pub fn parse_status(json: &str) -> Result<SnapshotStatus, String> {
    serde_json::from_str(json.trim())
        .map_err(|e| format!("failed to parse `snapshot status`: {e}: {json}"))
}

/// `etcdctl get / --from-key --keys-only --limit=1 -w json`: the range's key count, which
/// etcd gives whatever the limit (etcdctl 3.4 has no `--count-only`; absent when 0), and
/// the revision the answer is at. The one key listed is not kept: not its name, not in an
/// error.
pub fn parse_count(json: &str) -> Result<(u64, i64), String> {
    #[derive(serde::Deserialize)]
    struct Header {
        revision: i64,
    }
    #[derive(serde::Deserialize)]
    struct Count {
        header: Header,
        #[serde(default)]
        count: u64,
    }
    serde_json::from_str::<Count>(json.trim())
        .map(|c| (c.count, c.header.revision))
        .map_err(|e| format!("failed to parse the key count from etcdctl: {e}"))
}

/// The etcd image of kubeadm's static pod manifest.
pub fn etcd_image(manifest: &str) -> Result<String, String> {
    let pod: k8s_openapi::api::core::v1::Pod = serde_yaml::from_str(manifest)
        .map_err(|e| format!("failed to parse the etcd manifest: {e}"))?;
    pod.spec
        .and_then(|s| s.containers.into_iter().find(|c| c.name == "etcd"))
        .and_then(|c| c.image)
        .ok_or_else(|| "the etcd manifest has no etcd container image".to_string())
}

/// A command in a throwaway container of the etcd image on the node, through the node's
/// containerd, with the node's network, its etcd certificates (read-only) and the backup
/// folder.
fn in_etcd_image(
    c: &Cluster,
    node: &str,
    image: &str,
    name: &str,
    detach: bool,
    args: &[&str],
) -> crate::process::Cmd {
    in_etcd_image_with(c, node, image, name, detach, true, args)
}

/// [`in_etcd_image`], with the backup folder mounted or not (it must exist to be mounted).
fn in_etcd_image_with(
    c: &Cluster,
    node: &str,
    image: &str,
    name: &str,
    detach: bool,
    backup: bool,
    args: &[&str],
) -> crate::process::Cmd {
    let mut a: Vec<String> = vec!["ctr".into(), "-n".into(), "k8s.io".into(), "run".into()];
    a.push(if detach { "-d".into() } else { "--rm".into() });
    a.extend([
        "--net-host".to_string(),
        "--mount".into(),
        "type=bind,src=/etc/kubernetes/pki/etcd,dst=/etc/kubernetes/pki/etcd,options=rbind:ro"
            .into(),
    ]);
    if backup {
        a.extend([
            "--mount".into(),
            format!("type=bind,src={BACKUP_DIR},dst={BACKUP_DIR},options=rbind:rw"),
        ]);
    }
    a.extend([image.into(), name.into()]);
    a.extend(args.iter().map(|s| s.to_string()));
    c.exec(node, &a)
}

/// Keys are counted from "/" on (every Kubernetes key starts with it), the same range on
/// both sides, at the snapshot's revision.
const FROM_KEY: &str = "/";

/// How etcdctl reaches the cluster's etcd, as kubeadm's health-check client.
pub(super) enum Etcdctl {
    /// Stacked: inside the first control plane's etcd pod, through the API.
    Pod { node: String },
    /// External: the members are no Kubernetes pods; a throwaway container of their etcd
    /// image on the first member's node, whose certificates it mounts read-only.
    Image { node: String, image: String },
}

impl Etcdctl {
    /// Reads the external etcd's image from its static pod's manifest, once.
    pub async fn of(r: &Runner, c: &Cluster) -> Result<Etcdctl, String> {
        let node = c.etcd_host().name.clone();
        if c.etcd.is_empty() {
            return Ok(Etcdctl::Pod { node });
        }
        let manifest = r
            .output(c.exec(&node, &["cat", "/etc/kubernetes/manifests/etcd.yaml"]))
            .await
            .map_err(|e| crate::error::chain(&e))?;
        let image = etcd_image(&manifest)?;
        Ok(Etcdctl::Image { node, image })
    }

    /// `etcdctl ARGS` against the local member, with TLS.
    pub fn cmd(&self, c: &Cluster, args: &[&str]) -> crate::process::Cmd {
        let mut full: Vec<&str> = vec!["etcdctl"];
        full.extend(TLS);
        full.extend(args);
        match self {
            Etcdctl::Pod { node } => {
                let pod = format!("etcd-{node}");
                let mut a = vec![
                    "kubectl",
                    "--kubeconfig=/etc/kubernetes/admin.conf",
                    "-n",
                    "kube-system",
                    "exec",
                    &pod,
                    "--",
                ];
                a.extend(full);
                c.exec(node, &a)
            }
            Etcdctl::Image { node, image } => {
                static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let name = format!(
                    "sd-etcdctl-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                );
                in_etcd_image_with(c, node, image, &name, false, false, &full)
            }
        }
    }
}

const TLS: [&str; 4] = [
    "--endpoints=https://127.0.0.1:2379",
    "--cacert=/etc/kubernetes/pki/etcd/ca.crt",
    "--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt",
    "--key=/etc/kubernetes/pki/etcd/healthcheck-client.key",
];

async fn drill(
    cx: &StepContext<'_>,
    c: &Cluster,
    r: &Runner,
    node: &str,
    image: &str,
    id: &str,
) -> Result<(), StepError> {
    let snapshot = format!("{BACKUP_DIR}/snapshot.db");
    let restored = format!("{BACKUP_DIR}/restored");
    let t = Instant::now();
    let mut save = vec!["etcdctl"];
    save.extend(TLS);
    save.extend(["snapshot", "save", &snapshot]);
    r.run(in_etcd_image(
        c,
        node,
        image,
        &format!("sd-save-{id}"),
        false,
        &save,
    ))
    .await?;
    let status = parse_status(
        &r.output(in_etcd_image(
            c,
            node,
            image,
            &format!("sd-status-{id}"),
            false,
            &["etcdctl", "snapshot", "status", &snapshot, "-w", "json"],
        ))
        .await?,
    )
    .map_err(StepError::new)?;
    cx.note(format!(
        "snapshot saved in {:.1}s: {} bytes, revision {}, {} keys (hash {:#x}); kept on {node} only",
        t.elapsed().as_secs_f64(),
        status.total_size,
        status.revision,
        status.total_key,
        status.hash
    ));
    let rev = format!("--rev={}", status.revision);
    let mut live = vec!["etcdctl"];
    live.extend(TLS);
    live.extend([
        "get",
        FROM_KEY,
        "--from-key",
        "--keys-only",
        "--limit=1",
        &rev,
        "-w",
        "json",
    ]);
    let (live_count, _) = parse_count(
        &r.output(in_etcd_image(
            c,
            node,
            image,
            &format!("sd-live-{id}"),
            false,
            &live,
        ))
        .await?,
    )
    .map_err(StepError::new)?;
    if live_count == 0 {
        return Err(StepError::new(format!(
            "failed the restore drill: the live cluster holds no keys from {FROM_KEY:?} at revision {}, so there is nothing to compare",
            status.revision
        )));
    }

    let t = Instant::now();
    let initial = format!("drill={DRILL_PEER}");
    r.run(in_etcd_image(
        c,
        node,
        image,
        &format!("sd-restore-{id}"),
        false,
        &[
            "etcdctl",
            "snapshot",
            "restore",
            &snapshot,
            "--data-dir",
            &restored,
            "--name",
            "drill",
            "--initial-cluster",
            &initial,
            "--initial-advertise-peer-urls",
            DRILL_PEER,
        ],
    ))
    .await?;
    r.run(in_etcd_image(
        c,
        node,
        image,
        &format!("sd-drill-{id}"),
        true,
        &[
            "etcd",
            "--name",
            "drill",
            "--data-dir",
            &restored,
            "--listen-client-urls",
            DRILL_CLIENT,
            "--advertise-client-urls",
            DRILL_CLIENT,
            "--listen-peer-urls",
            DRILL_PEER,
            "--initial-advertise-peer-urls",
            DRILL_PEER,
            "--initial-cluster",
            &initial,
        ],
    ))
    .await?;
    let endpoint = format!("--endpoints={DRILL_CLIENT}");
    let mut restored_count = None;
    let mut last = String::new();
    for i in 0..30 {
        match r
            .output(in_etcd_image(
                c,
                node,
                image,
                &format!("sd-count-{id}-{i}"),
                false,
                &[
                    "etcdctl",
                    &endpoint,
                    "get",
                    FROM_KEY,
                    "--from-key",
                    "--keys-only",
                    "--limit=1",
                    &rev,
                    "-w",
                    "json",
                ],
            ))
            .await
        {
            Ok(json) => {
                restored_count = Some(parse_count(&json).map_err(StepError::new)?);
                break;
            }
            // Not up yet: the dial fails. Any other failure is the answer.
            Err(e)
                if e.stderr().contains("connection refused")
                    || e.stderr().contains("deadline exceeded") =>
            {
                last = crate::error::chain(&e)
            }
            Err(e) => return Err(e.into()),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = cx.cancel.cancelled() => return Err(StepError::new("the restore drill was stopped while the restored etcd started")),
        }
    }
    let (restored_count, restored_rev) = restored_count.ok_or_else(|| {
        StepError::new(format!(
            "failed the restore drill: the restored etcd never answered: {last}"
        ))
    })?;
    cx.note(format!(
        "restore drill in {:.1}s: the restored etcd holds {restored_count} keys, the live cluster held {live_count} at revision {}",
        t.elapsed().as_secs_f64(),
        status.revision
    ));
    if restored_rev != status.revision {
        return Err(StepError::new(format!(
            "failed the restore drill: the restored etcd answered at revision {restored_rev}, the snapshot is at {}",
            status.revision
        )));
    }
    if restored_count != live_count {
        return Err(StepError::new(format!(
            "failed the restore drill: the restored snapshot holds {restored_count} keys, the live cluster held {live_count} at revision {}",
            status.revision
        )));
    }
    Ok(())
}

#[async_trait::async_trait]
impl Action for EtcdBackup {
    fn describe(&self, _cx: &StepContext<'_>) -> Vec<String> {
        vec![
            "save an etcd snapshot on the first control plane and check it with `snapshot status` (size and revision in the log; the snapshot never leaves the node)".into(),
            "restore it into a throwaway etcd on the same node and compare its key count with the live cluster's at the snapshot's revision".into(),
        ]
    }

    async fn run(&self, cx: &mut StepContext<'_>) -> Result<(), StepError> {
        backup_and_drill(cx, cluster(cx)?).await
    }
}

/// Saves a snapshot on the first control plane, checks it, restores it into a throwaway
/// etcd and compares key counts; removes both whatever happened. The `etcd-backup` step,
/// and the first thing each upgrade hop does.
pub async fn backup_and_drill(cx: &StepContext<'_>, c: &Cluster) -> Result<(), StepError> {
    {
        if cx
            .job()
            .artifacts
            .as_ref()
            .is_some_and(|a| a.runtime == crate::release::era::Runtime::Docker)
        {
            return Err(StepError::new(
                "failed to back up etcd: the restore drill runs through the node's containerd, and this cluster's runtime is docker (dockershim)",
            ));
        }
        let node = c.etcd_host().name.clone();
        let r = cx.runner();
        // The image kubelet runs etcd from, as the static pod's manifest names it.
        let manifest = r
            .output(c.exec(&node, &["cat", "/etc/kubernetes/manifests/etcd.yaml"]))
            .await?;
        let image = etcd_image(&manifest).map_err(StepError::new)?;
        let id = cx.run.settings.run_id.to_ascii_lowercase();
        r.run(c.exec(
            &node,
            &[
                "sh",
                "-c",
                &format!("rm -rf {BACKUP_DIR} && mkdir -m 0700 {BACKUP_DIR}"),
            ],
        ))
        .await?;
        let result = drill(cx, c, &r, &node, &image, &id).await;
        // However the drill ended: no throwaway etcd, no snapshot left on the node.
        let cleanup = format!(
            "ctr -n k8s.io task kill -s KILL sd-drill-{id} 2>/dev/null; sleep 1; ctr -n k8s.io task rm -f sd-drill-{id} 2>/dev/null; ctr -n k8s.io container rm sd-drill-{id} 2>/dev/null; rm -rf {BACKUP_DIR}"
        );
        // Its own token: the step's may have fired (deadline, Ctrl-C), and the snapshot
        // must go all the same; bounded at 30 s.
        let janitor = Runner {
            log: cx.log.clone(),
            cancel: tokio_util::sync::CancellationToken::new(),
            grace: Duration::from_secs(1),
        };
        let cleaned = tokio::time::timeout(
            Duration::from_secs(30),
            janitor.run(c.exec(&node, &["sh", "-c", &cleanup])),
        )
        .await;
        let cleaned = match cleaned {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!(
                "failed to remove the snapshot and the throwaway etcd from {node}: {}",
                crate::error::chain(&e)
            )),
            Err(_) => Err(format!(
                "failed to remove the snapshot and the throwaway etcd from {node} within 30s"
            )),
        };
        match (result, cleaned) {
            (Ok(()), Ok(())) => Ok(()),
            (Ok(()), Err(e)) => Err(StepError::infra(e)),
            (Err(e), Ok(())) => Err(e),
            (Err(e), Err(cleanup)) => {
                cx.note(cleanup);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_etcd_image_comes_from_the_static_pod() {
        let m = r#"
apiVersion: v1
kind: Pod
metadata: {name: etcd, namespace: kube-system}
spec:
  containers:
  - name: etcd
    image: shakedown.local/etcd:3.4.23-shakedown
    command: [etcd, --data-dir=/var/lib/etcd]
"#;
        assert_eq!(
            etcd_image(m).unwrap(),
            "shakedown.local/etcd:3.4.23-shakedown"
        );
        assert!(etcd_image("apiVersion: v1\nkind: Pod\nspec: {containers: []}").is_err());
    }

    #[test]
    fn snapshot_status_and_counts_parse() {
        let s = parse_status(
            r#"{"hash":3104196234,"revision":2251,"totalKey":1069,"totalSize":2654208}"#,
        )
        .unwrap();
        assert_eq!(
            s,
            SnapshotStatus {
                hash: 3104196234,
                revision: 2251,
                total_key: 1069,
                total_size: 2654208
            }
        );
        assert!(parse_status("Error: snapshot file not found").is_err());
        let c = r#"{"header":{"cluster_id":1,"member_id":2,"revision":2251,"raft_term":4},"kvs":[{"key":"L3JlZ2lzdHJ5","create_revision":5}],"more":true,"count":512}"#;
        assert_eq!(parse_count(c).unwrap(), (512, 2251));
        // etcd leaves `count` out when it is zero.
        assert_eq!(parse_count(r#"{"header":{"revision":1}}"#).unwrap(), (0, 1));
        // An answer without a header is not a count.
        let e = parse_count(r#"{"kvs":[{"key":"c2VjcmV0"}]}"#).unwrap_err();
        assert!(
            !e.contains("c2VjcmV0"),
            "the key leaked into the error: {e}"
        );
    }
}
