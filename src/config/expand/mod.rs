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

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::keys::{self, LogicKind};
use super::magic::{MagicTable, ProcessFacts};
use super::{ConfigError, ErrorKind, Warning};

pub use passes::ExecPolicy;

/// The work one load may do, in bytes read, built or scanned (the ini files,
/// every option added, every value the passes scan or build). A real config
/// costs a few KiB; an ini at the 4 MiB file limit about 24 MiB (read, magic,
/// listed, three passes). This bounds what an ini that repeats or grows itself
/// can cost (includes fanning out, a loop re-emitting, a placeholder that
/// reintroduces itself, each substitution rescanning the value as uWSGI does)
/// to well under a second, whatever its size.
pub const MAX_WORK: usize = 32 * 1024 * 1024;
/// The most options one load may hold (uWSGI has no limit; real ones hold a
/// few hundred, a `for-readline` over a full env file about 4100).
pub const MAX_OPTIONS: usize = 65_536;

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
    /// Index in `opts` of uWSGI's own `--ini X` from the command line (not a
    /// setting: UWSGI_* environment options and `--set`s may come before it).
    pub main_ini: Option<usize>,
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
    /// Bytes read, built or scanned so far, bounded by [`MAX_WORK`].
    work: usize,
    /// The index of the first option of each name (`first_value` in O(1)).
    first: HashMap<String, usize>,
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
            main_ini: None,
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
            work: 0,
            first: HashMap::new(),
        }
    }

    /// The work done so far (see [`MAX_WORK`]).
    #[cfg(test)]
    pub fn work(&self) -> usize {
        self.work
    }

    /// Accounts for `bytes` of work about to be done: refused, before anything
    /// is built, when the load would pass [`MAX_WORK`] (the counter never does).
    fn charge(&mut self, bytes: usize, origin: &Origin) -> Result<(), ConfigError> {
        let work = self.work.saturating_add(bytes);
        if work > MAX_WORK {
            return Err(origin.error(
                ErrorKind::TooLarge,
                format!(
                    "expanding the config takes more than {} MiB of work (a value that refers to itself, or an include or loop that repeats?)",
                    MAX_WORK >> 20
                ),
            ));
        }
        self.work = work;
        Ok(())
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
        self.first.get(key).map(|&i| self.opts[i].value.clone())
    }

    /// [`Expander::first_value`], its copy accounted for.
    fn first_value_charged(
        &mut self,
        key: &str,
        origin: &Origin,
    ) -> Result<Option<String>, ConfigError> {
        let len = self.first.get(key).map_or(0, |&i| self.opts[i].value.len());
        self.charge(len + key.len(), origin)?;
        Ok(self.first_value(key))
    }

    /// `--ini X` on uWSGI's command line: the first entry of the list.
    pub fn load_main(&mut self, given: &str) -> Result<(), ConfigError> {
        let origin = Origin {
            path: PathBuf::from(given),
            line: None,
            env_line: None,
        };
        self.main_ini = Some(self.opts.len());
        self.add_option("ini".into(), given.into(), origin, AddAs::Option)
    }

    /// The options the config is built from: all but the command line's `ini`.
    pub fn settings(&self) -> impl Iterator<Item = &Opt> {
        self.opts
            .iter()
            .enumerate()
            .filter(move |(i, _)| Some(*i) != self.main_ini)
            .map(|(_, o)| o)
    }

    /// An option from uWSGI's command line (`--set K=V`, `--include FILE`), in
    /// order with the `--ini` of [`Expander::load_main`].
    pub fn add_command_line(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let origin = Origin {
            path: PathBuf::from(format!("--{key} {value}")),
            line: None,
            env_line: None,
        };
        self.add_option(key.into(), value.into(), origin, AddAs::Option)
    }

    /// uWSGI's `parse_sys_envs`: every `UWSGI_NAME=value` of the master's
    /// environment is the option `name` (lower case, `_` → `-`), added before
    /// the command line and the ini, so an ini's scalar wins over it. Names uWSGI
    /// uses for its own plumbing are skipped, as it skips them, and so is
    /// `UWSGI_VASSAL_*`: an emperor hands those to its vassals as `UWSGI_*`.
    pub fn add_environment_options(&mut self) -> Result<(), ConfigError> {
        const PLUMBING: [&str; 8] = [
            "RELOADS",
            "VASSALS_DIR",
            "EMPEROR_FD",
            "BROODLORD_NUM",
            "EMPEROR_FD_CONFIG",
            "EMPEROR_PROXY",
            "JAIL_PID",
            "ORIGINAL_PROC_NAME",
        ];
        let found: Vec<(String, String, String)> = self
            .environment
            .iter()
            .filter_map(|(k, v)| {
                let name = k.to_str()?.strip_prefix("UWSGI_")?;
                if name.is_empty() || PLUMBING.contains(&name) || name.starts_with("VASSAL_") {
                    return None;
                }
                let key = name.to_ascii_lowercase().replace('_', "-");
                Some((
                    k.to_str()?.to_string(),
                    key,
                    v.to_string_lossy().into_owned(),
                ))
            })
            .collect();
        for (var, key, value) in found {
            // Named by the variable, never by its value (it may be a secret).
            let origin = Origin {
                path: PathBuf::from(format!("environment variable {var}")),
                line: None,
                env_line: None,
            };
            self.add_option(key, value, origin, AddAs::Option)?;
        }
        Ok(())
    }

    /// `add_exported_option_do`.
    fn add_option(
        &mut self,
        key: String,
        value: String,
        origin: Origin,
        added_as: AddAs,
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
        if self.opts.len() >= MAX_OPTIONS {
            return Err(origin.error(
                ErrorKind::TooLarge,
                format!(
                    "more than {MAX_OPTIONS} options (an include or loop that repeats itself?)"
                ),
            ));
        }
        self.charge(key.len() + value.len() + 1, &origin)?;
        let idx = self.opts.len();
        self.first.entry(key.clone()).or_insert(idx);
        self.opts.push(Opt {
            key: key.clone(),
            value: value.clone(),
            configured: false,
            origin,
        });
        if added_as == AddAs::Placeholder {
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
        } else if self.strict && !keys::is_own_key(&key) {
            // Our own keys (reload-check, prometheus, …) are known to us.
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
                self.add_option(
                    k.to_string(),
                    v.to_string(),
                    origin.clone(),
                    if key == "set" {
                        AddAs::Option
                    } else {
                        AddAs::Placeholder
                    },
                )
            }
            _ => Ok(()),
        }
    }
}

/// How [`Expander::add_option`] takes a `key = value`: as an option (a line,
/// `set`), or as a placeholder only (`set-placeholder`, which uWSGI refuses for
/// a name that is an option).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddAs {
    Option,
    Placeholder,
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
                .settings()
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

/// The bound on the work of one load, whatever the ini: each case is refused
/// with its error before the step that would pass [`MAX_WORK`] is done, so the
/// work counted (bytes read, built or scanned), and with it the CPU cost,
/// stays within the bound.
#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::path::Path;

    use super::testing::{dir, kv, run, write};
    use super::{ExecPolicy, Expander, MAX_WORK};
    use crate::config::magic::ProcessFacts;
    use crate::config::{ConfigError, ErrorKind};

    fn load(dir: &Path, main: &str) -> (Result<(), ConfigError>, usize) {
        let env: Vec<(OsString, OsString)> = Vec::new();
        let mut ex = Expander::new(ProcessFacts::current(dir), &env, ExecPolicy::Refuse, false);
        let r = ex.load_main(main).and_then(|()| ex.expand());
        (r, ex.work())
    }

    fn assert_refused_within_bound(dir: &Path, main: &str, message: &str) {
        let (r, work) = load(dir, main);
        let e = r.expect_err("refused");
        assert_eq!(e.kind, ErrorKind::TooLarge, "{e}");
        assert!(e.message.contains(message), "{e}");
        assert!(work <= MAX_WORK, "work {work}");
    }

    /// `set` adds an option (any name); `set-placeholder`/`set-ph` adds a
    /// placeholder only, and uWSGI refuses an option's name there.
    #[test]
    fn set_adds_an_option_and_set_placeholder_only_a_placeholder() {
        let d = dir("set");
        write(
            &d,
            "a.ini",
            "[uwsgi]\nset = socket=x.sock\nset-placeholder = name=web\nset-ph = tier=2\nx = %(name)-%(tier)\n",
        );
        let r = run(&d, "a.ini", &[], ExecPolicy::Refuse).unwrap();
        let kv = kv(&r);
        for pair in [
            ("socket", "x.sock"),
            ("name", "web"),
            ("tier", "2"),
            ("x", "web-2"),
        ] {
            assert!(kv.contains(&pair), "{pair:?} in {kv:?}");
        }
        for key in ["set-placeholder", "set-ph"] {
            write(&d, "b.ini", &format!("[uwsgi]\n{key} = socket=x.sock\n"));
            let e = run(&d, "b.ini", &[], ExecPolicy::Refuse).err().unwrap();
            assert_eq!(e.kind, ErrorKind::Syntax, "{e}");
            assert_eq!(
                e.to_string(),
                "b.ini:2: you cannot use socket as a placeholder, it is already an option"
            );
        }
    }

    #[test]
    fn the_superlinear_fuzz_input_is_refused_within_the_work_bound() {
        // fuzz/regressions/expand/expand-superlinear-1df8533c: a placeholder
        // whose value holds `%(appname)` again, used by four options; it cost
        // ~5 CPU s (2000 rebuilds and rescans of a value growing to 64 KiB each).
        let d = dir("superlinear");
        let input = include_bytes!("../../../fuzz/regressions/expand/expand-superlinear-1df8533c");
        std::fs::write(d.join("a.ini"), input).unwrap();
        assert_refused_within_bound(&d, "a.ini", "MiB of work");
    }

    #[test]
    fn a_legitimate_config_costs_a_few_kib() {
        let d = dir("cheap");
        write(
            &d,
            "a.ini",
            "[uwsgi]\nset-ph = app=site\nsocket = %d%(app).sock\nfor = a b c\nenv = K%(_)=%(app)\nendfor =\n",
        );
        let (r, work) = load(&d, "a.ini");
        r.unwrap();
        assert!(work < 4096, "work {work}");
    }

    #[test]
    fn an_ini_just_under_the_file_size_limit_is_within_the_work_bound() {
        let d = dir("biggest");
        let line = format!("k = {}\n", "v".repeat(1020));
        let lines = (crate::config::source::MAX_INI_SIZE as usize - 16) / line.len();
        write(&d, "a.ini", &format!("[uwsgi]\n{}", line.repeat(lines)));
        let (r, work) = load(&d, "a.ini");
        r.unwrap();
        assert!(work <= MAX_WORK, "work {work}");
    }

    #[test]
    fn includes_that_fan_out_are_bounded() {
        // Each file includes itself twice, 32 levels deep: 2^32 reads unbounded.
        let d = dir("fanout");
        write(&d, "a.ini", "[uwsgi]\nini = a.ini\nini = a.ini\nx = 1\n");
        let (r, work) = load(&d, "a.ini");
        let e = r.expect_err("refused");
        assert!(
            e.kind == ErrorKind::TooLarge || e.message.contains("nested too deep"),
            "{e}"
        );
        assert!(work <= MAX_WORK, "work {work}");
    }

    #[test]
    fn a_loop_that_repeats_a_billion_times_is_refused() {
        let d = dir("fortimes");
        write(
            &d,
            "a.ini",
            "[uwsgi]\nfor-times = 1000000000\nenv = N%(_)=x\nendfor =\n",
        );
        assert_refused_within_bound(&d, "a.ini", "options");
    }

    #[test]
    fn a_loop_body_is_sized_before_it_is_built() {
        // 64 Ki items times a body of 16 Ki `%(_)` would build 8 GiB of values.
        let d = dir("forbody");
        let items = vec!["0123456789abcdef"; 4096].join(" ");
        let body = "%(_)".repeat(16 * 1024);
        write(
            &d,
            "a.ini",
            &format!("[uwsgi]\nfor = {items}\nx = {body}\nendfor =\n"),
        );
        assert_refused_within_bound(&d, "a.ini", "MiB of work");
    }

    #[test]
    fn a_placeholder_concatenation_is_sized_before_it_is_built() {
        // `%(v v v …)` concatenates 16 Ki copies of a 60 KiB value: 1 GiB.
        let d = dir("concat");
        let big = "y".repeat(60 * 1024);
        let refs = vec!["v"; 16 * 1024].join(" ");
        write(
            &d,
            "a.ini",
            &format!("[uwsgi]\nset-ph = v={big}\nx = %({refs})\n"),
        );
        assert_refused_within_bound(&d, "a.ini", "grows past");
    }

    #[test]
    fn magic_variables_are_sized_before_they_are_substituted() {
        // 2 MiB of `%d` in a deep directory: each 2 bytes become the path.
        let mut d = dir("magic");
        for _ in 0..30 {
            d = d.join("a-fairly-long-directory-name-to-grow-the-path");
        }
        std::fs::create_dir_all(&d).unwrap();
        let body = "%d".repeat(1024 * 1024);
        write(&d, "a.ini", &format!("[uwsgi]\nx = {body}\n"));
        assert_refused_within_bound(&d, "a.ini", "MiB of work");
    }
}
