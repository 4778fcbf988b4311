//! Highly available control planes: the readiness gate after they join, and the
//! `control-plane-loss` step that stops one and measures what the API's users feel.

use super::cluster::{client, client_config, cluster};
use super::{Action, StepContext, StepError};
use crate::engine::event::{StepOutcome, SubTest};
use crate::process::CommandError;
use crate::provider::load_balancer::{self, STATS_PORT};
use crate::provider::Cluster;
use std::time::{Duration, Instant};

/// How long the gate waits for the load balancer and etcd to agree.
const GATE_LIMIT: Duration = Duration::from_secs(180);

/// The load balancer's own view of the API servers: each `(name, status)`.
async fn backend_status(lb_ip: &str) -> Result<Vec<(String, String)>, String> {
    let url = format!("http://{lb_ip}:{STATS_PORT}/stats;csv");
    let body = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(3)))
            .proxy(None)
            .build()
            .into();
        agent
            .get(&url)
            .call()
            .map_err(|e| format!("failed to read {url}: {e}"))?
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("failed to read {url}: {e}"))
    })
    .await
    .map_err(|e| format!("failed to read the load balancer's stats: {e}"))??;
    load_balancer::backend_status(&body)
}

#[derive(serde::Deserialize)]
struct MemberList {
    #[serde(default)]
    members: Vec<Member>,
}

#[derive(serde::Deserialize)]
struct Member {
    #[serde(default)]
    name: String,
    #[serde(default, rename = "clientURLs")]
    client_urls: Vec<String>,
}

#[derive(serde::Deserialize)]
struct EndpointHealth {
    endpoint: String,
    health: bool,
    #[serde(default)]
    error: Option<String>,
}

/// `etcdctl member list -w json`: every member started (named, serving clients) and as
/// many as `want`.
pub fn members_ok(json: &str, want: usize) -> Result<Vec<String>, String> {
    let list: MemberList = serde_json::from_str(json)
        .map_err(|e| format!("failed to parse etcd's member list: {e}"))?;
    let started: Vec<String> = list
        .members
        .iter()
        .filter(|m| !m.name.is_empty() && !m.client_urls.is_empty())
        .map(|m| m.name.clone())
        .collect();
    if list.members.len() != want || started.len() != want {
        return Err(format!(
            "etcd has {} member(s), {} started ({}); want {want}, one per control plane",
            list.members.len(),
            started.len(),
            started.join(", ")
        ));
    }
    Ok(started)
}

/// `etcdctl endpoint health --cluster -w json`: every endpoint healthy.
pub fn endpoints_healthy(json: &str) -> Result<usize, String> {
    let list: Vec<EndpointHealth> = serde_json::from_str(json)
        .map_err(|e| format!("failed to parse etcd's endpoint health: {e}"))?;
    let sick: Vec<String> = list
        .iter()
        .filter(|h| !h.health)
        .map(|h| {
            format!(
                "{} ({})",
                h.endpoint,
                h.error.as_deref().unwrap_or("unhealthy")
            )
        })
        .collect();
    if sick.is_empty() {
        Ok(list.len())
    } else {
        Err(format!("etcd endpoints unhealthy: {}", sick.join(", ")))
    }
}

/// `etcdctl endpoint health --cluster -w json`: how many endpoints are healthy, and how
/// many are not.
pub fn endpoint_counts(json: &str) -> Result<(usize, usize), String> {
    let list: Vec<EndpointHealth> = serde_json::from_str(json)
        .map_err(|e| format!("failed to parse etcd's endpoint health: {e}"))?;
    let healthy = list.iter().filter(|h| h.health).count();
    Ok((healthy, list.len() - healthy))
}

/// Calls `check` every second until it gives a value, for at most [`GATE_LIMIT`]; the
/// error says what `check` last reported.
async fn poll<T, F, Fut>(cx: &StepContext<'_>, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let t = Instant::now();
    let mut beat = crate::readiness::Heartbeat::new();
    loop {
        let last = match check().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if let Some(line) = beat.due(&last) {
            cx.note(line);
        }
        if t.elapsed() > GATE_LIMIT {
            return Err(format!("after {GATE_LIMIT:?}: {last}"));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = cx.cancel.cancelled() => return Err(format!("stopped: {last}")),
        }
    }
}

/// Waits until the load balancer sees every API server UP (bounded).
async fn wait_backends_up(cx: &StepContext<'_>, lb_ip: &str, want: usize) -> Result<(), String> {
    poll(cx, || async move {
        match backend_status(lb_ip).await? {
            s if s.len() == want && s.iter().all(|(_, st)| st == "UP") => Ok(()),
            s => Err(format!(
                "the load balancer sees {}",
                s.iter()
                    .map(|(n, st)| format!("{n} {st}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    })
    .await
}

/// Waits until etcd has every member started and healthy (bounded): one per control plane
/// when stacked, one per etcd node when external.
pub(super) async fn wait_etcd_healthy(
    cx: &StepContext<'_>,
    c: &Cluster,
) -> Result<Vec<String>, String> {
    let r = cx.runner();
    let want = c.etcd_members();
    let etcdctl = &super::etcd::Etcdctl::of(&r, c).await?;
    poll(cx, || {
        let r = r.clone();
        async move {
            let names = r
                .output(etcdctl.cmd(c, &["member", "list", "-w", "json"]))
                .await
                .map_err(|e| crate::error::chain(&e))
                .and_then(|j| members_ok(&j, want))?;
            // etcdctl exits non-zero when an endpoint is sick, and still prints the list.
            let health = match r
                .output(etcdctl.cmd(c, &["endpoint", "health", "--cluster", "-w", "json"]))
                .await
            {
                Ok(json) => json,
                Err(CommandError::Failed { stdout, .. })
                    if stdout.trim_start().starts_with('[') =>
                {
                    stdout
                }
                Err(e) => return Err(crate::error::chain(&e)),
            };
            endpoints_healthy(&health)?;
            Ok(names)
        }
    })
    .await
}

/// How long a new Service may wait for the endpoints controller.
const CONTROLLERS_ACT_WITHIN: Duration = Duration::from_secs(20);

/// The controllers act on a new object: a Service that selects nothing still gets an
/// (empty) Endpoints object from the leading controller-manager. It does not when that
/// controller-manager's watch on Services went stale.
async fn controllers_act(
    cx: &StepContext<'_>,
    kube: &kube::Client,
    attempt: u32,
) -> Result<(), String> {
    use k8s_openapi::api::core::v1::{Endpoints, Service};
    use kube::api::{Api, DeleteParams, PostParams};
    let name = format!("shakedown-ha-probe-{attempt}");
    let svcs: Api<Service> = Api::namespaced(kube.clone(), "default");
    let svc: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": name, "labels": { crate::provider::LABEL_RUN: cx.run.settings.run_id } },
        "spec": { "selector": { "io.shakedown.probe": "selects-nothing" }, "ports": [{ "port": 80 }] }
    }))
    .map_err(|e| format!("failed to build the probe Service: {e}"))?;
    svcs.create(&PostParams::default(), &svc)
        .await
        .map_err(|e| format!("failed to create Service default/{name}: {e}"))?;
    let eps: Api<Endpoints> = Api::namespaced(kube.clone(), "default");
    let got = crate::readiness::wait_for(
        eps,
        &name,
        |e: Option<&Endpoints>| e.is_some(),
        CONTROLLERS_ACT_WITHIN,
        &cx.cancel,
    )
    .await;
    let _ = svcs.delete(&name, &DeleteParams::default()).await;
    got.map(drop)
        .map_err(|e| format!("no controller made Endpoints for new Service default/{name}: {e}"))
}

/// What the first control plane's API server logged about etcd losing its leader.
async fn leader_loss_evidence(cx: &StepContext<'_>, c: &Cluster) -> String {
    let cp = &c.first_control_plane().name;
    let script = "grep -h 'etcdserver: no leader' /var/log/pods/kube-system_kube-apiserver-*/kube-apiserver/*.log | cut -c1-200 | head -n 3";
    match cx.runner().output(c.exec(cp, &["sh", "-c", script])).await {
        Ok(s) if !s.trim().is_empty() => format!("{cp}'s API server logged:\n{s}"),
        _ => format!("{cp}'s API server logged no 'etcdserver: no leader'"),
    }
}

/// Restarts each control plane's API server in turn, waiting for the load balancer to
/// see all of them up again before the next. SIGKILL, not SIGTERM: the point is to cut
/// every client's watch, and a graceful stop first drains the long-running requests
/// (measured here: 35 s a server), while the other servers answer through the load
/// balancer meanwhile.
async fn restart_api_servers(cx: &StepContext<'_>, c: &Cluster, lb_ip: &str) -> Result<(), String> {
    let r = cx.runner();
    let want = c.control_planes().count();
    for cp in c.control_planes() {
        r.run(c.exec(&cp.name, &["pkill", "-KILL", "-x", "kube-apiserver"]))
            .await
            .map_err(|e| crate::error::chain(&e))?;
        // It must be seen to go (up to 20 s: three failed checks, 2 s apart), then every
        // one up again: otherwise the next would be killed while this one starts. A restart
        // quicker than haproxy's checks is not waited for.
        let seen_down = Instant::now();
        while seen_down.elapsed() < Duration::from_secs(20) {
            let s = backend_status(lb_ip).await.unwrap_or_default();
            if s.iter().any(|(n, st)| *n == cp.name && st != "UP") {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = cx.cancel.cancelled() => return Err("stopped while restarting the API servers".into()),
            }
        }
        wait_backends_up(cx, lb_ip, want)
            .await
            .map_err(|e| format!("API server of {} did not come back: {e}", cp.name))?;
        cx.note(format!("restarted the API server of {}", cp.name));
    }
    Ok(())
}

fn not_run(because: &str) -> StepOutcome {
    StepOutcome::Skipped {
        reason: format!("not run: {because}"),
    }
}

fn subtest(name: &str, t: Instant, outcome: StepOutcome) -> SubTest {
    SubTest {
        name: format!("ha/{name}"),
        outcome,
        duration: t.elapsed(),
        flaky: None,
    }
}

/// After the control planes joined, each its own testcase: the load balancer sees every
/// API server up; etcd has one healthy member per control plane; the controllers act on a
/// new object (watches opened before etcd lost its leader still deliver). A failure stops
/// the step with the reason; stale watches are remedied only when the scenario says how.
pub async fn gate(cx: &StepContext<'_>, c: &Cluster) -> (Vec<SubTest>, Result<(), StepError>) {
    let mut subtests = Vec::new();
    let result = gate_into(cx, c, &mut subtests).await;
    (subtests, result)
}

async fn gate_into(
    cx: &StepContext<'_>,
    c: &Cluster,
    subtests: &mut Vec<SubTest>,
) -> Result<(), StepError> {
    let lb = c
        .load_balancer
        .clone()
        .ok_or_else(|| StepError::infra("failed to run the HA gate: no load balancer"))?;
    let want = c.control_planes().count();

    let t = Instant::now();
    let lb_result = wait_backends_up(cx, &lb.ip, want).await;
    subtests.push(subtest(
        "load-balancer-sees-every-api-server",
        t,
        lb_result
            .clone()
            .map_or_else(StepOutcome::test_failure, |_| StepOutcome::Passed),
    ));
    if let Err(e) = lb_result {
        for later in ["etcd-members-healthy", "controllers-act-on-new-objects"] {
            subtests.push(subtest(later, t, not_run("the load-balancer check failed")));
        }
        return Err(StepError::new(format!("failed the HA gate: {e}")));
    }

    let t = Instant::now();
    let etcd_result = wait_etcd_healthy(cx, c).await;
    subtests.push(subtest(
        "etcd-members-healthy",
        t,
        etcd_result
            .clone()
            .map_or_else(StepOutcome::test_failure, |_| StepOutcome::Passed),
    ));
    let members = match etcd_result {
        Ok(m) => m,
        Err(e) => {
            subtests.push(subtest(
                "controllers-act-on-new-objects",
                t,
                not_run("the etcd check failed"),
            ));
            return Err(StepError::new(format!("failed the HA gate: {e}")));
        }
    };
    cx.note(format!(
        "load balancer {} sees {want} API server(s) UP; etcd members {} all healthy",
        lb.name,
        members.join(", ")
    ));

    let kube = client(c).await?;
    let t = Instant::now();
    match controllers_act(cx, &kube, 1).await {
        Ok(()) => {
            subtests.push(subtest(
                "controllers-act-on-new-objects",
                t,
                StepOutcome::Passed,
            ));
            Ok(())
        }
        Err(e) => {
            let evidence = leader_loss_evidence(cx, c).await;
            let found = format!(
                "stale API watches after control planes joined: {e}. Watches opened before etcd lost its leader no longer deliver events.\n{evidence}"
            );
            match cx.run.scenario.scenario.cluster.stale_watch_remedy {
                None => {
                    subtests.push(subtest(
                        "controllers-act-on-new-objects",
                        t,
                        StepOutcome::test_failure(found.clone()),
                    ));
                    Err(StepError::new(format!(
                        "failed the HA gate: {e} (set cluster.stale_watch_remedy to restart API servers)"
                    ))
                    .with_diagnosis(found))
                }
                Some(crate::scenario::StaleWatchRemedy::RestartApiServers) => {
                    cx.note(format!(
                        "{found}\nremedy (cluster.stale_watch_remedy: restart-api-servers): restarting each API server in turn"
                    ));
                    // Recorded first, so the finding is in JUnit whatever the remedy does.
                    subtests.push(subtest(
                        "controllers-act-on-new-objects",
                        t,
                        StepOutcome::Skipped {
                            reason: format!(
                                "stale watches found, remedied by restarting the API servers (cluster.stale_watch_remedy): {e}"
                            ),
                        },
                    ));
                    let t2 = Instant::now();
                    if let Err(e) = restart_api_servers(cx, c, &lb.ip).await {
                        subtests.push(subtest(
                            "controllers-act-after-api-server-restart",
                            t2,
                            not_run("restarting the API servers failed"),
                        ));
                        return Err(StepError::new(format!("failed the HA gate remedy: {e}")));
                    }
                    let again = controllers_act(cx, &kube, 2).await;
                    subtests.push(subtest(
                        "controllers-act-after-api-server-restart",
                        t2,
                        again
                            .clone()
                            .map_or_else(StepOutcome::test_failure, |_| StepOutcome::Passed),
                    ));
                    again.map_err(|e| {
                        StepError::new(format!("failed the HA gate after the remedy: {e}"))
                    })
                }
            }
        }
    }
}

/// Stops the last control plane while the API is probed through the load balancer every
/// 100 ms, each probe on a new connection (so haproxy spreads them over every API server)
/// and reading from etcd. The longest window without an answer is reported and fails the
/// step above the scenario's `disruption.api_max`; so does an API that has not answered
/// again by the end.
pub struct ControlPlaneLoss;
pub struct EtcdMemberLoss;

const PROBE_EVERY: Duration = Duration::from_millis(100);
/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long stopping the node may take (`docker stop --time 10`, then SIGKILL).
const STOP_TAKES: Duration = Duration::from_secs(10);

/// Probing lasts from the stop on for this long: at least 30 s, and always well past the
/// allowed unavailability, so an outage longer than allowed cannot end unseen.
pub fn probe_window(api_max: Duration) -> Duration {
    STOP_TAKES + (api_max + Duration::from_secs(15)).max(Duration::from_secs(30))
}

/// What the probes saw: the longest time between two answers (from the last answer before
/// a failure to the next answer, or to `end` when none came), the failed probe count, and
/// whether the last probe was answered. `results` are in order, each at its start; without
/// an answered baseline an outage counts from the first probe.
pub fn longest_outage(results: &[(Instant, bool)], end: Instant) -> (Duration, usize, bool) {
    let (window, failed, answering) = longest_outage_window(results, end);
    (
        window.map_or(Duration::ZERO, |(from, to)| to.duration_since(from)),
        failed,
        answering,
    )
}

/// As [`longest_outage`], with the window itself: when the longest outage began (the last
/// answer before it) and ended.
pub fn longest_outage_window(
    results: &[(Instant, bool)],
    end: Instant,
) -> (Option<(Instant, Instant)>, usize, bool) {
    let mut longest: Option<(Instant, Instant)> = None;
    let mut consider = |from: Instant, to: Instant| {
        if longest.is_none_or(|(a, b)| to.duration_since(from) > b.duration_since(a)) {
            longest = Some((from, to));
        }
    };
    let mut last_ok: Option<Instant> = None;
    let mut down = false;
    let mut failed = 0;
    for (at, ok) in results {
        if *ok {
            // Down from the first probe on (no answered baseline): counted from that probe.
            if let (true, Some(prev)) = (down, last_ok.or(results.first().map(|r| r.0))) {
                consider(prev, *at);
            }
            last_ok = Some(*at);
            down = false;
        } else {
            failed += 1;
            down = true;
        }
    }
    if down {
        if let Some(prev) = last_ok.or(results.first().map(|r| r.0)) {
            consider(prev, end);
        }
    }
    (longest, failed, !down && !results.is_empty())
}

/// One probe: a new client (a new connection through the load balancer) reads the
/// `default` namespace, which the API server reads from etcd.
/// Probes the API every `every` until `done` or `cancel` fires: each probe's start and
/// whether it was answered, for [`longest_outage_window`].
pub(super) async fn probe_until(
    cfg: &kube::Config,
    every: Duration,
    done: &tokio_util::sync::CancellationToken,
    cancel: &tokio_util::sync::CancellationToken,
) -> Vec<(Instant, bool)> {
    let mut api = Vec::new();
    while !done.is_cancelled() && !cancel.is_cancelled() {
        let at = Instant::now();
        let ok = probe(cfg).await;
        api.push((at, ok));
        tokio::select! {
            _ = tokio::time::sleep(every.saturating_sub(at.elapsed())) => {}
            _ = done.cancelled() => {}
            _ = cancel.cancelled() => {}
        }
    }
    api
}

pub(super) async fn probe(cfg: &kube::Config) -> bool {
    let Ok(client) = kube::Client::try_from(cfg.clone()) else {
        return false;
    };
    let ns: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, ns.get("default")).await,
        Ok(Ok(_))
    )
}

#[async_trait::async_trait]
impl Action for ControlPlaneLoss {
    fn describe(&self, cx: &StepContext<'_>) -> Vec<String> {
        let max = cx.run.scenario.scenario.disruption.api_max;
        vec![format!(
            "stop the last control-plane node while probing the API through the load balancer every {PROBE_EVERY:?} (a new connection each, reading from etcd) for {:?}; fail if it is unavailable longer than {max:?} or not answering at the end",
            probe_window(max)
        )]
    }

    async fn run(&self, cx: &mut StepContext<'_>) -> Result<(), StepError> {
        let c = cluster(cx)?;
        if c.load_balancer.is_none() {
            return Err(StepError::new(
                "failed to test control-plane loss: the topology has one control plane, so there is nothing to fail over to",
            ));
        }
        let victim = c
            .control_planes()
            .last()
            .map(|n| n.name.clone())
            .unwrap_or_default();
        lose_node(cx, c, &victim, "control plane").await
    }
}

#[async_trait::async_trait]
impl Action for EtcdMemberLoss {
    fn describe(&self, cx: &StepContext<'_>) -> Vec<String> {
        let max = cx.run.scenario.scenario.disruption.api_max;
        vec![
            format!(
                "stop the last external etcd member's node while probing the API every {PROBE_EVERY:?} (a new connection each, reading from etcd) for {:?}; fail if it is unavailable longer than {max:?} or not answering at the end",
                probe_window(max)
            ),
            "then etcd must still have a quorum: the surviving members healthy, the stopped one reported unhealthy".into(),
        ]
    }

    async fn run(&self, cx: &mut StepContext<'_>) -> Result<(), StepError> {
        let c = cluster(cx)?;
        let Some(victim) = c.etcd.last().map(|n| n.name.clone()) else {
            return Err(StepError::new(
                "failed to test etcd member loss: etcd is stacked on the control planes (cluster.etcd: external puts it on nodes of its own)",
            ));
        };
        lose_node(cx, c, &victim, "etcd member").await?;
        // The quorum that kept the API up, as etcd itself tells it.
        let r = cx.runner();
        let etcdctl = super::etcd::Etcdctl::of(&r, c)
            .await
            .map_err(StepError::new)?;
        let health = match r
            .output(etcdctl.cmd(c, &["endpoint", "health", "--cluster", "-w", "json"]))
            .await
        {
            Ok(json) => json,
            Err(CommandError::Failed { stdout, .. }) if stdout.trim_start().starts_with('[') => {
                stdout
            }
            Err(e) => return Err(e.into()),
        };
        let (healthy, sick) = endpoint_counts(&health).map_err(StepError::new)?;
        cx.note(format!(
            "etcd after losing {victim}: {healthy} member(s) healthy, {sick} not"
        ));
        if healthy * 2 <= c.etcd.len() || sick != 1 {
            return Err(StepError::new(format!(
                "failed the quorum check after losing {victim}: etcd reports {healthy} healthy and {sick} unhealthy of {} members; want a quorum of the others and the stopped one unhealthy",
                c.etcd.len()
            )));
        }
        Ok(())
    }
}

/// Stops `victim` (a `what`) while probing the API through its endpoint, and judges the
/// longest unavailability against `disruption.api_max`.
async fn lose_node(
    cx: &StepContext<'_>,
    c: &Cluster,
    victim: &str,
    what: &str,
) -> Result<(), StepError> {
    let cfg = client_config(c).await?;
    let r = cx.runner();
    let limit = cx.run.scenario.scenario.disruption.api_max;
    let window = probe_window(limit);
    // A baseline: the API must answer before anything is stopped.
    let start = Instant::now();
    if !probe(&cfg).await {
        return Err(StepError::new(format!(
            "failed to reach the API before stopping {what} {victim}"
        )));
    }
    let mut results = vec![(start, true)];
    let stop = c.provider.stop_node(victim).ok_or_else(|| {
        StepError::new(format!(
            "failed to stop {victim}: provider {} cannot stop nodes",
            c.provider.name()
        ))
    })?;
    // Probing runs from before the stop is issued until the window ends.
    let stopped_at = Instant::now();
    let probing = async {
        while stopped_at.elapsed() < window {
            let at = Instant::now();
            let ok = probe(&cfg).await;
            results.push((at, ok));
            tokio::select! {
                _ = tokio::time::sleep(PROBE_EVERY.saturating_sub(at.elapsed())) => {}
                _ = cx.cancel.cancelled() => break,
            }
        }
    };
    let (stopped, ()) = tokio::join!(r.run(stop), probing);
    stopped?;
    let end = Instant::now();
    cx.note(format!(
        "stopped {what} {victim} ({:.1}s after the stop was issued the probing ended)",
        end.duration_since(stopped_at).as_secs_f64()
    ));
    let (longest, failed, answering) = longest_outage(&results, end);
    cx.note(format!(
        "API at {} while losing {victim}: {} probe(s), {failed} failed, longest unavailability {:.1}s (allowed {limit:?}), answering at the end: {answering}",
        c.api_endpoint(),
        results.len(),
        longest.as_secs_f64(),
    ));
    if !answering {
        return Err(StepError::new(format!(
            "the API did not answer {:.0}s after {what} {victim} was stopped",
            window.as_secs_f64()
        )));
    }
    if longest > limit {
        return Err(StepError::new(format!(
            "the API was unavailable for {:.1}s while {what} {victim} stopped, more than the allowed {limit:?}",
            longest.as_secs_f64()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_members_must_all_be_started_and_counted() {
        let three = r#"{"header":{},"members":[
            {"ID":1,"name":"cp1","peerURLs":["https://a:2380"],"clientURLs":["https://a:2379"]},
            {"ID":2,"name":"cp2","peerURLs":["https://b:2380"],"clientURLs":["https://b:2379"]},
            {"ID":3,"name":"cp3","peerURLs":["https://c:2380"],"clientURLs":["https://c:2379"]}]}"#;
        assert_eq!(members_ok(three, 3).unwrap(), ["cp1", "cp2", "cp3"]);
        assert!(members_ok(three, 2).unwrap_err().contains("want 2"));
        // A member added but not yet started has no name and no client URLs.
        let unstarted = r#"{"members":[
            {"ID":1,"name":"cp1","clientURLs":["https://a:2379"]},
            {"ID":2,"peerURLs":["https://b:2380"]}]}"#;
        assert!(members_ok(unstarted, 2).unwrap_err().contains("1 started"));
    }

    #[test]
    fn a_lost_member_counts_as_unhealthy_beside_the_quorum() {
        let json = r#"[{"endpoint":"https://a:2379","health":true,"took":"9ms"},
            {"endpoint":"https://c:2379","health":false,"error":"context deadline exceeded"},
            {"endpoint":"https://b:2379","health":true,"took":"8ms"}]"#;
        assert_eq!(endpoint_counts(json).unwrap(), (2, 1));
        assert!(endpoint_counts("Error: no endpoints").is_err());
    }

    #[test]
    fn one_sick_endpoint_fails_the_health_check() {
        let ok = r#"[{"endpoint":"https://a:2379","health":true,"took":"1ms"},
                     {"endpoint":"https://b:2379","health":true,"took":"2ms"}]"#;
        assert_eq!(endpoints_healthy(ok).unwrap(), 2);
        let sick = r#"[{"endpoint":"https://a:2379","health":true},
                       {"endpoint":"https://b:2379","health":false,"error":"context deadline exceeded"}]"#;
        let e = endpoints_healthy(sick).unwrap_err();
        assert!(
            e.contains("https://b:2379 (context deadline exceeded)"),
            "{e}"
        );
    }

    #[test]
    fn the_longest_outage_runs_from_the_last_answer_to_the_next() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let r = vec![
            (at(0), true),
            (at(100), false),
            (at(200), false),
            (at(300), true),
            (at(400), false),
            (at(500), true),
        ];
        // 0 → 300 is the longest gap between answers; 3 probes failed; answering at the end.
        assert_eq!(
            longest_outage(&r, at(600)),
            (Duration::from_millis(300), 3, true)
        );
        // The window itself: from the last answer before it to the next.
        assert_eq!(longest_outage_window(&r, at(600)).0, Some((at(0), at(300))));
        // Still down at the end: counted up to the end of probing, and not answering.
        let r = vec![(at(0), true), (at(100), false), (at(700), false)];
        assert_eq!(
            longest_outage(&r, at(1700)),
            (Duration::from_millis(1700), 2, false)
        );
        // No answered baseline: an outage from the first probe on still counts.
        let r = vec![(at(0), false), (at(100), false), (at(250), true)];
        assert_eq!(
            longest_outage(&r, at(300)),
            (Duration::from_millis(250), 2, true)
        );
        // Never a failure: no outage.
        let r = vec![(at(0), true), (at(100), true)];
        assert_eq!(longest_outage(&r, at(200)), (Duration::ZERO, 0, true));
        assert_eq!(longest_outage(&[], at(0)), (Duration::ZERO, 0, false));
    }

    #[test]
    fn probing_outlasts_the_allowed_unavailability() {
        for max in [0, 5, 30, 120] {
            let max = Duration::from_secs(max);
            assert!(probe_window(max) > max + STOP_TAKES, "{max:?}");
        }
        assert_eq!(probe_window(Duration::ZERO), Duration::from_secs(40));
    }
}
