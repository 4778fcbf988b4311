//! Command line: parsing and dispatch. Every command returns an exit code from
//! [`ExitKind`]; see README.md for the table. One file per command, as cargo-nextest
//! lays its CLI out; nothing in the library imports this module.

mod ci_generate;
mod cni_lint;
mod gc;
mod host_setup;
mod image_build;
mod list;
mod registry;
mod release_layout;
mod run_scenario;
mod show_history;
mod show_plan;
mod signoff;
mod validate;

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
    /// A registry on this machine serving the images built here under their upstream names.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// Release buckets.
    Release {
        #[command(subcommand)]
        command: ReleaseCommand,
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
        /// The release bucket to download from when no source is given.
        #[arg(long, env = "SHAKEDOWN_RELEASE_URL", value_parser = parse_bucket)]
        release_url: Option<crate::release::bucket::Bucket>,
        /// Give up after this long (exit 3); a cold build takes about 13 minutes here.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "60m")]
        deadline: Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Start Debian's docker-registry in a container, published on 127.0.0.1 and on docker's
    /// bridge address only.
    Start {
        #[arg(long, default_value_t = 5000)]
        port: u16,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
        deadline: Duration,
    },
    /// Push this machine's build into it under the names kubeadm and the workloads pull,
    /// and print the --registry-mirror flags that reach it.
    Push {
        #[arg(long, default_value_t = 5000)]
        port: u16,
        #[arg(long, default_value = "v1.20.2")]
        kubernetes: String,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "60m")]
        deadline: Duration,
    },
    /// Remove the registry and what it stored.
    Stop {
        #[arg(long, default_value_t = 5000)]
        port: u16,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "2m")]
        deadline: Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Lay this machine's build out as a release bucket (markers, binaries, tarballs and
    /// their .sha256/.sha512 files) under DIR, to serve and pass as --release-url.
    Layout {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "v1.20.2")]
        kubernetes: String,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "60m")]
        deadline: Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Time a 1 control plane + 1 worker bring-up (nodes, init, join, CNI until every node
    /// and kube-system pod is Ready) with cached images; target 45 s, compared with 65 s by hand.
    BringUp {
        #[arg(long, default_value = "release-1.20")]
        scenario: String,
        #[arg(long, default_value_t = 3)]
        runs: u32,
        /// Each run gives up after this long (exit 1; its nodes are still removed).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "20m")]
        deadline: Duration,
    },
    /// Run the scenario's conformance tier once on a fresh 1 control plane + 1 worker
    /// bridge cluster: specs per minute, wall time against the step's deadline and the
    /// 20-minute target. Specs start in the order a scenario run would use.
    Conformance {
        #[arg(long, default_value = "release-1.20")]
        scenario: String,
        /// Specs at once: a number or `auto` (default: the scenario's).
        #[arg(long, value_parser = parse_parallel)]
        parallel: Option<crate::scenario::Parallel>,
        /// Run history whose spec durations order the specs: a SQLite file or a postgres://
        /// URL (default: history.sqlite beside $ARTIFACTS, else artifacts/history.sqlite).
        #[arg(long, env = "SHAKEDOWN_HISTORY", hide_env_values = true, value_parser = parse_history)]
        history: Option<history::Location>,
    },
}

/// `--parallel`: a number of specs at once, or `auto`.
fn parse_parallel(s: &str) -> Result<crate::scenario::Parallel, String> {
    use serde::de::IntoDeserializer;
    let d: serde::de::value::StrDeserializer<'_, serde::de::value::Error> = s.into_deserializer();
    serde::Deserialize::deserialize(d).map_err(|e: serde::de::value::Error| e.to_string())
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
    /// Leave this matrix cell out of the generated jobs (repeatable), e.g.
    /// release-1.20/docker/weave on an offline CI machine that cannot pull weave's images.
    #[arg(long = "leave-out", value_name = "JOB")]
    pub leave_out: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// A job (release-1.20/docker/bridge) or the start of one up to a `/` (release-1.20);
    /// default every job.
    pub job: Option<String>,
    /// Run history: a SQLite file or a postgres:// URL shared by many runners (default:
    /// history.sqlite beside $ARTIFACTS, else artifacts/history.sqlite).
    #[arg(long, env = "SHAKEDOWN_HISTORY", hide_env_values = true, value_parser = parse_history)]
    pub history: Option<history::Location>,
    /// Print each conformance spec's last passed duration as a table
    /// (`SECONDS<TAB>SPEC`, longest first) for a scenario's `conformance.durations`.
    #[arg(long)]
    pub spec_durations: bool,
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
    /// Run history: a SQLite file or a postgres:// URL shared by many runners (default:
    /// history.sqlite beside $ARTIFACTS, else artifacts/history.sqlite).
    #[arg(long, env = "SHAKEDOWN_HISTORY", hide_env_values = true, value_parser = parse_history)]
    pub history: Option<history::Location>,
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
    /// Only run jobs of this topology: its `name`, or `default` for a scenario's unnamed
    /// one (generated per-cell CI jobs pass it for named topologies).
    #[arg(long)]
    pub topology: Option<String>,
    /// Leave this job out (repeatable), e.g. release-1.20/docker/weave: a cell this
    /// machine cannot run (see README).
    #[arg(long = "skip-job", value_name = "JOB")]
    pub skip_jobs: Vec<String>,
    /// Run the whole engine with actions that only log what they would do.
    #[arg(long)]
    pub dry_run: bool,
    /// Artifacts folder (default: $ARTIFACTS, as Prow sets it, else ./artifacts/<run-id>).
    #[arg(long, env = "ARTIFACTS")]
    pub artifacts: Option<PathBuf>,
    /// Keep clusters after the run and print how to reach them.
    #[arg(long)]
    pub keep_cluster: bool,
    /// The kubeconfig of a cluster someone else made, for `--provider existing`.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
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
    /// The release bucket `source: release` downloads from (default https://dl.k8s.io).
    #[arg(long, env = "SHAKEDOWN_RELEASE_URL", value_parser = parse_bucket)]
    pub release_url: Option<crate::release::bucket::Bucket>,
    /// Pull images named under REGISTRY from URL instead, and only from there (repeatable),
    /// e.g. registry.k8s.io=http://172.17.0.1:5000. Nothing is preloaded but a release's
    /// control-plane images.
    #[arg(long = "registry-mirror", value_name = "REGISTRY=URL")]
    pub registry_mirrors: Vec<crate::release::mirror::Mirror>,
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
    /// Run history to record the run in: a SQLite file or a postgres:// URL shared by many
    /// runners (default: history.sqlite beside the artifacts folder).
    #[arg(long, env = "SHAKEDOWN_HISTORY", hide_env_values = true, value_parser = parse_history)]
    pub history: Option<history::Location>,
    /// What started the run. Periodic and manual runs count for streaks, notifications and
    /// sign-off; presubmit runs are recorded but do not.
    #[arg(long, value_enum, default_value_t = Trigger::Manual)]
    pub trigger: Trigger,
    /// Run again, on a fresh cluster, exactly the conformance specs that failed or had no
    /// result in the run whose artifacts folder this is, and only its jobs that need it. It
    /// must have tested the same Kubernetes version. A spec that failed there and passes
    /// now is reported flaky.
    #[arg(long, value_name = "ARTIFACTS_DIR")]
    pub rerun_failed: Option<PathBuf>,
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

fn parse_bucket(s: &str) -> Result<crate::release::bucket::Bucket, String> {
    crate::release::bucket::Bucket::new(s).map_err(|e| e.to_string())
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
    #[error(transparent)]
    Bench(#[from] crate::bench::BenchError),
    #[error("failed to read the run given to --rerun-failed")]
    Rerun(#[from] crate::conformance::rerun::RerunError),
}

impl CliError {
    pub fn exit(&self) -> ExitKind {
        match self {
            CliError::Config(_) | CliError::Usage(_) => ExitKind::Configuration,
            CliError::Infra { .. } => ExitKind::Infrastructure,
            CliError::Interrupted { .. } => ExitKind::Interrupted,
            CliError::Bench(_) | CliError::Rerun(_) => ExitKind::Configuration,
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
        Command::List => list::list(&root),
        Command::Validate { files } => validate::validate(&root, files),
        Command::Plan {
            scenario,
            provider,
            cni,
        } => show_plan::show_plan(&root, &scenario, provider.as_deref(), cni.as_deref()),
        Command::Scenario(args) => match &args.command {
            Some(ScenarioCommand::New { branch, from }) => {
                run_scenario::new_scenario(&root, branch, from)
            }
            None => run_scenario::run_scenario(&root, *args).await,
        },
        Command::Ci {
            command: CiCommand::Generate(args),
        } => ci_generate::ci_generate(&root, args),
        Command::History(args) => show_history::show_history(args),
        Command::Signoff(args) => signoff::signoff(&root, args),
        Command::Host {
            command: HostCommand::Setup { deadline },
        } => host_setup::host_setup(&root, deadline).await,
        Command::Image {
            command:
                ImageCommand::Build {
                    kubernetes,
                    debian_version,
                    kubernetes_binaries,
                    node_image,
                    release_url,
                    deadline,
                },
        } => {
            image_build::image_build(
                &root,
                &kubernetes,
                debian_version,
                kubernetes_binaries,
                node_image,
                release_url,
                deadline,
            )
            .await
        }
        Command::Registry { command } => registry::registry(&root, command).await,
        Command::Release {
            command:
                ReleaseCommand::Layout {
                    out,
                    kubernetes,
                    deadline,
                },
        } => release_layout::release_layout(&root, &out, &kubernetes, deadline).await,
        Command::Gc { run, deadline } => gc::gc(run.as_deref(), deadline).await,
        Command::Bench {
            command:
                BenchCommand::BringUp {
                    scenario,
                    runs,
                    deadline,
                },
        } => crate::bench::bring_up(&root, &scenario, runs, deadline)
            .await
            .map_err(CliError::from),
        Command::Bench {
            command:
                BenchCommand::Conformance {
                    scenario,
                    parallel,
                    history,
                },
        } => crate::bench::conformance(&root, &scenario, parallel, &history_path(history))
            .await
            .map_err(CliError::from),
        Command::Cni {
            command: CniCommand::Lint(args),
        } => cni_lint::cni_lint(&root, args).await,
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

/// A scenario by name or path, with its CNI catalog.
pub fn load_scenario(root: &Path, name: &str) -> Result<(LoadedScenario, Catalog), CliError> {
    scenario::load_named(root, name).map_err(|e| match e {
        scenario::FindError::Invalid(e) => CliError::Config(e),
        missing => CliError::Usage(missing.to_string()),
    })
}

fn shown(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

/// The plan of the scenario's jobs that match `--provider`, `--cni` and `--topology`. When a job has VM
/// nodes, the VM kernel is built (cached) and a probe boot decides between KVM and TCG, so
/// the plan's deadlines are the ones the run keeps.
fn plan_jobs(
    root: &Path,
    s: &LoadedScenario,
    provider: Option<&str>,
    cni: Option<&str>,
    topology: Option<&str>,
    skip: &[String],
) -> Result<plan::Plan, CliError> {
    let all = matrix::expand(s);
    if let Some(unknown) = skip.iter().find(|k| !all.iter().any(|j| &j.name == *k)) {
        return Err(CliError::Usage(format!(
            "--skip-job {unknown}: scenario {} has no such job; it has {}",
            s.name(),
            all.iter()
                .map(|j| j.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut jobs = matrix::filter(all, provider, cni, topology);
    jobs.retain(|j| !skip.contains(&j.name));
    if jobs.is_empty() {
        return Err(CliError::Usage(format!(
            "no job of scenario {} matches --provider {} --cni {} --topology {}",
            s.name(),
            provider.unwrap_or("*"),
            cni.unwrap_or("*"),
            topology.unwrap_or("*")
        )));
    }
    let accel =
        crate::images::vm::plan_accelerator(root, &paths::cache_dir(), s, &jobs).map_err(|e| {
            CliError::Infra {
                what: "build the kernel VM nodes boot".into(),
                source: Box::new(e),
            }
        })?;
    Ok(plan::build(s, jobs, accel))
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

fn history_path(explicit: Option<history::Location>) -> history::Location {
    explicit.unwrap_or_else(|| {
        history::default_path(std::env::var_os("ARTIFACTS").map(PathBuf::from).as_deref()).into()
    })
}

/// `--history`: a `postgres://` URL or a file path.
fn parse_history(s: &str) -> Result<history::Location, String> {
    Ok(history::Location::parse(s))
}
