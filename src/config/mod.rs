//! Reading uWSGI's ini dialect and `uwsgi_env`, in two layers:
//! raw entries (order, repeats and line numbers kept) → a typed, validated [`Config`].
//!
//! The same [`load`] runs at `start`, at every reload and in `check`.

mod build;
pub mod envfile;
mod expand;
pub mod ini;
pub mod keys;
pub mod magic;
mod model;
pub mod serving;
pub mod show;

pub use model::*;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// What [`load`] needs besides the ini path.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--env-file PATH`: loaded before the ini's `env =` lines.
    pub env_file: Option<PathBuf>,
    /// The environment `$(NAME)` expands from (the master's environment at start).
    pub environment: Vec<(OsString, OsString)>,
    /// The start-up cwd that relative pidfile/logto paths and `%v` resolve against.
    pub cwd: PathBuf,
}

/// A survivable remark about the config (unknown key, quoted env value, …).
/// Never contains an env value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.path.display(), line, self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// A config that cannot be used. Displays as `path:line: reason`.
/// Never contains an env value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

/// The outcome of reading a config.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Warning>,
    /// The resolved `[uwsgi]` options in uWSGI's `--show-config` order, values expanded.
    /// `env` values here are secrets: print them only through `show::render`.
    pub resolved: Vec<(String, String)>,
}

/// Reads and validates the config at `ini`.
///
/// `ini` may be relative (to `options.cwd`) and may carry a `:section` suffix,
/// as uWSGI's `--ini` does. Errors are fatal-at-start conditions (`path:line:
/// reason`); everything uWSGI would survive is a [`Warning`].
pub fn load(ini: &Path, options: &LoadOptions) -> Result<Loaded, ConfigError> {
    let given = ini.to_string_lossy().into_owned();
    let facts = magic::ProcessFacts::current(&options.cwd);
    let mut expander = expand::Expander::new(facts, &options.environment);
    expander.load_main(&given)?;
    expander.expand()?;
    let file = match given.rfind(':') {
        Some(i) if i > 0 => PathBuf::from(&given[..i]),
        _ => PathBuf::from(&given),
    };
    let (config, build_warnings) = build::build(&file, &expander, options)?;
    let resolved = expander
        .opts
        .iter()
        .map(|o| (o.key.clone(), o.value.clone()))
        .collect();
    let mut warnings = std::mem::take(&mut expander.warnings);
    warnings.extend(build_warnings);
    Ok(Loaded {
        config,
        warnings,
        resolved,
    })
}

/// Only the `pidfile` of an ini, read leniently: the dialect is expanded but
/// nothing is validated, so `stop`, `status` and `reload` still find a running
/// master while a half-deployed config is invalid.
pub fn pidfile_of(ini: &Path, options: &LoadOptions) -> Result<Option<PathBuf>, ConfigError> {
    let given = ini.to_string_lossy().into_owned();
    let facts = magic::ProcessFacts::current(&options.cwd);
    let mut expander = expand::Expander::new(facts, &options.environment);
    expander.load_main(&given)?;
    // Expansion can fail on a broken value elsewhere; the raw pidfile still counts.
    let _ = expander.expand();
    let last = expander
        .opts
        .iter()
        .rev()
        .find(|o| keys::canonical(&o.key) == "pidfile");
    Ok(last.map(|o| options.cwd.join(&o.value)))
}
