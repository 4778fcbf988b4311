//! Command line: parsing and dispatch. Every command returns an exit code from
//! [`ExitKind`]; see README.md for the table.

use crate::actions::RunSettings;
use crate::ci;
use crate::cni::Catalog;
use crate::config::ConfigErrors;
use crate::engine::{self, Stop};
use crate::exit::ExitKind;
use crate::history::{self, notify::Notifier, History, HistoryError, Trigger};
use crate::process;
use crate::reporter::{self, Reporter};
use crate::scenario::{self, LoadedScenario};
use crate::{matrix, paths, plan};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "shakedown",
    version,
    about = "End-to-end cluster tests for Kubernetes release branches"
)]
pub struct Cli {
    /// Repository root holding scenarios/ and cni-variants/ (default: found from the current directory).
    #[arg(long, global = true, env = "SHAKEDOWN_ROOT")]
    pub root: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List scenarios and their matrix jobs.
    List,
    /// Validate scenario files (all of scenarios/ when none are given).
    Validate { files: Vec<PathBuf> },
    /// Show each job and step of a scenario with its deadline.
    Plan {
        scenario: String,
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        cni: Option<String>,
    },
    /// Run a scenario: bring up clusters for every matrix job, test them, write artifacts.
    /// `scenario new` creates a scenario for a new release branch.
    Scenario(Box<ScenarioArgs>),
    /// CI jobs generated from scenarios/.
    Ci {
        #[command(subcommand)]
        command: CiCommand,
    },
    /// Pass/fail streaks, the slowest steps and flaky steps from the run history.
    History(HistoryArgs),
    /// Go/no-go for a release branch's whole matrix, from the run history (exit 1 on no-go).
    Signoff(SignoffArgs),
    /// Prepare this machine (Debian packages, dockerd).
    Host {
        #[command(subcommand)]
        command: HostCommand,
    },
    /// Build (or reuse from the cache) Kubernetes binaries, component images and the node image.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Remove every container, network and volume shakedown created (or one run's).
    Gc {
        /// Only what this run created (its id is in the artifacts and node names).
        #[arg(long)]
        run: Option<String>,
        /// Give up after this long (exit 3), e.g. 2m.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "2m")]
        deadline: Duration,
    },
    /// Benchmarks that print measured figures and their ratio to the targets.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// CNI variants.
    Cni {
        #[command(subcommand)]
        command: CniCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build every stage that is not cached yet.
    Build {
        /// Kubernetes version to build.
        #[arg(long, default_value = "v1.20.2")]
        kubernetes: String,
        /// Debian source package version (default: the one that contains the version).
        #[arg(long)]
        debian_version: Option<String>,
        /// Use these binaries instead of building from source.
        #[arg(long)]
        kubernetes_binaries: Option<PathBuf>,
        /// Use this node image instead of building one.
        #[arg(long)]
        node_image: Option<String>,
        /// Give up after this long (exit 3); a cold build takes about 13 minutes here.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "60m")]
        deadline: Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Time a 1 control plane + 1 worker bring-up (nodes, init, join, CNI until every node
    /// and kube-system pod is Ready) with cached images; target 90 s.
    BringUp {
        #[arg(long, default_value = "release-1.20")]
        scenario: String,
        #[arg(long, default_value_t = 3)]
        runs: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum CniCommand {
    /// Check manifests against one Kubernetes release: every DaemonSet tolerates its
    /// control-plane taint, a DaemonSet's ServiceAccount exists and is bound to a ClusterRole,
    /// every built-in apiVersion/kind is served, every image is pinned (and, for a variant,
    /// listed in variant.yaml). With --kubeconfig, also a server-side dry run of every object.
    /// Exit 0: no errors (warnings allowed); 1: errors found; 2: bad arguments, unknown
    /// variant or no release for that version; 3: the cluster could not be reached.
    Lint(LintArgs),
}

#[derive(Debug, clap::Args)]
pub struct LintArgs {
    /// The Kubernetes release to check against, e.g. 1.6 or v1.20.2.
    #[arg(long)]
    pub kubernetes: String,
    /// Also dry-run every object on the cluster this kubeconfig points at (its current context).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// CNI variant names (cni-variants/<name>) or manifest files.
    #[arg(required = true)]
    pub targets: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Install what real clusters need and start dockerd (root, Debian).
    Setup {
        /// Give up after this long (exit 3), e.g. 20m.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "20m")]
        deadline: Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum CiCommand {
    /// Write ci/ from scenarios/: a Prow periodic postsubmit and a non-blocking presubmit per
    /// scenario (with TestGrid annotations), and GitHub Actions workflows.
    Generate(CiGenerateArgs),
}

#[derive(Debug, clap::Args)]
pub struct CiGenerateArgs {
    /// Write nothing: exit 1 naming every file in ci/ that differs from what generation
    /// writes (hand-edited, stale, missing or no longer generated).
    #[arg(long)]
    pub check: bool,
    /// org/repo of this project: what the jobs check out and the presubmits belong to.
    #[arg(long, env = "SHAKEDOWN_CI_REPO", default_value = ci::DEFAULT_REPO, value_parser = ci::parse_repo)]
    pub repo: String,
    /// Container image the jobs run in (Debian with Rust; host-setup installs the rest).
    #[arg(long, env = "SHAKEDOWN_CI_IMAGE", default_value = ci::DEFAULT_IMAGE)]
    pub image: String,
    /// Folder to write (default: ci/ under the repository root).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// A job (release-1.20/docker/bridge) or the start of one up to a `/` (release-1.20);
    /// default every job.
    pub job: Option<String>,
    /// Run history file (default: history.sqlite beside $ARTIFACTS, else
    /// artifacts/history.sqlite).
    #[arg(long, env = "SHAKEDOWN_HISTORY")]
    pub history: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct SignoffArgs {
    /// The release branch (scenario) to sign off, e.g. release-1.20.
    pub branch: String,
    /// Every job must have run within this many hours.
    #[arg(long, default_value_t = 24)]
    pub hours: u64,
    /// The version to sign off (default: the scenario's version or marker).
    #[arg(long)]
    pub version: Option<String>,
    /// Run history file (default: history.sqlite beside $ARTIFACTS, else
    /// artifacts/history.sqlite).
    #[arg(long, env = "SHAKEDOWN_HISTORY")]
    pub history: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ScenarioCommand {
    /// Create scenarios/<branch>.yaml from an existing scenario, adjusted to the new branch's
    /// Kubernetes release (see README.md); then `shakedown ci generate` adds its jobs.
    New {
        /// The new branch, release-<major>.<minor> (or master).
        branch: String,
        /// The scenario to start from, e.g. release-1.20.
        #[arg(long)]
        from: String,
    },
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ScenarioArgs {
    #[command(subcommand)]
    pub command: Option<ScenarioCommand>,
    /// Scenario name (a file in scenarios/) or path to a scenario file.
    #[arg(required = true)]
    pub scenario: Option<String>,
    /// Only run jobs on this provider.
    #[arg(long)]
    pub provider: Option<String>,
    /// Only run jobs with this CNI variant.
    #[arg(long)]
    pub cni: Option<String>,
    /// Run the whole engine with actions that only log what they would do.
    #[arg(long)]
    pub dry_run: bool,
    /// Artifacts folder (default: $ARTIFACTS, as Prow sets it, else ./artifacts/<run-id>).
    #[arg(long, env = "ARTIFACTS")]
    pub artifacts: Option<PathBuf>,
    /// Keep clusters after the run and print how to reach them.
    #[arg(long)]
    pub keep_cluster: bool,
    /// Deadline for the whole run (overrides the scenario's run_deadline), e.g. 45m.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub deadline: Option<Duration>,
    /// Jobs to run at once.
    #[arg(long, default_value_t = 1)]
    pub parallel: usize,
    /// Use these Kubernetes binaries (kubeadm, kubelet, kubectl, ...) instead of the scenario's source.
    #[arg(long)]
    pub kubernetes_binaries: Option<PathBuf>,
    /// Use this node image instead of building one.
    #[arg(long)]
    pub node_image: Option<String>,
    /// Run only shard K of N of the runnable conformance specs (a stable hash of each name
    /// picks the shard), e.g. 1/6.
    #[arg(long, value_parser = parse_shard)]
    pub conformance_shard: Option<(u32, u32)>,
    /// Override the scenario's conformance mode (certified, non-disruptive, conformance-lite).
    #[arg(long, value_enum)]
    pub conformance_mode: Option<ConformanceModeArg>,
    /// Where e2e.test runs: on this machine, one process per spec (host), or as the
    /// conformance image in a Pod (in-cluster, as sonobuoy and hydrophone run it).
    #[arg(long, value_enum)]
    pub conformance_runner: Option<ConformanceRunnerArg>,
    /// The conformance image for --conformance-runner in-cluster (default: built here from
    /// the same e2e.test), e.g. registry.k8s.io/conformance:v1.20.2.
    #[arg(long)]
    pub conformance_image: Option<String>,
    /// e2e.test and ginkgo from this folder or test tarball
    /// (kubernetes-test-linux-amd64.tar.gz) instead of the cluster's own build.
    #[arg(long)]
    pub e2e_binaries: Option<PathBuf>,
    /// Run history file to record the run in (default: history.sqlite beside the artifacts
    /// folder).
    #[arg(long, env = "SHAKEDOWN_HISTORY")]
    pub history: Option<PathBuf>,
    /// What started the run. Periodic and manual runs count for streaks, notifications and
    /// sign-off; presubmit runs are recorded but do not.
    #[arg(long, value_enum, default_value_t = Trigger::Manual)]
    pub trigger: Trigger,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ConformanceModeArg {
    Certified,
    NonDisruptive,
    ConformanceLite,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ConformanceRunnerArg {
    Host,
    InCluster,
}

impl From<ConformanceRunnerArg> for crate::scenario::ConformanceRunner {
    fn from(r: ConformanceRunnerArg) -> Self {
        match r {
            ConformanceRunnerArg::Host => Self::Host,
            ConformanceRunnerArg::InCluster => Self::InCluster,
        }
    }
}

impl From<ConformanceModeArg> for crate::scenario::ConformanceMode {
    fn from(m: ConformanceModeArg) -> Self {
        match m {
            ConformanceModeArg::Certified => Self::Certified,
            ConformanceModeArg::NonDisruptive => Self::NonDisruptive,
            ConformanceModeArg::ConformanceLite => Self::ConformanceLite,
        }
    }
}

fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    let (k, n) = s.split_once('/').ok_or("expected K/N, e.g. 1/6")?;
    let (k, n): (u32, u32) = (
        k.parse().map_err(|_| "K is not a number")?,
        n.parse().map_err(|_| "N is not a number")?,
    );
    if n == 0 || k == 0 || k > n {
        return Err(format!("shard {k}/{n} is out of range: need 1 <= K <= N"));
    }
    Ok((k, n))
}

/// Parses the command line, runs, and maps the outcome to an exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHAKEDOWN_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(run(cli)),
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            ExitKind::Infrastructure
        }
    };
    std::process::ExitCode::from(code.code() as u8)
}

/// Errors that end a command before or outside the engine.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    #[error("{0}")]
    Usage(String),
    #[error("failed to {what}")]
    Infra {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{what}: interrupted by {signal}")]
    Interrupted { what: String, signal: &'static str },
}

impl CliError {
    pub fn exit(&self) -> ExitKind {
        match self {
            CliError::Config(_) | CliError::Usage(_) => ExitKind::Configuration,
            CliError::Infra { .. } => ExitKind::Infrastructure,
            CliError::Interrupted { .. } => ExitKind::Interrupted,
        }
    }
}

/// A command that ran past its deadline, and what it was doing then.
#[derive(Debug, thiserror::Error)]
#[error("deadline of {} exceeded", humantime::format_duration(*after))]
pub struct DeadlineExceeded {
    pub after: Duration,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Runs `work` under a deadline and under Ctrl-C/SIGTERM, as `scenario` runs a step: the
/// runner's commands get SIGTERM (then SIGKILL after the grace period) when either comes,
/// and the command exits 3 (deadline) or 130 (interrupted). Every command outside the engine
/// that runs external programs goes through here.
pub async fn bounded<T, F, Fut>(
    what: &str,
    deadline: Duration,
    log: process::StepLog,
    work: F,
) -> Result<T, CliError>
where
    F: FnOnce(process::Runner) -> Fut,
    Fut: std::future::Future<Output = Result<T, CliError>>,
{
    let root = tokio_util::sync::CancellationToken::new();
    let timer = process::Deadline::new(&root, deadline);
    let signal: Arc<std::sync::Mutex<Option<&'static str>>> = Arc::default();
    let handler = {
        let (token, signal) = (root.clone(), signal.clone());
        tokio::spawn(async move {
            let Ok(mut signals) = engine::StopSignals::new() else {
                return;
            };
            let name = signals.next().await;
            eprintln!("\n{name}: stopping");
            *signal.lock().unwrap_or_else(|e| e.into_inner()) = Some(name);
            token.cancel();
        })
    };
    let runner = process::Runner {
        log,
        cancel: timer.token().clone(),
        grace: Duration::from_secs(10),
    };
    let result = work(runner).await;
    handler.abort();
    let fired = timer.stop();
    if let Some(name) = *signal.lock().unwrap_or_else(|e| e.into_inner()) {
        return Err(CliError::Interrupted {
            what: what.to_string(),
            signal: name,
        });
    }
    match result {
        Err(CliError::Infra { what, source }) if fired => Err(CliError::Infra {
            what,
            source: Box::new(DeadlineExceeded {
                after: deadline,
                source,
            }),
        }),
        other => other,
    }
}

fn report(e: &CliError) {
    eprintln!("error: {}", crate::error::chain(e));
}

pub async fn run(cli: Cli) -> ExitKind {
    let root = paths::find_root(cli.root.as_deref());
    let result = match cli.command {
        Command::List => list(&root),
        Command::Validate { files } => validate(&root, files),
        Command::Plan {
            scenario,
            provider,
            cni,
        } => show_plan(&root, &scenario, provider.as_deref(), cni.as_deref()),
        Command::Scenario(args) => match &args.command {
            Some(ScenarioCommand::New { branch, from }) => new_scenario(&root, branch, from),
            None => run_scenario(&root, *args).await,
        },
        Command::Ci {
            command: CiCommand::Generate(args),
        } => ci_generate(&root, args),
        Command::History(args) => show_history(args),
        Command::Signoff(args) => signoff(&root, args),
        Command::Host {
            command: HostCommand::Setup { deadline },
        } => host_setup(&root, deadline).await,
        Command::Image {
            command:
                ImageCommand::Build {
                    kubernetes,
                    debian_version,
                    kubernetes_binaries,
                    node_image,
                    deadline,
                },
        } => {
            image_build(
                &root,
                &kubernetes,
                debian_version,
                kubernetes_binaries,
                node_image,
                deadline,
            )
            .await
        }
        Command::Gc { run, deadline } => gc(run.as_deref(), deadline).await,
        Command::Bench {
            command: BenchCommand::BringUp { scenario, runs },
        } => crate::bench::bring_up(&root, &scenario, runs).await,
        Command::Cni {
            command: CniCommand::Lint(args),
        } => cni_lint(&root, args).await,
    };
    match result {
        Ok(k) => k,
        Err(e) => {
            report(&e);
            e.exit()
        }
    }
}

pub fn load_catalog(root: &Path) -> Result<Catalog, CliError> {
    Ok(Catalog::load(&root.join("cni-variants"))?)
}

/// A scenario by name (`release-1.20`) or by path.
pub fn resolve_scenario(root: &Path, name: &str) -> PathBuf {
    let p = Path::new(name);
    if name.ends_with(".yaml") || name.ends_with(".yml") || name.contains('/') {
        p.to_path_buf()
    } else {
        root.join("scenarios").join(format!("{name}.yaml"))
    }
}

pub fn load_scenario(root: &Path, name: &str) -> Result<(LoadedScenario, Catalog), CliError> {
    let catalog = load_catalog(root)?;
    let path = resolve_scenario(root, name);
    if !path.is_file() {
        let known = scenario::files_in(&root.join("scenarios"))
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(CliError::Usage(format!(
            "no scenario {name:?} ({} does not exist); known scenarios: {known}",
            path.display()
        )));
    }
    let s = scenario::load(&path, &catalog, scenario::today())?;
    Ok((s, catalog))
}

fn list(root: &Path) -> Result<ExitKind, CliError> {
    let catalog = load_catalog(root)?;
    let files = scenario::files_in(&root.join("scenarios")).map_err(|e| CliError::Infra {
        what: format!("read {}", root.join("scenarios").display()),
        source: Box::new(e),
    })?;
    let mut errors = Vec::new();
    for f in files {
        match scenario::load(&f, &catalog, scenario::today()) {
            Ok(s) => {
                println!(
                    "{} (Kubernetes {}, conformance tier {:?}{})",
                    s.name(),
                    s.version_label(),
                    s.scenario.conformance.tier,
                    if s.scenario.conformance.disabled.is_some() {
                        ", DISABLED"
                    } else {
                        ""
                    }
                );
                for j in matrix::expand(&s) {
                    println!("  {}", j.name);
                }
            }
            Err(e) => errors.extend(e.0),
        }
    }
    if errors.is_empty() {
        Ok(ExitKind::Passed)
    } else {
        Err(ConfigErrors(errors).into())
    }
}

fn validate(root: &Path, files: Vec<PathBuf>) -> Result<ExitKind, CliError> {
    let catalog = load_catalog(root)?;
    let files = if files.is_empty() {
        scenario::files_in(&root.join("scenarios")).map_err(|e| CliError::Infra {
            what: format!("read {}", root.join("scenarios").display()),
            source: Box::new(e),
        })?
    } else {
        files
    };
    let mut errors = Vec::new();
    for f in &files {
        match scenario::load(f, &catalog, scenario::today()) {
            Ok(s) => println!("ok: {} ({} jobs)", f.display(), matrix::expand(&s).len()),
            Err(e) => errors.extend(e.0),
        }
    }
    if errors.is_empty() {
        Ok(ExitKind::Passed)
    } else {
        Err(ConfigErrors(errors).into())
    }
}

fn planned(
    root: &Path,
    name: &str,
    provider: Option<&str>,
    cni: Option<&str>,
) -> Result<(LoadedScenario, Catalog, plan::Plan), CliError> {
    let (s, catalog) = load_scenario(root, name)?;
    let p = plan_jobs(&s, provider, cni)?;
    Ok((s, catalog, p))
}

/// The plan of the scenario's jobs that match `--provider` and `--cni`.
fn plan_jobs(
    s: &LoadedScenario,
    provider: Option<&str>,
    cni: Option<&str>,
) -> Result<plan::Plan, CliError> {
    let jobs = matrix::filter(matrix::expand(s), provider, cni);
    if jobs.is_empty() {
        return Err(CliError::Usage(format!(
            "no job of scenario {} matches --provider {} --cni {}",
            s.name(),
            provider.unwrap_or("*"),
            cni.unwrap_or("*")
        )));
    }
    Ok(plan::build(s, jobs))
}

fn show_plan(
    root: &Path,
    name: &str,
    provider: Option<&str>,
    cni: Option<&str>,
) -> Result<ExitKind, CliError> {
    let (s, _, p) = planned(root, name, provider, cni)?;
    println!(
        "scenario {} (Kubernetes {}, kubeadm API {}){}",
        p.scenario,
        p.version,
        s.kubeadm_api()
            .unwrap_or_else(|| "resolved at run time".into()),
        p.run_deadline
            .map(|d| format!(", run deadline {}", humantime::format_duration(d)))
            .unwrap_or_default()
    );
    for j in &p.jobs {
        println!("{}", j.job.name);
        for st in &j.steps {
            let mut flags = Vec::new();
            if st.always {
                flags.push("always".to_string());
            }
            if st.non_blocking {
                flags.push("non-blocking".to_string());
            }
            if let Some(d) = &st.disabled {
                flags.push(d.clone());
            }
            println!(
                "  {:>2}. {:<16} {:<14} deadline {:>6}{}",
                st.index + 1,
                st.name,
                st.action,
                humantime::format_duration(st.timeout.deadline).to_string(),
                if flags.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", flags.join(", "))
                }
            );
        }
    }
    if let Some(d) = &p.conformance_disabled {
        println!("{d}");
    }
    Ok(ExitKind::Passed)
}

async fn run_scenario(root: &Path, a: ScenarioArgs) -> Result<ExitKind, CliError> {
    let name = a
        .scenario
        .clone()
        .ok_or_else(|| CliError::Usage("a scenario name is required".into()))?;
    let (mut s, catalog) = load_scenario(root, &name)?;
    // Command-line overrides first, then the same validation a scenario file gets: the
    // in-cluster rules hold for `--conformance-runner in-cluster` too.
    if let Some(m) = a.conformance_mode {
        s.scenario.conformance.mode = Some(m.into());
    }
    if let Some(r) = a.conformance_runner {
        s.scenario.conformance.runner = Some(r.into());
    }
    if let Some(i) = &a.conformance_image {
        s.scenario.conformance.image = Some(i.clone());
        s.scenario.conformance.runner = Some(crate::scenario::ConformanceRunner::InCluster);
    }
    if let Some(b) = &a.e2e_binaries {
        // Relative to where the user is, as any command-line path.
        s.scenario.conformance.e2e_binaries = Some(std::path::absolute(b).unwrap_or(b.clone()));
    }
    let s = scenario::recheck(s, &catalog, scenario::today()).map_err(|e| {
        eprintln!("the scenario with the command line's overrides does not validate:");
        CliError::Config(e)
    })?;
    let mut p = plan_jobs(&s, a.provider.as_deref(), a.cni.as_deref())?;
    if let Some(d) = a.deadline {
        p.run_deadline = Some(d);
    }
    let run_id = paths::new_run_id();
    let artifacts = a
        .artifacts
        .clone()
        .unwrap_or_else(|| PathBuf::from("artifacts").join(&run_id));
    let artifacts = if artifacts.is_absolute() {
        artifacts
    } else {
        std::env::current_dir()
            .map(|d| d.join(&artifacts))
            .unwrap_or(artifacts)
    };
    std::fs::create_dir_all(&artifacts).map_err(|e| CliError::Infra {
        what: format!("create artifacts folder {}", artifacts.display()),
        source: Box::new(e),
    })?;

    let history_file = a
        .history
        .clone()
        .unwrap_or_else(|| paths::default_history(Some(&artifacts)));
    let mut recorder = reporter::history::HistoryRecorder::new(history_file.clone(), a.trigger);
    if let Some(spec) = &s.scenario.ci.notify {
        let env = |k: &str| std::env::var(k).ok();
        let n = Notifier::from_spec(
            spec,
            artifacts.join("notifications"),
            history::notify::run_url_from_env(env),
            env,
        );
        recorder = recorder.with_notifier(n, artifacts.clone());
    }

    let stop = Stop::default();
    let signals = stop.on_signals();
    let reporters: Vec<Box<dyn Reporter>> = vec![
        Box::new(reporter::progress::Progress::auto()),
        Box::new(reporter::progress::BuildLog::new(&artifacts)),
        Box::new(reporter::junit::Junit::new(&artifacts)),
        Box::new(reporter::testgrid::Testgrid::new(&artifacts)),
        Box::new(reporter::json::JsonSummary::new(&artifacts)),
        Box::new(reporter::html::Html::new(&artifacts)),
        Box::new(recorder),
    ];
    let settings = RunSettings {
        run_id,
        root: root.to_path_buf(),
        artifacts: artifacts.clone(),
        keep_cluster: a.keep_cluster,
        kubernetes_binaries: a.kubernetes_binaries.clone(),
        node_image: a.node_image.clone(),
        cache_dir: paths::cache_dir(),
        conformance_shard: a.conformance_shard,
    };
    let summary = crate::run::Run::new(p, Arc::new(s), Arc::new(catalog), settings)
        .dry_run(a.dry_run)
        .parallel(a.parallel)
        .stop(stop)
        .reporters(reporters)
        .execute()
        .await;
    signals.abort();
    for e in &summary.reporter_errors {
        eprintln!("warning: {e}");
    }
    println!(
        "{}: {:?} (exit {})",
        summary.scenario, summary.exit, summary.exit_code
    );
    for l in summary.coverage_lines() {
        println!("  {l}");
    }
    if let Some(d) = &summary.conformance_disabled {
        println!("{d}");
    }
    println!("artifacts: {}", artifacts.display());
    println!(
        "history: {} ({} run)",
        history_file.display(),
        if summary.dry_run {
            "recorded as a dry"
        } else {
            a.trigger.as_str()
        }
    );
    Ok(summary.exit)
}

fn shown(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

fn new_scenario(root: &Path, branch: &str, from: &str) -> Result<ExitKind, CliError> {
    let (src, catalog) = load_scenario(root, from)?;
    let target = root.join("scenarios").join(format!("{branch}.yaml"));
    let derived = scenario::new::derive(&src, branch, &catalog)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if target.exists() {
        return Err(CliError::Usage(format!(
            "{} already exists; edit it, or remove it first",
            target.display()
        )));
    }
    let cmd = format!("shakedown scenario new {branch} --from {from}");
    let text = scenario::new::render(&derived, &cmd, &shown(root, &src.path)).map_err(|e| {
        CliError::Infra {
            what: format!("encode the new scenario {}", target.display()),
            source: Box::new(e),
        }
    })?;
    // The new file must validate before it exists.
    scenario::load_str(&target, &text, &catalog, scenario::today())?;
    std::fs::write(&target, &text).map_err(|e| CliError::Infra {
        what: format!("write {}", target.display()),
        source: Box::new(e),
    })?;
    println!("created {}", shown(root, &target));
    for n in &derived.notes {
        println!("  {n}");
    }
    println!("next: review it, then run `shakedown ci generate` to add its CI jobs");
    Ok(ExitKind::Passed)
}

/// Every scenario in scenarios/, validated; all problems at once.
fn load_all(root: &Path) -> Result<Vec<LoadedScenario>, CliError> {
    let catalog = load_catalog(root)?;
    let dir = root.join("scenarios");
    let files = scenario::files_in(&dir).map_err(|e| CliError::Infra {
        what: format!("read {}", dir.display()),
        source: Box::new(e),
    })?;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match scenario::load(&f, &catalog, scenario::today()) {
            Ok(s) => out.push(s),
            Err(e) => errors.extend(e.0),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(errors).into())
    }
}

fn ci_generate(root: &Path, a: CiGenerateArgs) -> Result<ExitKind, CliError> {
    let scenarios = load_all(root)?;
    let settings = ci::Settings {
        repo: a.repo,
        image: a.image,
    };
    let out = a.out.unwrap_or_else(|| root.join("ci"));
    let infra = |what: &str, e: ci::CiError| CliError::Infra {
        what: what.to_string(),
        source: Box::new(e),
    };
    let files =
        ci::generate(&scenarios, root, &settings).map_err(|e| infra("generate the CI jobs", e))?;
    if a.check {
        let findings = ci::check(&out, &files).map_err(|e| infra("check the CI jobs", e))?;
        if findings.is_empty() {
            println!(
                "{} is up to date ({} generated files)",
                shown(root, &out),
                files.len()
            );
            return Ok(ExitKind::Passed);
        }
        for f in &findings {
            let line = f.to_string();
            let root_s = format!("{}/", root.display());
            eprintln!("{}", line.strip_prefix(&root_s).unwrap_or(&line));
        }
        eprintln!(
            "{} file(s) differ from what `{}` writes: change the scenarios, not ci/, and run it",
            findings.len(),
            settings.command()
        );
        return Ok(ExitKind::TestFailure);
    }
    let changes = ci::write(&out, &files).map_err(|e| infra("write the CI jobs", e))?;
    for c in changes {
        match c {
            ci::Change::Written(p) => println!("wrote {}", shown(root, &p)),
            ci::Change::Unchanged(p) => println!("unchanged {}", shown(root, &p)),
            ci::Change::Removed(p) => {
                println!("removed {} (no scenario generates it)", shown(root, &p))
            }
            ci::Change::Foreign(p) => eprintln!(
                "warning: {} is not generated and has no generated header; left alone \
                 (`--check` reports it)",
                shown(root, &p)
            ),
        }
    }
    Ok(ExitKind::Passed)
}

fn history_error(e: HistoryError) -> CliError {
    match e {
        HistoryError::Missing { .. } => CliError::Usage(e.to_string()),
        e => CliError::Infra {
            what: "read the run history".into(),
            source: Box::new(e),
        },
    }
}

fn history_path(explicit: Option<PathBuf>) -> PathBuf {
    explicit.unwrap_or_else(|| {
        paths::default_history(std::env::var_os("ARTIFACTS").map(PathBuf::from).as_deref())
    })
}

fn show_history(a: HistoryArgs) -> Result<ExitKind, CliError> {
    let h = History::open_existing(&history_path(a.history)).map_err(history_error)?;
    if let Some(job) = &a.job {
        let known = h.job_names().map_err(history_error)?;
        if !known.iter().any(|j| history::selects(Some(job), j)) {
            return Err(CliError::Usage(format!(
                "no recorded runs of {job:?} in {}; recorded jobs: {}",
                h.path().display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
    }
    print!(
        "{}",
        history::report(&h, a.job.as_deref()).map_err(history_error)?
    );
    Ok(ExitKind::Passed)
}

fn signoff(root: &Path, a: SignoffArgs) -> Result<ExitKind, CliError> {
    let (s, _) = load_scenario(root, &a.branch)?;
    let h = History::open_existing(&history_path(a.history)).map_err(history_error)?;
    let result = history::signoff::signoff(
        &h,
        &s,
        &history::signoff::Options {
            version: a.version,
            within: Duration::from_secs(a.hours * 3600),
            now: std::time::SystemTime::now(),
        },
    )
    .map_err(history_error)?;
    print!("{}", result.render());
    Ok(if result.go() {
        ExitKind::Passed
    } else {
        ExitKind::TestFailure
    })
}

/// What one `cni lint` target names: a variant's release, or manifest files.
struct LintTarget {
    label: String,
    report: crate::cni::lint::Report,
    objects: Vec<crate::cni::manifest::ManifestObject>,
}

fn lint_target(
    root: &Path,
    target: &str,
    version: &crate::release::KubeVersion,
    catalog: &mut Option<Catalog>,
) -> Result<LintTarget, CliError> {
    use crate::cni::lint;
    let path = Path::new(target);
    if path.is_file() {
        let (report, objects) = lint::lint_files(&[path.to_path_buf()], version);
        return Ok(LintTarget {
            label: target.to_string(),
            report,
            objects,
        });
    }
    if catalog.is_none() {
        *catalog = Some(load_catalog(root)?);
    }
    let catalog = catalog
        .as_ref()
        .ok_or_else(|| CliError::Usage("no catalog".into()))?;
    let (variant, dir) = match (catalog.get(target), catalog.dir(target)) {
        (Some(v), Some(d)) => (v, d),
        _ => {
            return Err(CliError::Usage(format!(
                "{target:?} is neither a CNI variant nor a file; known variants: {}",
                catalog.names().join(", ")
            )))
        }
    };
    let (report, objects) =
        lint::lint_variant(variant, dir, version).map_err(|e| CliError::Usage(e.to_string()))?;
    let release = &variant.releases
        [lint::release_index(variant, version).map_err(|e| CliError::Usage(e.to_string()))?];
    Ok(LintTarget {
        label: format!("{} {}", variant.name, release.version),
        report,
        objects,
    })
}

async fn cni_lint(root: &Path, a: LintArgs) -> Result<ExitKind, CliError> {
    use crate::cni::{apply, lint};
    let version: crate::release::KubeVersion = a
        .kubernetes
        .parse()
        .map_err(|e: crate::release::version::VersionError| CliError::Usage(e.to_string()))?;
    let client = match &a.kubeconfig {
        Some(k) => Some(apply::client(k).await.map_err(|e| CliError::Infra {
            what: "reach the cluster for the dry run".into(),
            source: Box::new(e),
        })?),
        None => None,
    };
    let mut catalog = None;
    let mut errors = 0;
    for t in &a.targets {
        let LintTarget {
            label,
            mut report,
            objects,
        } = lint_target(root, t, &version, &mut catalog)?;
        if let Some(client) = &client {
            let found = lint::dry_run_findings(client, &objects)
                .await
                .map_err(|e| CliError::Infra {
                    what: format!("dry-run {label}"),
                    source: Box::new(e),
                })?;
            report.findings.extend(found);
        }
        let report = report.sorted();
        for f in &report.findings {
            println!("{f}");
        }
        println!(
            "{label} for Kubernetes {version}: {} objects, {} error(s), {} warning(s){}",
            report.objects,
            report.errors(),
            report.warnings(),
            if client.is_some() {
                ", dry-run on the cluster"
            } else {
                ""
            }
        );
        errors += report.errors();
    }
    Ok(if errors > 0 {
        ExitKind::TestFailure
    } else {
        ExitKind::Passed
    })
}

async fn host_setup(root: &Path, deadline: Duration) -> Result<ExitKind, CliError> {
    let script = root.join("harness/scripts/host-setup.sh");
    let cmd = process::Cmd::new("bash").arg(script.display().to_string());
    bounded(
        "prepare this host",
        deadline,
        process::StepLog::stderr(),
        |r| async move {
            r.run(cmd).await.map_err(|e| CliError::Infra {
                what: "prepare this host".into(),
                source: Box::new(e),
            })
        },
    )
    .await?;
    Ok(ExitKind::Passed)
}

/// The Debian source package that holds a Kubernetes version, where one is known.
pub fn debian_version_for(v: &crate::release::KubeVersion) -> Option<&'static str> {
    (v.minor == 20 && v.patch == Some(2)).then_some("1.20.5+really1.20.2-1.1+deb12u1")
}

async fn image_build(
    root: &Path,
    version: &str,
    debian_version: Option<String>,
    binaries: Option<PathBuf>,
    node_image: Option<String>,
    deadline: Duration,
) -> Result<ExitKind, CliError> {
    use crate::images::{self, BinarySource, BuildRequest};
    let v: crate::release::KubeVersion = version
        .parse()
        .map_err(|e: crate::release::version::VersionError| CliError::Usage(e.to_string()))?;
    let source = match (
        binaries,
        debian_version.or_else(|| debian_version_for(&v).map(String::from)),
    ) {
        (Some(dir), _) => BinarySource::Folder(dir),
        (None, Some(d)) => BinarySource::DebianSource { debian_version: d },
        (None, None) => BinarySource::Release,
    };
    let req = BuildRequest {
        root: root.to_path_buf(),
        cache: paths::cache_dir(),
        version: v,
        binaries: source,
        node_image,
    };
    let log_path = req
        .cache
        .join("logs")
        .join(format!("image-build-{}.log", paths::new_run_id()));
    let log = process::StepLog::create(&log_path).map_err(|e| CliError::Infra {
        what: format!("create {}", log_path.display()),
        source: Box::new(e),
    })?;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    // A hidden bar (not a terminal: CI) prints nothing, so notes go to stderr as lines.
    let note = |s: String| {
        if bar.is_hidden() {
            eprintln!("{s}");
        } else {
            bar.println(&s);
            bar.set_message(s);
        }
    };
    let what = format!("build images (log: {})", log_path.display());
    let (req, note, what2) = (&req, &note, what.clone());
    let result = bounded(&what, deadline, log, |runner| async move {
        images::build(req, &runner, note)
            .await
            .map_err(|e| CliError::Infra {
                what: what2,
                source: Box::new(e),
            })
    })
    .await;
    bar.finish_and_clear();
    let a = result?;
    println!("binaries:   {}", a.bin_dir.display());
    println!(
        "images:     {} ({} images)",
        a.images_tar.display(),
        a.images.len()
    );
    println!("node image: {}", a.node_image);
    println!("log:        {}", log_path.display());
    Ok(ExitKind::Passed)
}

async fn gc(run: Option<&str>, deadline: Duration) -> Result<ExitKind, CliError> {
    let c = bounded(
        "remove leftovers",
        deadline,
        process::StepLog::stderr(),
        |r| async move {
            crate::provider::docker::gc(&r, run)
                .await
                .map_err(|e| CliError::Infra {
                    what: "remove leftovers".into(),
                    source: Box::new(e),
                })
        },
    )
    .await?;
    let work = paths::remove_work_dirs(run);
    println!(
        "removed {} container(s), {} network(s), {} volume(s), {} work folder(s)",
        c.containers.len(),
        c.networks.len(),
        c.volumes.len(),
        work
    );
    Ok(ExitKind::Passed)
}
