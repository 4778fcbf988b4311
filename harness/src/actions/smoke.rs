//! `smoke`: the short cluster validation; each check is its own testcase.

use super::cluster::{client, cluster};
use super::{Action, StepContext, StepError};
use crate::actions::JobStateExt;
use crate::smoke::Smoke as Checks;

pub struct Smoke;

#[async_trait::async_trait]
impl Action for Smoke {
    fn describe(&self, _cx: &StepContext<'_>) -> Vec<String> {
        vec![
            "check every node is Ready".into(),
            "run an agnhost pod on every node".into(),
            "connect pod to pod across nodes".into(),
            "connect to a Service ClusterIP".into(),
            "resolve kubernetes.default when a DNS addon runs".into(),
            "write through a hostPath volume, delete the pod, read it back from a new pod on the same node".into(),
            "call the API with the default ServiceAccount token (200), and list kube-system secrets with it (403)".into(),
            "check pods landed in the namespace they were created for".into(),
        ]
    }

    async fn run(&self, cx: &mut StepContext<'_>) -> Result<(), StepError> {
        let results = run_checks(cx, cluster(cx)?).await?;
        super::checks_done(cx, "smoke", results)
    }
}

/// The smoke checks, each a testcase: the `smoke` step, and a gate of each upgrade hop.
pub async fn run_checks(
    cx: &StepContext<'_>,
    c: &crate::provider::Cluster,
) -> Result<Vec<crate::engine::event::SubTest>, StepError> {
    let nodes = c.node_names();
    let (agnhost, pull_policy) = cx.agnhost();
    let mut checks = Checks {
        client: client(c).await?,
        namespace: format!("shakedown-smoke-{}", cx.run.settings.run_id).to_ascii_lowercase(),
        run_id: cx.run.settings.run_id.clone(),
        cancel: cx.cancel.clone(),
        results: Vec::new(),
        token_secrets: cx.run.scenario.version.is_none_or(|v| v.minor < 24),
        agnhost,
        pull_policy,
    };
    checks.run(&nodes).await;
    checks.cleanup().await;
    for r in &checks.results {
        cx.note(format!("{}: {}", r.name, r.outcome.label()));
    }
    Ok(checks.results)
}
