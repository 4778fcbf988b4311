//! `storage`: the storage tier (`crate::storage`); each check is its own testcase.
//! `node-loss`: the tier's check that stops a node for good, a step of its own so it can
//! come after the steps that need every node.

use super::cluster::{client, cluster};
use super::{Action, StepContext, StepError};
use crate::actions::JobStateExt;
use crate::process::{Cmd, Runner};
use crate::provider::Cluster;

pub struct Storage;

/// The tier's node access: commands through the provider, logged as every command is.
struct ProviderNodes<'a> {
    cluster: &'a Cluster,
    runner: Runner,
}

#[async_trait::async_trait]
impl crate::storage::Nodes for ProviderNodes<'_> {
    fn names(&self) -> Vec<String> {
        self.cluster.node_names()
    }

    async fn output(&self, node: &str, args: &[&str]) -> Result<String, String> {
        self.runner
            .output(self.cluster.exec(node, args))
            .await
            .map_err(|e| crate::error::chain(&e))
    }

    fn shared_folder(&self) -> Option<String> {
        self.cluster.provider.shared_folder().map(String::from)
    }

    async fn stop(&self, node: &str) -> Result<(), String> {
        self.power(self.cluster.provider.stop_node(node), "stop", node)
            .await
    }

    async fn start(&self, node: &str) -> Result<(), String> {
        self.power(self.cluster.provider.start_node(node), "start", node)
            .await
    }
}

impl ProviderNodes<'_> {
    /// Runs the provider's command that stops or starts `node` (None: it has none).
    async fn power(&self, cmd: Option<Cmd>, verb: &str, node: &str) -> Result<(), String> {
        let cmd = cmd.ok_or_else(|| {
            format!(
                "failed to {verb} {node}: provider {} cannot {verb} nodes",
                self.cluster.provider.name()
            )
        })?;
        self.runner
            .run(cmd)
            .await
            .map(drop)
            .map_err(|e| crate::error::chain(&e))
    }
}

/// The tier's checks over a cluster, in a namespace named for `what` and the run.
async fn tier<'a>(
    cx: &StepContext<'_>,
    c: &Cluster,
    nodes: &'a ProviderNodes<'a>,
    what: &str,
    say: &'a (dyn Fn(String) + Sync),
) -> Result<crate::storage::Storage<'a>, StepError> {
    let (image, pull_policy) = cx.agnhost();
    let spec = &cx.run.scenario.scenario.storage;
    Ok(crate::storage::Storage {
        client: client(c).await?,
        namespace: format!("shakedown-{what}-{}", cx.run.settings.run_id).to_ascii_lowercase(),
        run_id: cx.run.settings.run_id.clone(),
        cancel: cx.cancel.clone(),
        image,
        pull_policy,
        settings: crate::storage::Settings {
            shared_secret_pods: spec.shared_secret_pods,
            running_within: spec.running_within,
        },
        nodes: c
            .provider
            .runs_commands()
            .then_some(nodes as &dyn crate::storage::Nodes),
        token_secrets: cx.run.scenario.version.is_none_or(|v| v.minor < 24),
        results: Vec::new(),
        figures: Vec::new(),
        say,
    })
}

/// What the checks found: their testcases and figures, once their objects are removed.
type Found = (Vec<crate::engine::event::SubTest>, Vec<(String, String)>);

async fn close(mut checks: crate::storage::Storage<'_>) -> Found {
    checks.cleanup().await;
    (
        std::mem::take(&mut checks.results),
        std::mem::take(&mut checks.figures),
    )
}

/// Records the checks' figures as properties and ends the step by their outcomes.
fn finish(
    cx: &mut StepContext<'_>,
    (results, figures): Found,
    what: &str,
) -> Result<(), StepError> {
    for (name, f) in figures {
        cx.property(format!("{what}.{name}"), f);
    }
    super::checks_done(cx, what, results)
}

#[async_trait::async_trait]
impl Action for Storage {
    fn describe(&self, cx: &StepContext<'_>) -> Vec<String> {
        let s = &cx.run.scenario.scenario.storage;
        vec![
            format!(
                "start {} pods that mount one Secret; all must run within {:?}",
                s.shared_secret_pods, s.running_within
            ),
            "delete them: no mount of theirs left on any node, no busy device or orphaned pod in kubelet's journal".into(),
            "a local volume in use: delete its claim, then the pod; the claim waits, the volume ends Released, no mount left, a fresh claim binds".into(),
            "force-delete a pod writing checksummed blocks; a new pod verifies every completed block".into(),
        ]
    }

    async fn run(&self, cx: &mut StepContext<'_>) -> Result<(), StepError> {
        let c = cluster(cx)?;
        let nodes = ProviderNodes {
            cluster: c,
            runner: cx.runner(),
        };
        // The local volumes go on a node that takes pods: the last worker, or the control
        // plane of a cluster without workers.
        let target = c
            .workers()
            .last()
            .or_else(|| c.control_planes().next())
            .map(|n| n.name.clone())
            .ok_or_else(|| StepError::new("failed to find a node for the local volumes"))?;
        let say = |s: String| cx.note(s);
        let mut checks = tier(cx, c, &nodes, "storage", &say).await?;
        checks.run(&target).await;
        let found = close(checks).await;
        finish(cx, found, "storage")
    }
}

pub struct NodeLoss;

#[async_trait::async_trait]
impl Action for NodeLoss {
    fn describe(&self, _cx: &StepContext<'_>) -> Vec<String> {
        vec![
            "a Deployment's pod on the last worker uses a volume in the folder every node shares (the stand-in for network storage)".into(),
            "stop that worker and delete its Node: the pod must run again on the first control plane and find the volume's data".into(),
            "start the worker again, so its logs can be exported".into(),
        ]
    }

    async fn run(&self, cx: &mut StepContext<'_>) -> Result<(), StepError> {
        let c = cluster(cx)?;
        let nodes = ProviderNodes {
            cluster: c,
            runner: cx.runner(),
        };
        let lost = c.workers().last().map(|n| n.name.clone()).ok_or_else(|| {
            StepError::new("failed to find a worker to lose: node-loss needs one")
        })?;
        let survivor = c.first_control_plane().name.clone();
        let say = |s: String| cx.note(s);
        let mut checks = tier(cx, c, &nodes, "node-loss", &say).await?;
        checks.run_node_loss(&lost, &survivor).await;
        let found = close(checks).await;
        finish(cx, found, "node-loss")
    }
}
