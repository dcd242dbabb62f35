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

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::ini;
use super::keys::{self, LogicKind};
use super::magic::{MagicTable, ProcessFacts};
use super::{envfile, ConfigError, Warning};

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
    pub raw: String,
}

impl Origin {
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: self.path.clone(),
            line: self.line,
            message: message.into(),
        }
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

/// Includes nested deeper than this are a loop (uWSGI would recurse until it dies).
const MAX_INCLUDE_DEPTH: usize = 32;
/// Substitutions per value before we call an expansion endless (`a = x%(a)`).
const MAX_SUBSTITUTIONS: usize = 10_000;
/// The longest value an expansion may produce: beyond any real option (uWSGI's
/// own buffers stop at 64 KiB for most of them), and small enough that a value
/// growing by itself is refused in well under a second.
const MAX_VALUE_LEN: usize = 64 * 1024;

pub struct Expander<'a> {
    pub opts: Vec<Opt>,
    pub warnings: Vec<Warning>,
    /// The inis read, in order (for the reload watcher).
    pub inis_read: Vec<PathBuf>,
    /// Env files successfully read by `for-readline`, in order, absolute.
    pub env_files_read: Vec<PathBuf>,
    logic: Option<Logic>,
    logic_running: bool,
    readline_failure_reported: bool,
    strict: bool,
    last_file: Option<String>,
    magic: MagicTable,
    facts: ProcessFacts,
    environment: &'a [(OsString, OsString)],
    depth: usize,
    checked_env_files: HashSet<PathBuf>,
}

impl<'a> Expander<'a> {
    pub fn new(facts: ProcessFacts, environment: &'a [(OsString, OsString)]) -> Expander<'a> {
        Expander {
            opts: Vec::new(),
            warnings: Vec::new(),
            inis_read: Vec::new(),
            env_files_read: Vec::new(),
            logic: None,
            logic_running: false,
            readline_failure_reported: false,
            strict: false,
            last_file: None,
            magic: MagicTable::new(&facts),
            facts,
            environment,
            depth: 0,
            checked_env_files: HashSet::new(),
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
                return Err(self.opts[idx].origin.error(format!(
                    "you cannot use {key} as a placeholder, it is already an option"
                )));
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
            return Err(self.opts[idx]
                .origin
                .error(format!("[strict-mode] unknown config directive: {key}")));
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
                return Err(origin.error(format!(
                    "recursive logic in options is not supported (option = {key})"
                )));
            }
            self.readline_failure_reported = false;
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
                    Err(origin.error(format!(
                        "include = {value}: only .ini files can be included"
                    )))
                }
            }
            "xml" | "xmlconfig" | "yaml" | "yml" | "json" | "js" | "config" | "ini-paste"
            | "ini-paste-logged" | "inject-before" | "inject-after" => Err(origin.error(format!(
                "{key} = {value}: only ini configuration files are supported"
            ))),
            "strict" => {
                self.strict = keys::flag_value(value);
                Ok(())
            }
            "set" | "set-placeholder" | "set-ph" => {
                let Some((k, v)) = value.split_once('=') else {
                    return Err(origin.error("invalid placeholder/--set value"));
                };
                self.add_option(k.to_string(), v.to_string(), origin.clone(), key != "set")
            }
            _ => Ok(()),
        }
    }

    /// Reads one ini (`file`, `file:section` or `:section`) and adds its lines.
    fn load_ini(&mut self, given: &str, from: &Origin) -> Result<(), ConfigError> {
        if self.depth >= MAX_INCLUDE_DEPTH {
            return Err(from.error(format!("ini = {given}: includes nested too deep (a loop?)")));
        }
        let (file_part, section) = match given.rfind(':') {
            Some(i) => (
                &given[..i],
                if i + 1 < given.len() {
                    &given[i + 1..]
                } else {
                    "uwsgi"
                },
            ),
            None => (given, "uwsgi"),
        };
        let file = if file_part.is_empty() {
            match &self.last_file {
                Some(f) => f.clone(),
                None => return Err(from.error(format!("ini = {given}: no ini was loaded before"))),
            }
        } else {
            file_part.to_string()
        };
        let path = self.cwd().join(&file);
        let missing = |e: std::io::Error| {
            if from.line.is_none() {
                ConfigError {
                    path: PathBuf::from(&file),
                    line: None,
                    message: format!("cannot read: {e}"),
                }
            } else {
                from.error(format!("ini = {given}: cannot read {file}: {e}"))
            }
        };
        let cwd = self.cwd().to_path_buf();
        self.magic.fill_for_file(given, &cwd).map_err(missing)?;
        let raw = std::fs::read(&path).map_err(missing)?;
        self.last_file = Some(file.clone());
        self.inis_read.push(absolute(&path));
        let display = PathBuf::from(&file);
        let body: &[u8] = if ini::has_bom(&raw) {
            self.warnings.push(Warning {
                path: display.clone(),
                line: Some(1),
                message:
                    "UTF-8 byte-order mark skipped (uWSGI would ignore the whole first section)"
                        .into(),
            });
            &raw[3..]
        } else {
            &raw
        };
        let text = self.magic.substitute(body);
        let parsed = ini::parse(&text, section);
        if !parsed.found {
            self.warnings.push(Warning {
                path: display.clone(),
                line: None,
                message: format!("section [{section}] not found"),
            });
        }
        self.depth += 1;
        let result = (|| {
            for entry in parsed.entries {
                let origin = Origin {
                    path: display.clone(),
                    line: Some(entry.line),
                    env_line: None,
                };
                self.add_option(entry.key, entry.value, origin, false)?;
            }
            Ok(())
        })();
        self.depth -= 1;
        result
    }

    /// Runs the open logic block on one captured option (`uwsgi_logic_opt_*`).
    fn run_logic(
        &mut self,
        logic: &Logic,
        key: &str,
        value: &str,
        origin: &Origin,
    ) -> Result<(), ConfigError> {
        let data = logic.arg.as_str();
        let emit = |this: &mut Self, with: &str, env_line: Option<EnvLine>| {
            let origin = Origin {
                env_line,
                ..origin.clone()
            };
            this.add_option(key.to_string(), value.replace("%(_)", with), origin, false)
        };
        let (name, expected) = match data.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (data, None),
        };
        match logic.kind {
            LogicKind::For => {
                for item in data.split(' ').filter(|s| !s.is_empty()) {
                    emit(self, item, None)?;
                }
            }
            LogicKind::ForTimes => {
                for i in 1..=keys::atoi(data).max(0) {
                    emit(self, &i.to_string(), None)?;
                }
            }
            LogicKind::ForGlob => {
                for item in glob(data, self.cwd()) {
                    emit(self, &item, None)?;
                }
            }
            LogicKind::ForReadline => {
                let path = self.cwd().join(data);
                if let Some(lines) = self.read_env_file_for_loop(&path, &logic.origin)? {
                    for (i, line) in lines.into_iter().enumerate() {
                        let env_line = EnvLine {
                            path: path.clone(),
                            line: i + 1,
                            raw: line.clone(),
                        };
                        emit(self, &line, Some(env_line))?;
                    }
                }
            }
            LogicKind::IfEnv | LogicKind::IfNotEnv => {
                let found = self.getenv(name);
                let matches = match (&found, expected) {
                    (Some(v), Some(e)) => v == e,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                if matches == (logic.kind == LogicKind::IfEnv) {
                    match found {
                        Some(v) => emit(self, &v, None)?,
                        None => self.add_option(key.into(), value.into(), origin.clone(), false)?,
                    }
                }
            }
            LogicKind::IfOpt | LogicKind::IfNotOpt => {
                let found = self.first_value(name);
                let matches = match (&found, expected) {
                    (Some(v), Some(e)) => v == e,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                if matches == (logic.kind == LogicKind::IfOpt) {
                    match found {
                        Some(v) => emit(self, &v, None)?,
                        None => self.add_option(key.into(), value.into(), origin.clone(), false)?,
                    }
                }
            }
            LogicKind::IfExists | LogicKind::IfNotExists => {
                let exists = readable(&self.cwd().join(data));
                if exists == (logic.kind == LogicKind::IfExists) {
                    emit(self, data, None)?;
                }
            }
            LogicKind::IfFile | LogicKind::IfNotFile => {
                let is = std::fs::metadata(self.cwd().join(data))
                    .map(|m| m.is_file())
                    .unwrap_or(false);
                if is == (logic.kind == LogicKind::IfFile) {
                    emit(self, data, None)?;
                }
            }
            LogicKind::IfDir | LogicKind::IfNotDir => {
                let is = std::fs::metadata(self.cwd().join(data))
                    .map(|m| m.is_dir())
                    .unwrap_or(false);
                if is == (logic.kind == LogicKind::IfDir) {
                    emit(self, data, None)?;
                }
            }
            LogicKind::IfPlugin | LogicKind::IfNotPlugin => {
                if keys::plugin_is_embedded(data) == (logic.kind == LogicKind::IfPlugin) {
                    emit(self, data, None)?;
                }
            }
            LogicKind::IfHostname | LogicKind::IfNotHostname => {
                if (self.facts.hostname == data) == (logic.kind == LogicKind::IfHostname) {
                    emit(self, data, None)?;
                }
            }
            // A load is never a uWSGI re-exec.
            LogicKind::IfReload => {}
            LogicKind::IfNotReload => {
                self.add_option(key.into(), value.into(), origin.clone(), false)?
            }
        }
        Ok(())
    }

    /// The lines `for-readline` iterates over, or `None` when the file cannot be
    /// opened (uWSGI logs it, drops the loop body and starts anyway: we do the
    /// same, but say so as a warning, once per loop).
    fn read_env_file_for_loop(
        &mut self,
        path: &Path,
        opener: &Origin,
    ) -> Result<Option<Vec<String>>, ConfigError> {
        match std::fs::read(path) {
            Ok(raw) => {
                let abs = absolute(path);
                if self.checked_env_files.insert(abs.clone()) {
                    self.warnings.extend(envfile::check_permissions(&abs)?);
                    self.env_files_read.push(abs);
                }
                Ok(Some(envfile::readline_items(&raw)))
            }
            Err(e) => {
                if !self.readline_failure_reported {
                    self.readline_failure_reported = true;
                    let raw = path
                        .strip_prefix(self.cwd())
                        .unwrap_or(path)
                        .display()
                        .to_string();
                    let mut message =
                        format!("for-readline: cannot open \"{raw}\": {e}; the loop body is skipped and no variable from it is set (as uWSGI does)");
                    if raw.contains("%(") || raw.contains("$(") || raw.contains("@(") {
                        message.push_str(
                            "; placeholders, $(VAR) and @(file) are not expanded in for-readline paths: use %d or an absolute path",
                        );
                    }
                    self.warnings.push(opener.warning(message));
                }
                Ok(None)
            }
        }
    }

    /// The `$()`, `@()` and `%()` passes over every non-immediate value.
    pub fn expand(&mut self) -> Result<(), ConfigError> {
        for symbol in [b'$', b'@', b'%'] {
            for i in 0..self.opts.len() {
                if !self.opts[i].configured {
                    self.expand_one(i, symbol)?;
                }
            }
        }
        Ok(())
    }

    fn hook(&self, symbol: u8, key: &str, origin: &Origin) -> Result<Option<String>, ConfigError> {
        match symbol {
            b'$' => Ok(self.getenv(key)),
            b'@' => {
                let path = self.cwd().join(key);
                let mut raw = std::fs::read(&path).map_err(|e| {
                    origin.error(format!("cannot read file \"{key}\" for @({key}): {e}"))
                })?;
                if matches!(raw.last(), Some(b'\n' | b'\r')) {
                    raw.pop();
                }
                if let Some(nul) = raw.iter().position(|&b| b == 0) {
                    raw.truncate(nul);
                }
                Ok(Some(String::from_utf8_lossy(&raw).into_owned()))
            }
            _ => Ok(self.placeholder(key)),
        }
    }

    /// `uwsgi_manage_placeholder`: a name, or the math/concat form when the
    /// reference holds a space (`%(processes cores + 2)`).
    fn placeholder(&self, key: &str) -> Option<String> {
        if !key.contains(' ') {
            return self.first_value(key);
        }
        #[derive(Clone, Copy, PartialEq)]
        enum Op {
            Concat,
            Sum,
            Sub,
            Mul,
            Div,
        }
        let mut state = Op::Concat;
        let mut current: Option<String> = None;
        for token in key.split(' ').filter(|t| !t.is_empty()) {
            let value = match token {
                "+" => {
                    state = Op::Sum;
                    continue;
                }
                "-" => {
                    state = Op::Sub;
                    continue;
                }
                "*" => {
                    state = Op::Mul;
                    continue;
                }
                "/" => {
                    state = Op::Div;
                    continue;
                }
                "++" | "--" => {
                    if let Some(c) = &current {
                        let n = strtoll(c);
                        let n = if token == "++" {
                            n.wrapping_add(1)
                        } else {
                            n.wrapping_sub(1)
                        };
                        current = Some(n.to_string());
                    }
                    state = Op::Concat;
                    continue;
                }
                t if is_a_number(t) => t.to_string(),
                t => self.first_value(t).unwrap_or_default(),
            };
            let a = current.as_deref().map_or(0, strtoll);
            let b = strtoll(&value);
            current = Some(match state {
                Op::Concat => format!("{}{}", current.as_deref().unwrap_or(""), value),
                Op::Sum => a.wrapping_add(b).to_string(),
                Op::Sub => a.wrapping_sub(b).to_string(),
                Op::Mul => a.wrapping_mul(b).to_string(),
                Op::Div => if b == 0 { 0 } else { a.wrapping_div(b) }.to_string(),
            });
            state = Op::Concat;
        }
        current
    }

    /// `uwsgi_apply_config_pass` on one option, byte for byte: after each
    /// substitution the scan restarts at index 1 (uWSGI sets `j = 0` before `j++`).
    fn expand_one(&mut self, i: usize, symbol: u8) -> Result<(), ConfigError> {
        let origin = self.opts[i].origin.clone();
        let mut substitutions = 0;
        let mut has: usize = 0;
        let mut depth: usize = 0;
        let mut key_start: usize = 0;
        let mut j: usize = 0;
        loop {
            let value = self.opts[i].value.as_bytes();
            if j >= value.len() {
                break;
            }
            let c = value[j];
            if c == symbol {
                has = 1;
            } else if c == b'(' && has == 1 {
                has = 2;
                depth = 0;
                key_start = j + 1;
            } else if has > 1 {
                if c == b'(' {
                    has += 1;
                    depth += 1;
                } else if c == b')' {
                    if depth > 0 {
                        has += 1;
                        depth -= 1;
                        j += 1;
                        continue;
                    }
                    if has <= 2 {
                        has = 0;
                        j += 1;
                        continue;
                    }
                    let value = self.opts[i].value.clone();
                    let key_len = has - 2;
                    let key = &value[key_start..key_start + key_len];
                    has = 0;
                    let Some(replacement) = self.hook(symbol, key, &origin)? else {
                        j += 1;
                        continue;
                    };
                    substitutions += 1;
                    if substitutions > MAX_SUBSTITUTIONS {
                        return Err(origin.error(format!(
                            "{}: the expansion of {} never ends (a value that refers to itself?)",
                            self.opts[i].key, symbol as char
                        )));
                    }
                    // A value that refers to itself through its own first
                    // definition doubles at each pass: bound the size, not only
                    // the count, or a typo eats the host's memory (on a reload,
                    // the master's).
                    let grown = value.len() - key_len - 3 + replacement.len();
                    if grown > MAX_VALUE_LEN {
                        return Err(origin.error(format!(
                            "{}: the expansion of {} grows past {} bytes (a value that refers to itself?)",
                            self.opts[i].key,
                            symbol as char,
                            MAX_VALUE_LEN
                        )));
                    }
                    let new = format!(
                        "{}{}{}",
                        &value[..key_start - 2],
                        replacement,
                        &value[key_start + key_len + 1..]
                    );
                    self.opts[i].value = new;
                    j = 1;
                    continue;
                } else {
                    has += 1;
                }
            } else {
                has = 0;
            }
            j += 1;
        }
        Ok(())
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `access(path, R_OK)`, what uWSGI's `if-exists` asks.
fn readable(path: &Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::R_OK).is_ok()
}

/// `is_a_number`: every byte a digit (the empty string counts, as in uWSGI).
fn is_a_number(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

/// C `strtoll(s, NULL, 10)`.
fn strtoll(s: &str) -> i64 {
    keys::atoi(s)
}

/// `glob(pattern, GLOB_MARK | GLOB_NOCHECK)`, relative patterns against `cwd`.
fn glob(pattern: &str, cwd: &Path) -> Vec<String> {
    let (full, prefix) = if pattern.starts_with('/') {
        (pattern.to_string(), None)
    } else {
        let prefix = format!("{}/", cwd.display());
        (format!("{prefix}{pattern}"), Some(prefix))
    };
    let Ok(c_pattern) = std::ffi::CString::new(full) else {
        return vec![pattern.to_string()];
    };
    let mut results = Vec::new();
    // SAFETY: `glob_t` is plain data that glob() fills in; zeroed is its documented
    // initial state. The pattern is a valid NUL-terminated string, and globfree
    // releases what glob allocated exactly once.
    unsafe {
        let mut g: libc::glob_t = std::mem::zeroed();
        let rc = libc::glob(
            c_pattern.as_ptr(),
            libc::GLOB_MARK | libc::GLOB_NOCHECK,
            None,
            &mut g,
        );
        if rc == 0 {
            for k in 0..g.gl_pathc {
                let p = *g.gl_pathv.add(k);
                if !p.is_null() {
                    let s = std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned();
                    results.push(match &prefix {
                        Some(pre) => s
                            .strip_prefix(pre.as_str())
                            .map(str::to_string)
                            .unwrap_or(s),
                        None => s,
                    });
                }
            }
        }
        libc::globfree(&mut g);
    }
    results
}
