//! The command line (clap). Names and exit codes are the contract README.md
//! ("Commands and exit codes") documents: init jobs and deploy scripts use them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "amy-emperor",
    version,
    about = "Supervise a Python WSGI app from a uWSGI ini"
)]
pub struct Cli {
    /// More log output (repeatable). `AMY_LOG` (EnvFilter syntax) overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less log output (repeatable).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate, bind, write the pidfile and supervise the pool in the foreground.
    Start(StartArgs),
    /// Graceful stop (SIGTERM) and wait until the master is gone.
    Stop(StopArgs),
    /// Graceful reload; waits for the outcome.
    Reload(ReloadArgs),
    /// Show whether the instance runs, its workers and the last reload.
    Status(StatusArgs),
    /// Parse and validate the config without starting anything.
    Check(CheckArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the man page (roff), generated from these definitions.
    Man,
    /// The `http =` router process; started by the master, not by people.
    #[command(hide = true)]
    Router,
    /// Print the worker package bundle, exactly as workers read it (JSON: path
    /// → source, and the native module). For tests, benchmarks and the curious.
    #[command(hide = true)]
    WorkerBundle,
}

#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Where to find an instance: an ini (default `./amy_uwsgi.ini`) or a pidfile.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The uWSGI ini of the instance.
    #[arg(value_name = "INI")]
    pub ini: Option<PathBuf>,
    /// Use this pidfile instead of reading the ini.
    #[arg(long, value_name = "PATH")]
    pub pidfile: Option<PathBuf>,
}

impl Target {
    pub fn ini_or_default(&self) -> PathBuf {
        self.ini
            .clone()
            .unwrap_or_else(|| PathBuf::from("amy_uwsgi.ini"))
    }
}

#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    #[arg(value_name = "INI")]
    pub ini: Option<PathBuf>,
    /// Load this env file before the ini's `env =` lines.
    #[arg(long, value_name = "PATH")]
    pub env_file: Option<PathBuf>,
    /// Detach; return once the first generation is ready.
    #[arg(long)]
    pub daemonize: bool,
    /// Emperor mode: one instance per `*.ini` in DIR, or per file matching GLOB
    /// (`/etc/uwsgi/vassals/*.ini`). An ini with `emperor =` does the same.
    #[arg(long, value_name = "DIR|GLOB", conflicts_with = "ini")]
    pub emperor: Option<PathBuf>,
    /// With `--emperor`: the emperor's pidfile (`stop`, `status` and `reload` use it).
    #[arg(long, value_name = "PATH", requires = "emperor")]
    pub pidfile: Option<PathBuf>,
    /// Set by the emperor for a vassal (its `vassal-set`): `K=V` before the ini.
    #[arg(long, value_name = "K=V", hide = true)]
    pub vassal_set: Vec<String>,
    /// Set by the emperor for a vassal (its `vassals-include`): a template read after the ini.
    #[arg(long, value_name = "PATH", hide = true)]
    pub vassal_include: Vec<PathBuf>,
    #[command(flatten)]
    pub allow: Allowances,
}

impl StartArgs {
    /// What the emperor asked to add around this vassal's ini.
    pub fn vassal_extras(&self) -> crate::config::VassalExtras {
        crate::config::VassalExtras {
            set: self.vassal_set.clone(),
            include: self.vassal_include.clone(),
        }
    }
}

/// The operator's opt-ins to what the config layer refuses by default. Given to
/// `start`, they hold for every later reload of that master.
#[derive(Debug, Clone, Default, Args)]
pub struct Allowances {
    /// Accept this unsupported uWSGI key with a warning (repeatable): the site
    /// loses what the key does (`check` says what).
    #[arg(long = "allow-unsupported", value_name = "KEY", action = clap::ArgAction::Append)]
    pub unsupported: Vec<String>,
    /// Accept an explicit `uid`/`gid` of root: the workers run the app as root.
    #[arg(long = "allow-root-workers")]
    pub root_workers: bool,
}

#[derive(Debug, Clone, Args)]
pub struct StopArgs {
    #[command(flatten)]
    pub target: Target,
    /// Seconds to wait for the master to exit.
    #[arg(long, default_value_t = 90.0)]
    pub timeout: f64,
    /// Fast stop (SIGINT): workers stop at once.
    #[arg(long)]
    pub now: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub target: Target,
    /// Seconds to wait for the outcome.
    #[arg(long, default_value_t = 300.0)]
    pub timeout: f64,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: Target,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    #[arg(value_name = "INI")]
    pub ini: Option<PathBuf>,
    /// Print the resolved `[uwsgi]` section as uWSGI's `--show-config` does (env values redacted).
    #[arg(long)]
    pub show_config: bool,
    /// With `--show-config`: print env values unredacted.
    #[arg(long, requires = "show_config")]
    pub show_secrets: bool,
    /// Load this env file before the ini's `env =` lines.
    #[arg(long, value_name = "PATH")]
    pub env_file: Option<PathBuf>,
    /// Run `@(exec://…)` commands as `start` would (check runs none by default).
    #[arg(long)]
    pub allow_exec: bool,
    #[command(flatten)]
    pub allow: Allowances,
}
