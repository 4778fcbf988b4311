//! Command line: parsing and dispatch. Every command returns an exit code from
//! [`ExitKind`]; see README.md for the table.

use crate::actions::{RunContext, RunSettings};
use crate::cni::Catalog;
use crate::config::ConfigErrors;
use crate::engine::{self, process, RunOptions, Stop};
use crate::exit::ExitKind;
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
    Scenario(ScenarioArgs),
    /// Prepare this machine (Debian packages, dockerd).
    Host {
        #[command(subcommand)]
        command: HostCommand,
    },
    /// CNI variants.
    Cni {
        #[command(subcommand)]
        command: CniCommand,
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
    Setup,
}

#[derive(Debug, clap::Args)]
pub struct ScenarioArgs {
    /// Scenario name (a file in scenarios/) or path to a scenario file.
    pub scenario: String,
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
}

impl CliError {
    pub fn exit(&self) -> ExitKind {
        match self {
            CliError::Config(_) | CliError::Usage(_) => ExitKind::Configuration,
            CliError::Infra { .. } => ExitKind::Infrastructure,
        }
    }
}

fn report(e: &CliError) {
    let mut msg = format!("error: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    eprintln!("{msg}");
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
        Command::Scenario(args) => run_scenario(&root, args).await,
        Command::Host {
            command: HostCommand::Setup,
        } => host_setup(&root).await,
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
    let jobs = matrix::filter(matrix::expand(&s), provider, cni);
    if jobs.is_empty() {
        return Err(CliError::Usage(format!(
            "no job of scenario {} matches --provider {} --cni {}",
            s.name(),
            provider.unwrap_or("*"),
            cni.unwrap_or("*")
        )));
    }
    let p = plan::build(&s, jobs);
    Ok((s, catalog, p))
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
    let (s, catalog, mut p) = planned(root, &a.scenario, a.provider.as_deref(), a.cni.as_deref())?;
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

    let stop = Stop::default();
    let signals = spawn_signal_handler(stop.clone());
    let reporters: Vec<Box<dyn Reporter>> = vec![
        Box::new(reporter::progress::Progress::auto()),
        Box::new(reporter::progress::BuildLog::new(&artifacts)),
        Box::new(reporter::junit::Junit::new(&artifacts)),
        Box::new(reporter::testgrid::Testgrid::new(&artifacts)),
        Box::new(reporter::json::JsonSummary::new(&artifacts)),
    ];
    let cx = RunContext {
        settings: RunSettings {
            run_id,
            root: root.to_path_buf(),
            artifacts: artifacts.clone(),
            keep_cluster: a.keep_cluster,
            kubernetes_binaries: a.kubernetes_binaries.clone(),
            node_image: a.node_image.clone(),
            cache_dir: paths::cache_dir(),
            conformance_shard: a.conformance_shard,
        },
        scenario: Arc::new(s),
        catalog: Arc::new(catalog),
    };
    let summary = engine::run(
        &p,
        cx,
        RunOptions {
            dry_run: a.dry_run,
            parallel: a.parallel,
        },
        stop,
        reporters,
    )
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
    Ok(summary.exit)
}

/// First SIGINT/SIGTERM: stop, clean up. Second: abort cleanup too.
fn spawn_signal_handler(stop: Stop) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        loop {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            if stop.is_stopped() {
                eprintln!("\n{name} again: aborting cleanup steps");
            } else {
                eprintln!(
                    "\n{name}: stopping; cleanup steps still run (interrupt again to abort them)"
                );
            }
            stop.stop(format!("interrupted by {name}"), true);
        }
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
    version: &crate::kube::KubeVersion,
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
    let version: crate::kube::KubeVersion = a
        .kubernetes
        .parse()
        .map_err(|e: crate::kube::version::VersionError| CliError::Usage(e.to_string()))?;
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

async fn host_setup(root: &Path) -> Result<ExitKind, CliError> {
    let script = root.join("harness/scripts/host-setup.sh");
    let cmd = process::Cmd::new("bash").arg(script.display().to_string());
    let cancel = tokio_util::sync::CancellationToken::new();
    process::run(
        &cmd,
        &process::StepLog::stderr(),
        &cancel,
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| CliError::Infra {
        what: "prepare this host".into(),
        source: Box::new(e),
    })?;
    Ok(ExitKind::Passed)
}
