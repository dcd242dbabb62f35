//! Building uWSGI's option list: includes, config logic and the three expansion
//! passes, in the order uWSGI 2.0.x runs them (uwsgi.md §1.5).
//!
//! Theory of operation. uWSGI keeps one global list of `(key, value)` options.
//! Each ini line is appended as it is parsed. *Immediate* options (`ini`, `for*`,
//! `if-*`, `set`, `strict`, …) act at once on their raw value: an `ini =` splices
//! the other file's lines in place, a logic opener captures every following
//! option until an `end*` key and re-emits it once per item (or drops it). When
//! all files are read, three passes rewrite every non-immediate value: `$(NAME)`
//! from the environment, `@(file)` with the file's contents, `%(name)` with the
//! *first* option of that name. What `--show-config` prints is that list.
//!
//! [`Expander`] is that list and the logic state; it never touches the process
//! environment or cwd: both come from [`crate::config::LoadOptions`].
//!
//! The seams: `include.rs` reads an ini (the main one or `ini =`/`include =`)
//! into the list; `logic.rs` runs an open logic block on each captured option;
//! `passes.rs` runs the three expansion passes (and `@(exec://…)`). This file
//! holds the list itself and the immediate options.

mod include;
mod logic;
mod passes;

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::keys::{self, LogicKind};
use super::magic::{MagicTable, ProcessFacts};
use super::{ConfigError, ErrorKind, Warning};

pub use passes::ExecPolicy;

/// Where an option came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub path: PathBuf,
    pub line: Option<usize>,
    /// Set when the option was emitted by a `for-readline` loop: the env file and
    /// its line. The raw line is a secret and is never printed.
    pub env_line: Option<EnvLine>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvLine {
    pub path: PathBuf,
    pub line: usize,
    pub raw: Vec<u8>,
}

impl Origin {
    pub fn error(&self, kind: ErrorKind, message: impl Into<String>) -> ConfigError {
        ConfigError::new(kind, self.path.clone(), self.line, message)
    }

    pub fn warning(&self, message: impl Into<String>) -> Warning {
        Warning {
            path: self.path.clone(),
            line: self.line,
            message: message.into(),
        }
    }
}

/// One entry of uWSGI's option list.
#[derive(Debug, Clone)]
pub struct Opt {
    pub key: String,
    pub value: String,
    /// Immediate options (and `set-placeholder` values) are never expanded.
    pub configured: bool,
    pub origin: Origin,
}

#[derive(Debug, Clone)]
struct Logic {
    kind: LogicKind,
    arg: String,
    origin: Origin,
}

pub struct Expander<'a> {
    pub opts: Vec<Opt>,
    pub warnings: Vec<Warning>,
    /// The inis read, in order (for the reload watcher).
    pub inis_read: Vec<PathBuf>,
    /// Env files successfully read by `for-readline`, in order, absolute.
    pub env_files_read: Vec<PathBuf>,
    logic: Option<Logic>,
    logic_running: bool,
    strict: bool,
    last_file: Option<String>,
    magic: MagicTable,
    facts: ProcessFacts,
    environment: &'a [(OsString, OsString)],
    depth: usize,
    checked_env_files: HashSet<PathBuf>,
    exec: ExecPolicy,
    /// A refusal found while the list is built that must not change the list
    /// itself (uWSGI carries on past it): reported after expansion.
    pub deferred: Option<ConfigError>,
    /// The master runs as root: files others can write are refused.
    root: bool,
}

impl<'a> Expander<'a> {
    pub fn new(
        facts: ProcessFacts,
        environment: &'a [(OsString, OsString)],
        exec: ExecPolicy,
        root: bool,
    ) -> Expander<'a> {
        Expander {
            opts: Vec::new(),
            warnings: Vec::new(),
            inis_read: Vec::new(),
            env_files_read: Vec::new(),
            logic: None,
            logic_running: false,
            strict: false,
            last_file: None,
            magic: MagicTable::new(&facts),
            facts,
            environment,
            depth: 0,
            checked_env_files: HashSet::new(),
            exec,
            root,
            deferred: None,
        }
    }

    pub fn cwd(&self) -> &Path {
        &self.facts.cwd
    }

    pub fn strict(&self) -> bool {
        self.strict
    }

    /// The environment variable `name` as `getenv` would see it.
    pub fn getenv(&self, name: &str) -> Option<String> {
        self.environment
            .iter()
            .find(|(k, _)| k.as_os_str() == std::ffi::OsStr::new(name))
            .map(|(_, v)| v.to_string_lossy().into_owned())
    }

    /// `uwsgi_get_exported_opt`: the first option named `key`, as it is now.
    pub fn first_value(&self, key: &str) -> Option<String> {
        self.opts
            .iter()
            .find(|o| o.key == key)
            .map(|o| o.value.clone())
    }

    /// `--ini X` on uWSGI's command line: the first entry of the list.
    pub fn load_main(&mut self, given: &str) -> Result<(), ConfigError> {
        let origin = Origin {
            path: PathBuf::from(given),
            line: None,
            env_line: None,
        };
        self.add_option("ini".into(), given.into(), origin, false)
    }

    /// An option from uWSGI's command line (`--set K=V`, `--include FILE`), in
    /// order with the `--ini` of [`Expander::load_main`].
    pub fn add_command_line(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let origin = Origin {
            path: PathBuf::from(format!("--{key} {value}")),
            line: None,
            env_line: None,
        };
        self.add_option(key.into(), value.into(), origin, false)
    }

    /// `add_exported_option_do`.
    fn add_option(
        &mut self,
        key: String,
        value: String,
        origin: Origin,
        placeholder_only: bool,
    ) -> Result<(), ConfigError> {
        if !self.logic_running {
            if keys::is_logic_end(&key) {
                self.logic = None;
            }
            if let Some(logic) = self.logic.clone() {
                self.logic_running = true;
                let result = self.run_logic(&logic, &key, &value, &origin);
                self.logic_running = false;
                return result;
            }
        }
        self.opts.push(Opt {
            key: key.clone(),
            value: value.clone(),
            configured: false,
            origin,
        });
        let idx = self.opts.len() - 1;
        if placeholder_only {
            if keys::is_uwsgi_option(&key) {
                return Err(self.opts[idx].origin.error(
                    ErrorKind::Syntax,
                    format!("you cannot use {key} as a placeholder, it is already an option"),
                ));
            }
            self.opts[idx].configured = true;
            return Ok(());
        }
        if keys::is_uwsgi_option(&key) {
            if keys::is_immediate(&key) {
                self.opts[idx].configured = true;
                let origin = self.opts[idx].origin.clone();
                self.run_immediate(&key, &value, &origin)?;
            }
        } else if self.strict {
            return Err(self.opts[idx].origin.error(
                ErrorKind::Strict,
                format!("[strict-mode] unknown config directive: {key}"),
            ));
        }
        Ok(())
    }

    fn run_immediate(
        &mut self,
        key: &str,
        value: &str,
        origin: &Origin,
    ) -> Result<(), ConfigError> {
        if let Some(kind) = keys::logic_kind(key) {
            if self.logic.is_some() {
                return Err(origin.error(
                    ErrorKind::Syntax,
                    format!("recursive logic in options is not supported (option = {key})"),
                ));
            }
            self.logic = Some(Logic {
                kind,
                arg: value.to_string(),
                origin: origin.clone(),
            });
            return Ok(());
        }
        match key {
            "ini" => self.load_ini(value, origin),
            "include" => {
                if value.ends_with(".ini") {
                    self.load_ini(value, origin)
                } else {
                    Err(origin.error(
                        ErrorKind::Syntax,
                        format!("include = {value}: only .ini files can be included"),
                    ))
                }
            }
            "xml" | "xmlconfig" | "yaml" | "yml" | "json" | "js" | "config" | "ini-paste"
            | "ini-paste-logged" | "inject-before" | "inject-after" => Err(origin.error(
                ErrorKind::Unsupported,
                format!("{key} = {value}: only ini configuration files are supported"),
            )),
            "strict" => {
                self.strict = keys::flag_value(value);
                Ok(())
            }
            "set" | "set-placeholder" | "set-ph" => {
                let Some((k, v)) = value.split_once('=') else {
                    return Err(origin.error(ErrorKind::Syntax, "invalid placeholder/--set value"));
                };
                self.add_option(k.to_string(), v.to_string(), origin.clone(), key != "set")
            }
            _ => Ok(()),
        }
    }
}

/// The uWSGI scheme (`core/io.c`'s registered ones) `source` names, if any:
/// uWSGI reads `exec://cmd`, `http://…`, `data://…` … instead of a file.
fn uwsgi_scheme(source: &str) -> Option<&str> {
    let (scheme, _) = source.split_once("://")?;
    matches!(
        scheme,
        "emperor" | "http" | "data" | "sym" | "section" | "fd" | "exec" | "call" | "callint"
    )
    .then_some(scheme)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Runs the expander over files written in a fresh directory, for the seams' tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::ffi::OsString;
    use std::path::{Path, PathBuf};

    use super::{ExecPolicy, Expander};
    use crate::config::magic::ProcessFacts;
    use crate::config::{ConfigError, Warning};

    pub struct Run {
        pub opts: Vec<(String, String)>,
        pub warnings: Vec<Warning>,
        pub deferred: Option<ConfigError>,
    }

    pub fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("amy-expand-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    pub fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    /// `load_main(main)` then the passes, in `dir`, with `env` as the environment.
    pub fn run(
        dir: &Path,
        main: &str,
        env: &[(&str, &str)],
        exec: ExecPolicy,
    ) -> Result<Run, ConfigError> {
        let environment: Vec<(OsString, OsString)> = env
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        let mut ex = Expander::new(ProcessFacts::current(dir), &environment, exec, false);
        ex.load_main(main)?;
        ex.expand()?;
        Ok(Run {
            opts: ex
                .opts
                .iter()
                .skip(1)
                .map(|o| (o.key.clone(), o.value.clone()))
                .collect(),
            warnings: ex.warnings.clone(),
            deferred: ex.deferred.take(),
        })
    }

    pub fn kv(run: &Run) -> Vec<(&str, &str)> {
        run.opts
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}
