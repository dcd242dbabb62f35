//! Reading uWSGI's ini dialect and `uwsgi_env`, in two layers:
//! raw entries (order, repeats and line numbers kept) → a typed, validated [`Config`].
//!
//! The same [`load`] runs at `start`, at every reload and in `check`.

mod model;

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
pub fn load(ini: &Path, options: &LoadOptions) -> Result<Loaded, ConfigError> {
    let _ = (ini, options);
    unimplemented!("config::load is being written")
}
