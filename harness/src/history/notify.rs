//! Failure notification: when a job's failure streak reaches the scenario's
//! `ci.notify.failure_streak`, one message for that streak; when the job passes again, one
//! recovery message. A message is a Markdown file ready to paste as a GitHub issue and,
//! when a webhook URL is configured, a JSON POST whose `text` field suits Slack incoming
//! webhooks. A webhook that is down never fails the run: the failure is logged and recorded,
//! and the next run tries again (only a delivered message closes the streak's
//! notification).

use super::{epoch, show_time, streaks, History, HistoryError, Trigger};
use crate::engine::RunSummary;
use crate::exit::ExitKind;
pub use crate::scenario::schedule::check_url;
use crate::scenario::NotifySpec;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Where the webhook URL comes from when the scenario names no variable.
pub const DEFAULT_WEBHOOK_ENV: &str = "SHAKEDOWN_NOTIFY_WEBHOOK";
/// A webhook gets this long, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Failing,
    Recovered,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Failing => "failing",
            Kind::Recovered => "recovered",
        }
    }
    pub(super) fn parse(s: &str) -> Kind {
        if s == "recovered" {
            Kind::Recovered
        } else {
            Kind::Failing
        }
    }
}

/// One recorded attempt to notify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub job: String,
    pub kind: Kind,
    /// The first failed run of the streak the message is about.
    pub streak_start: String,
    pub run_id: String,
    pub streak: usize,
    pub sent_at: i64,
    /// `webhook <scheme://host>` or `markdown <path>`.
    pub channel: String,
    pub delivered: bool,
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("failed to POST the notification to {url}")]
    Post {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("failed to write {path}")]
    Markdown {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How to notify, resolved from the scenario and the environment.
#[derive(Debug, Clone)]
pub struct Notifier {
    pub failure_streak: usize,
    pub webhook: Option<String>,
    /// Folder the Markdown messages go to (the run's artifacts).
    pub markdown_dir: PathBuf,
    /// A link to the CI run, when known.
    pub run_url: Option<String>,
}

impl Notifier {
    /// `env` looks up environment variables (`std::env::var(..).ok()` outside tests).
    pub fn from_spec(
        spec: &NotifySpec,
        markdown_dir: PathBuf,
        run_url: Option<String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Notifier {
        let webhook = spec
            .webhook
            .clone()
            .or_else(|| env(spec.webhook_env.as_deref().unwrap_or(DEFAULT_WEBHOOK_ENV)))
            .filter(|u| !u.trim().is_empty());
        Notifier {
            failure_streak: spec.failure_streak.max(1) as usize,
            webhook,
            markdown_dir,
            run_url,
        }
    }
}

/// `https://hooks.slack.com/…`: webhook paths and `user:pass@` are secrets and never logged;
/// only the scheme, host and port are.
pub fn redact(url: &str) -> String {
    match url.parse::<ureq::http::Uri>() {
        Ok(u) => format!(
            "{}://{}{}/…",
            u.scheme_str().unwrap_or("http"),
            u.host().unwrap_or(""),
            u.port_u16().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "<invalid URL>".into(),
    }
}

#[cfg(test)]
mod redact_tests {
    use super::redact;

    #[test]
    fn credentials_and_paths_never_reach_the_log() {
        assert_eq!(
            redact("https://hooks.example/services/T0/B0/secret"),
            "https://hooks.example/…"
        );
        let r = redact("https://user:pa55@hooks.example:8443/services/secret?x=1");
        assert_eq!(r, "https://hooks.example:8443/…");
        assert!(!r.contains("user") && !r.contains("pa55"), "{r}");
        assert_eq!(redact("not a url at all"), "<invalid URL>");
    }
}

/// A message about one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: Kind,
    pub job: String,
    pub scenario: String,
    pub version: String,
    /// Failed runs in the streak.
    pub streak: usize,
    pub streak_start: String,
    pub streak_started: i64,
    pub run_id: String,
    /// Failing only: the first failed step and its diagnosis.
    pub failed_step: Option<(String, String)>,
    pub run_url: Option<String>,
    pub artifacts: Option<String>,
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

impl Message {
    pub fn title(&self) -> String {
        match self.kind {
            Kind::Failing => format!(
                "shakedown: {} failed {} runs in a row on {}",
                self.job, self.streak, self.version
            ),
            Kind::Recovered => format!(
                "shakedown: {} passes again on {} after {} failed runs",
                self.job, self.version, self.streak
            ),
        }
    }

    fn where_(&self) -> Option<String> {
        self.run_url.clone().or_else(|| self.artifacts.clone())
    }

    /// Plain text, also fine as Slack mrkdwn.
    pub fn text(&self) -> String {
        let mut t = format!(
            "{} (failing since run {}, {}).",
            self.title(),
            self.streak_start,
            show_time(self.streak_started)
        );
        if let Some((step, why)) = &self.failed_step {
            t.push_str(&format!(" Last failure in step {step}: {why}."));
        }
        t.push_str(&format!(" Run {}", self.run_id));
        if let Some(w) = self.where_() {
            t.push_str(&format!(": {w}"));
        }
        t.push('.');
        t
    }

    /// A GitHub issue: title line, a table of facts, and how to look closer.
    pub fn markdown(&self) -> String {
        let mut rows = vec![
            ("Job", format!("`{}`", self.job)),
            ("Scenario", format!("`{}`", self.scenario)),
            ("Kubernetes", self.version.clone()),
            (
                "Failing since",
                format!(
                    "run `{}` ({})",
                    self.streak_start,
                    show_time(self.streak_started)
                ),
            ),
            ("Failed runs in a row", self.streak.to_string()),
            (
                match self.kind {
                    Kind::Failing => "Latest failed run",
                    Kind::Recovered => "Passing run",
                },
                format!("`{}`", self.run_id),
            ),
        ];
        if let Some((step, why)) = &self.failed_step {
            rows.push(("Failed step", format!("`{step}`")));
            rows.push(("Diagnosis", why.clone()));
        }
        if let Some(w) = self.where_() {
            rows.push(("Artifacts", w));
        }
        let mut md = format!("# {}\n\n| | |\n|---|---|\n", self.title());
        for (k, v) in rows {
            md.push_str(&format!("| {k} | {} |\n", cell(&v)));
        }
        let mut parts = self.job.split('/');
        let (_, provider, cni) = (parts.next(), parts.next(), parts.next());
        md.push_str("\nReproduce:\n\n```\nshakedown scenario ");
        md.push_str(&self.scenario);
        if let (Some(p), Some(c)) = (provider, cni) {
            md.push_str(&format!(" --provider {p} --cni {c}"));
        }
        md.push_str(&format!("\nshakedown history {}\n```\n", self.job));
        md
    }

    /// The webhook body: `text` for Slack, the facts under `shakedown` for anything else.
    pub fn json(&self) -> serde_json::Value {
        json!({
            "text": self.text(),
            "shakedown": {
                "status": self.kind.as_str(),
                "job": self.job,
                "scenario": self.scenario,
                "version": self.version,
                "streak": self.streak,
                "streak_start": self.streak_start,
                "run_id": self.run_id,
                "failed_step": self.failed_step.as_ref().map(|(s, _)| s),
                "diagnosis": self.failed_step.as_ref().map(|(_, d)| d),
                "run_url": self.run_url,
                "artifacts": self.artifacts,
            }
        })
    }
}

/// The messages due after `s` was recorded: a failing message when a job's failure
/// streak has reached `threshold` and none was delivered for that streak yet; a recovery
/// message when a job passes after a streak whose failing message was delivered.
pub fn due(
    h: &History,
    s: &RunSummary,
    trigger: Trigger,
    threshold: usize,
    run_url: Option<&str>,
    artifacts: Option<&Path>,
) -> Result<Vec<Message>, HistoryError> {
    if s.dry_run || trigger == Trigger::Presubmit || s.exit == ExitKind::Interrupted {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for j in &s.jobs {
        let runs = h.job_runs(&j.name)?;
        let all = streaks(&runs);
        let Some(cur) = all.last() else { continue };
        if cur.last.run_id != s.run_id {
            continue; // an older run recorded late does not speak for the job now
        }
        let msg = |kind, streak: &super::Streak| Message {
            kind,
            job: j.name.clone(),
            scenario: s.scenario.clone(),
            version: s.version.clone(),
            streak: streak.length,
            streak_start: streak.since_run.clone(),
            streak_started: streak.since,
            run_id: s.run_id.clone(),
            failed_step: streak
                .last
                .failed_step
                .clone()
                .filter(|_| kind == Kind::Failing),
            run_url: run_url.map(String::from),
            artifacts: artifacts.map(|a| a.display().to_string()),
        };
        if !cur.passing
            && cur.length >= threshold
            && !h.notified(&j.name, Kind::Failing, &cur.since_run)?
        {
            out.push(msg(Kind::Failing, cur));
        }
        if cur.passing && all.len() >= 2 {
            let prev = &all[all.len() - 2];
            if h.notified(&j.name, Kind::Failing, &prev.since_run)?
                && !h.notified(&j.name, Kind::Recovered, &prev.since_run)?
            {
                out.push(msg(Kind::Recovered, prev));
            }
        }
    }
    Ok(out)
}

/// POSTs `body` as JSON, within [`TIMEOUT`].
pub fn post(url: &str, body: &serde_json::Value) -> Result<(), NotifyError> {
    let loopback = url
        .parse::<ureq::http::Uri>()
        .ok()
        .and_then(|u| u.host().map(String::from))
        .is_some_and(|h| matches!(h.as_str(), "127.0.0.1" | "localhost" | "[::1]" | "::1"));
    let mut config = ureq::Agent::config_builder().timeout_global(Some(TIMEOUT));
    if loopback {
        config = config.proxy(None);
    }
    let agent: ureq::Agent = config.build().into();
    let bytes = body.to_string().into_bytes();
    eprintln!("+ POST {} ({} bytes of JSON)", redact(url), bytes.len());
    agent
        .post(url)
        .content_type("application/json")
        .send(&bytes[..])
        .map(|_| ())
        .map_err(|source| NotifyError::Post {
            url: redact(url),
            source: Box::new(source),
        })
}

fn file_name(m: &Message) -> String {
    let job: String = m
        .job
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{job}-{}.md", m.kind.as_str())
}

/// Sends each message (Markdown file, then the webhook when configured) and records every
/// attempt. Delivery failures are logged and recorded, not returned.
pub fn send(h: &History, n: &Notifier, msgs: &[Message]) -> Result<Vec<Attempt>, HistoryError> {
    let mut out = Vec::new();
    for m in msgs {
        let md_path = n.markdown_dir.join(file_name(m));
        let md = std::fs::create_dir_all(&n.markdown_dir)
            .and_then(|_| std::fs::write(&md_path, m.markdown()))
            .map_err(|source| NotifyError::Markdown {
                path: md_path.clone(),
                source,
            });
        let (channel, error) = match &n.webhook {
            Some(url) => {
                if let Err(e) = &md {
                    tracing::warn!("{}", crate::error::chain(e));
                }
                let sent = post(url, &m.json());
                (
                    format!("webhook {}", redact(url)),
                    sent.err().map(|e| crate::error::chain(&e)),
                )
            }
            None => (
                format!("markdown {}", md_path.display()),
                md.as_ref().err().map(|e| crate::error::chain(e)),
            ),
        };
        match &error {
            None => eprintln!("notified ({}): {}", channel, m.title()),
            Some(e) => tracing::warn!(
                "{e}; the {} notification for {} was not delivered (it is in {}); the run goes on",
                m.kind.as_str(),
                m.job,
                md_path.display()
            ),
        }
        let a = Attempt {
            job: m.job.clone(),
            kind: m.kind,
            streak_start: m.streak_start.clone(),
            run_id: m.run_id.clone(),
            streak: m.streak,
            sent_at: epoch(SystemTime::now()),
            channel,
            delivered: error.is_none(),
            error,
        };
        h.record_notification(&a)?;
        out.push(a);
    }
    Ok(out)
}

/// A link to the CI run from the environment GitHub Actions sets, when there is one.
pub fn run_url_from_env(env: impl Fn(&str) -> Option<String>) -> Option<String> {
    Some(format!(
        "{}/{}/actions/runs/{}",
        env("GITHUB_SERVER_URL")?,
        env("GITHUB_REPOSITORY")?,
        env("GITHUB_RUN_ID")?
    ))
}
