//! `storage`: the storage tier (`crate::storage`); each check is its own testcase.

use super::cluster::{client, cluster};
use super::{Action, StepContext, StepError};
use crate::actions::JobStateExt;
use crate::process::Runner;
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
        let (image, pull_policy) = cx.agnhost();
        let spec = &cx.run.scenario.scenario.storage;
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
        let mut checks = crate::storage::Storage {
            client: client(c).await?,
            namespace: format!("shakedown-storage-{}", cx.run.settings.run_id).to_ascii_lowercase(),
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
                .then_some(&nodes as &dyn crate::storage::Nodes),
            token_secrets: cx.run.scenario.version.is_none_or(|v| v.minor < 24),
            results: Vec::new(),
            figures: Vec::new(),
            say: &say,
        };
        checks.run(&target).await;
        checks.cleanup().await;
        let results = std::mem::take(&mut checks.results);
        let figures = std::mem::take(&mut checks.figures);
        drop(checks);
        for (name, f) in figures {
            cx.property(format!("storage.{name}"), f);
        }
        super::checks_done(cx, "storage", results)
    }
}
