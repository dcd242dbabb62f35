//! Reading uWSGI's ini dialect and `uwsgi_env`, in two layers:
//! raw entries (order, repeats and line numbers kept) → a typed, validated [`Config`].
//!
//! The same [`load`] runs at `start`, at every reload and in `check`.

pub mod around;
mod build;
pub mod classes;
pub mod envfile;
mod error;
mod expand;
pub mod ini;
pub mod keys;
pub mod lifetimes;
pub mod logging;
pub mod magic;
mod model;
mod python_probe;
pub mod serving;
pub mod show;
mod site;
pub mod source;
pub mod values;

pub use error::{ConfigError, ErrorKind, Warning};
pub use expand::ExecPolicy;
pub use model::*;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// What [`load`] needs besides the ini path. The same options serve `start`
/// and every later reload of that master, so the operator's allowances last.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--env-file PATH`: loaded before the ini's `env =` lines.
    pub env_file: Option<PathBuf>,
    /// The environment `$(NAME)` expands from (the master's environment at start).
    pub environment: Vec<(OsString, OsString)>,
    /// The start-up cwd that relative pidfile/logto paths and `%v` resolve against.
    pub cwd: PathBuf,
    /// `--allow-unsupported KEY`: these unsupported keys are warnings, not errors.
    pub allow_unsupported: Vec<String>,
    /// `--allow-root-workers`: an explicit `uid`/`gid` of root is accepted.
    pub allow_root_workers: bool,
    /// Whether `@(exec://…)` runs (start, reload) or not (check).
    pub exec: ExecPolicy,
    /// Apply the rules of a master running as root; `None`: ask the kernel.
    pub as_root: Option<bool>,
    /// What an emperor adds around a vassal's ini (`vassal-set`, `vassals-include`).
    pub vassal: VassalExtras,
}

/// uWSGI's emperor starts a vassal as `uwsgi [--set K=V…] --ini FILE [--include T…]`:
/// the `set` options come before the vassal's own lines (so its scalars win and
/// its placeholders lose), the templates after them. Kept in [`LoadOptions`] so
/// every reload of the vassal reads them again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VassalExtras {
    /// `K=V`, as `--set` takes it.
    pub set: Vec<String>,
    /// Ini templates read after the vassal's file.
    pub include: Vec<PathBuf>,
}

impl LoadOptions {
    fn root(&self) -> bool {
        self.as_root.unwrap_or_else(envfile::running_as_root)
    }
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
    load_with_resolved(ini, options).1
}

/// uWSGI's option list, `(key, value)` in `--show-config` order, values expanded.
pub type Resolved = Vec<(String, String)>;

/// [`load`], also returning the resolved option list whenever the dialect
/// layer succeeded, even if the typed config is refused: `check --show-config`
/// prints what uWSGI would print, then says why `start` would refuse.
pub fn load_with_resolved(
    ini: &Path,
    options: &LoadOptions,
) -> (Option<Resolved>, Result<Loaded, ConfigError>) {
    let given = ini.to_string_lossy().into_owned();
    let root = options.root();
    let facts = magic::ProcessFacts::current(&options.cwd);
    let mut expander = expand::Expander::new(facts, &options.environment, options.exec, root);
    if let Err(e) =
        load_with_extras(&mut expander, &given, &options.vassal).and_then(|()| expander.expand())
    {
        return (None, Err(e));
    }
    let resolved: Vec<(String, String)> = expander
        .opts
        .iter()
        .map(|o| (o.key.clone(), o.value.clone()))
        .collect();
    let file = match given.rfind(':') {
        Some(i) if i > 0 => PathBuf::from(&given[..i]),
        _ => PathBuf::from(&given),
    };
    if let Some(e) = expander.deferred.take() {
        return (Some(resolved), Err(e));
    }
    let outcome =
        build::build(&file, &expander, options, root).map(|(mut config, build_warnings)| {
            config.uwsgi_opt = show::redacted(&resolved);
            let mut warnings = std::mem::take(&mut expander.warnings);
            warnings.extend(build_warnings);
            // One format everywhere: the full path, whatever form the ini was given in.
            for w in &mut warnings {
                if w.path.is_relative() {
                    w.path = std::path::absolute(options.cwd.join(&w.path))
                        .unwrap_or_else(|_| options.cwd.join(&w.path));
                }
            }
            Loaded {
                config,
                warnings,
                resolved: resolved.clone(),
            }
        });
    (Some(resolved), outcome)
}

/// Only the `pidfile` of an ini, read leniently: the dialect is expanded but
/// nothing is validated, so `stop`, `status` and `reload` still find a running
/// master while a half-deployed config is invalid.
pub fn pidfile_of(ini: &Path, options: &LoadOptions) -> Result<Option<PathBuf>, ConfigError> {
    let given = ini.to_string_lossy().into_owned();
    let facts = magic::ProcessFacts::current(&options.cwd);
    // Lenient: no command runs, and the caller may not be the master's user.
    let mut expander =
        expand::Expander::new(facts, &options.environment, ExecPolicy::Refuse, false);
    load_with_extras(&mut expander, &given, &options.vassal)?;
    // Expansion can fail on a broken value elsewhere; the raw pidfile still counts.
    let _ = expander.expand();
    let last_of = |key: &str| {
        expander
            .opts
            .iter()
            .rev()
            .find(|o| keys::canonical(&o.key) == key)
    };
    // An emperor ini names the emperor's own pidfile with `emperor-pidfile`.
    let last = if last_of("emperor").is_some() {
        last_of("emperor-pidfile").or_else(|| last_of("pidfile"))
    } else {
        last_of("pidfile")
    };
    Ok(last.map(|o| options.cwd.join(&o.value)))
}

/// One resolved option of an ini, as uWSGI's `--show-config` lists it, with
/// where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedOption {
    pub key: String,
    pub value: String,
    pub path: PathBuf,
    pub line: Option<usize>,
}

/// The fully expanded option list of an ini, without building a [`Config`]: for
/// configs that are not an app instance (an emperor's ini). No `@(exec://)` runs.
pub fn resolve(
    ini: &Path,
    options: &LoadOptions,
) -> Result<(Vec<ResolvedOption>, Vec<Warning>), ConfigError> {
    let given = ini.to_string_lossy().into_owned();
    let facts = magic::ProcessFacts::current(&options.cwd);
    let mut expander = expand::Expander::new(
        facts,
        &options.environment,
        ExecPolicy::Refuse,
        options.root(),
    );
    load_with_extras(&mut expander, &given, &options.vassal)?;
    expander.expand()?;
    if let Some(e) = expander.deferred.take() {
        return Err(e);
    }
    let opts = expander
        .opts
        .iter()
        .map(|o| ResolvedOption {
            key: o.key.clone(),
            value: o.value.clone(),
            path: o.origin.path.clone(),
            line: o.origin.line,
        })
        .collect();
    Ok((opts, std::mem::take(&mut expander.warnings)))
}

/// Whether the ini runs an emperor (has an `emperor =` line), read leniently
/// like [`pidfile_of`]: an emperor ini has no socket, so it must be told apart
/// before the instance validation refuses it.
pub fn is_emperor(ini: &Path, options: &LoadOptions) -> bool {
    let given = ini.to_string_lossy().into_owned();
    let facts = magic::ProcessFacts::current(&options.cwd);
    let mut expander =
        expand::Expander::new(facts, &options.environment, ExecPolicy::Refuse, false);
    if expander.load_main(&given).is_err() {
        return false;
    }
    expander.opts.iter().any(|o| o.key == "emperor")
}

fn load_with_extras(
    expander: &mut expand::Expander<'_>,
    given: &str,
    extras: &VassalExtras,
) -> Result<(), ConfigError> {
    // uWSGI's order: the environment's UWSGI_* options, then the command line.
    expander.add_environment_options()?;
    for kv in &extras.set {
        expander.add_command_line("set", kv)?;
    }
    expander.load_main(given)?;
    for template in &extras.include {
        expander.add_command_line("include", &template.to_string_lossy())?;
    }
    Ok(())
}
