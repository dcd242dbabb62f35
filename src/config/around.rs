//! The keys for what runs around the app: attached daemons, cron jobs, hooks,
//! `import`, `master-fifo`. Parsed the way uWSGI parses them (`core/daemons.c`,
//! `core/cron.c`, `core/hooks.c`), but strictly: a value uWSGI would `atoi` to 0
//! or an action we cannot honour is `path:line: reason`, never a silent no-op.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::expand::Opt;
use super::keys;
use super::{ConfigError, ErrorKind};

/// Everything the master and the workers run beside the app.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Around {
    pub daemons: Vec<DaemonSpec>,
    pub crons: Vec<CronSpec>,
    /// `reload-mercy`: how long a daemon has to stop before SIGKILL (uWSGI: 3 s unset).
    pub daemon_mercy: Option<Duration>,
    pub hooks: Hooks,
    /// `import`/`pyimport`/`shared-import`/`shared-pyimport`: modules every worker imports
    /// before the app.
    pub imports: Vec<String>,
    /// `master-fifo` paths; the first is the active one (uWSGI's slot 0).
    pub master_fifo: Vec<PathBuf>,
    /// `cron-harakiri`, for jobs without their own `harakiri=`.
    pub cron_harakiri: Option<Duration>,
}

/// One `attach-daemon`, `attach-daemon2`, `smart-attach-daemon(2)`, `attach-control-daemon`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DaemonSpec {
    /// Run with `/bin/sh -c`, as uWSGI does.
    pub command: String,
    /// Smart daemons are tracked by their pidfile and survive a master restart.
    pub pidfile: Option<PathBuf>,
    /// The master writes the pidfile (`smart-attach-daemon2`, `daemonize=1`).
    pub daemonize: bool,
    /// Pidfile checks to wait for a smart daemon to write its pidfile.
    pub freq: u32,
    /// When it dies, the whole instance stops (`attach-control-daemon`, `control=1`).
    pub control: bool,
    /// Touching one of these restarts the daemon (`touch=`).
    pub touch: Vec<PathBuf>,
    pub stop_signal: i32,
    /// Sent instead of `stop_signal` when the instance reloads; unset: restart only
    /// if the command line changed.
    pub reload_signal: Option<i32>,
    pub uid: Option<String>,
    pub gid: Option<String>,
    pub chdir: Option<PathBuf>,
    /// Keep stdin (default: /dev/null).
    pub stdin: bool,
    /// Cap on the respawn throttle, seconds.
    pub max_throttle: Option<u32>,
    /// The key as written and its line, for messages.
    pub key: String,
    pub line: usize,
}

impl DaemonSpec {
    /// What decides whether a reload keeps a running daemon: everything but where it
    /// was written.
    pub fn same_process(&self, other: &DaemonSpec) -> bool {
        let strip = |d: &DaemonSpec| DaemonSpec {
            key: String::new(),
            line: 0,
            ..d.clone()
        };
        strip(self) == strip(other)
    }
}

/// One cron field: uWSGI's `-1` (any) and `-N` (every N) or an exact value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CronField {
    Any,
    Every(u32),
    At(u32),
}

impl CronField {
    fn from_int(n: i64) -> CronField {
        match n {
            -1 => CronField::Any,
            n if n < 0 => CronField::Every(n.unsigned_abs() as u32),
            n => CronField::At(n as u32),
        }
    }
}

/// One `cron`, `unique-cron` or `cron2` job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSpec {
    pub minute: CronField,
    pub hour: CronField,
    pub day: CronField,
    pub month: CronField,
    pub week: CronField,
    pub command: String,
    /// Never two runs at once: a due run is skipped while one is running.
    pub unique: bool,
    /// Kill a run that lasts longer (`cron-harakiri`, `harakiri=`); `None` = never.
    pub harakiri: Option<Duration>,
    /// `harakiri=` was given (`0` included), so `cron-harakiri` does not apply.
    pub own_harakiri: bool,
    pub line: usize,
}

/// Where in the lifecycle a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookPhase {
    /// In the master right after the config is read, before the log is opened
    /// or anything is bound (`hook-asap`, `exec-asap`: `mkdir -p` of a log dir).
    Asap,
    /// In the master before privileges are dropped (`hook-as-root`, `exec-as-root`).
    AsRoot,
    /// In the master after privileges are dropped (`hook-as-user`, `exec-as-user`).
    AsUser,
    /// In the master once it starts supervising (`hook-master-start`).
    MasterStart,
    /// Where the app is loaded, before it (`hook-pre-app`, `exec-pre-app`).
    PreApp,
    /// Where the app is loaded, after it (`hook-post-app`, `exec-post-app`).
    PostApp,
    /// In each worker before it accepts (`hook-accepting`, `exec-accepting`…).
    Accepting,
}

impl HookPhase {
    /// Phases the Python side runs (the rest run in the master).
    pub fn in_worker(self) -> bool {
        matches!(
            self,
            HookPhase::PreApp | HookPhase::PostApp | HookPhase::Accepting
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HookPhase::Asap => "asap",
            HookPhase::AsRoot => "as root",
            HookPhase::AsUser => "as user",
            HookPhase::MasterStart => "master-start",
            HookPhase::PreApp => "pre app",
            HookPhase::PostApp => "post app",
            HookPhase::Accepting => "accepting",
        }
    }
}

/// A hook action, validated when the config is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookAction {
    /// `exec:` (a non-zero exit fails the phase) and `safeexec:` (it does not).
    Exec {
        command: String,
        fatal: bool,
    },
    /// `print:`, `log:`, and `call:uwsgi_log …`.
    Log(String),
    Mkdir(PathBuf),
    Unlink(PathBuf),
    /// `create:`/`creat:` (empty file), `write:`/`append:` `path text`.
    Write {
        path: PathBuf,
        text: String,
        append: bool,
    },
    Chdir(PathBuf),
    /// `putenv:NAME=value` in a worker phase.
    Putenv(String),
    /// `unix_signal:15 gracefully_kill_them_all` and friends that ask for what the
    /// master already does.
    Equivalent(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub phase: HookPhase,
    pub action: HookAction,
    /// The value as written, for the log (uWSGI logs `running "exec:…" (pre app)`).
    pub text: String,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hooks(pub Vec<Hook>);

impl Hooks {
    pub fn phase(&self, phase: HookPhase) -> impl Iterator<Item = &Hook> {
        self.0.iter().filter(move |h| h.phase == phase)
    }
}

/// Whether `key` (canonical) is one this module reads.
pub fn is_around_key(key: &str) -> bool {
    matches!(
        key,
        "attach-daemon"
            | "attach-daemon2"
            | "smart-attach-daemon"
            | "smart-attach-daemon2"
            | "attach-control-daemon"
            | "cron"
            | "unique-cron"
            | "cron2"
            | "cron-harakiri"
            | "reload-mercy"
            | "import"
            | "pyimport"
            | "py-import"
            | "python-import"
            | "shared-import"
            | "shared-pyimport"
            | "shared-py-import"
            | "shared-python-import"
            | "master-fifo"
    ) || hook_phase(key).is_some()
}

/// The phase of a `hook-*`/`exec-*` key, and whether it is the `exec-` shorthand.
fn hook_phase(key: &str) -> Option<(HookPhase, bool)> {
    let (rest, exec) = if let Some(r) = key.strip_prefix("hook-") {
        (r, false)
    } else if let Some(r) = key.strip_prefix("exec-") {
        (r, true)
    } else {
        return None;
    };
    let phase = match rest {
        "asap" => HookPhase::Asap,
        "as-root" => HookPhase::AsRoot,
        "as-user" => HookPhase::AsUser,
        "master-start" => HookPhase::MasterStart,
        "pre-app" => HookPhase::PreApp,
        "post-app" => HookPhase::PostApp,
        // `accepting1` (first worker only) and the `-once` forms stay unsupported.
        "accepting" => HookPhase::Accepting,
        _ => return None,
    };
    // `exec-master-start` and `exec-accepting` are not uWSGI options.
    if exec && matches!(phase, HookPhase::MasterStart | HookPhase::Accepting) {
        return None;
    }
    Some((phase, exec))
}

fn positive(opt: &Opt, what: &str, value: &str) -> Result<i64, ConfigError> {
    strict_int(value).filter(|n| *n >= 0).ok_or_else(|| {
        opt.origin.error(
            ErrorKind::InvalidValue,
            format!("{}: {what} = {value:?}: not a number >= 0", opt.key),
        )
    })
}

/// A whole integer, sign allowed, nothing else.
fn strict_int(value: &str) -> Option<i64> {
    let v = value.trim();
    let digits = v.strip_prefix('-').unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

fn resolve(base: &Path, value: &str) -> PathBuf {
    let p = Path::new(value);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Reads one option of this module into `around`. `base` is where relative paths
/// resolve (`chdir`, as uWSGI runs these after changing directory).
pub fn apply(around: &mut Around, key: &str, opt: &Opt, base: &Path) -> Result<(), ConfigError> {
    let v = opt.value.as_str();
    let line = opt.origin.line.unwrap_or(0);
    match key {
        "attach-daemon" | "attach-control-daemon" => {
            if v.trim().is_empty() {
                return Err(opt.origin.error(
                    ErrorKind::InvalidValue,
                    format!("{}: empty command", opt.key),
                ));
            }
            let mut d = daemon(v.to_string(), &opt.key, line);
            d.control = key == "attach-control-daemon";
            around.daemons.push(d);
        }
        "smart-attach-daemon" | "smart-attach-daemon2" => {
            let Some((pidfile, command)) = v.split_once(' ') else {
                return Err(opt.origin.error(
                    ErrorKind::InvalidValue,
                    format!("invalid {} syntax: must be \"pidfile command\"", opt.key),
                ));
            };
            let (pidfile, freq) = match pidfile.split_once(',') {
                Some((p, f)) => (p, positive(opt, "freq", f)? as u32),
                None => (pidfile, 10),
            };
            let mut d = daemon(command.trim().to_string(), &opt.key, line);
            d.pidfile = Some(resolve(base, pidfile));
            d.freq = freq.max(1);
            d.daemonize = key == "smart-attach-daemon2";
            around.daemons.push(d);
        }
        "attach-daemon2" => around.daemons.push(daemon2(opt, base)?),
        "cron" | "unique-cron" => {
            let mut c = cron(opt)?;
            c.unique = key == "unique-cron";
            around.crons.push(c);
        }
        "cron2" => around.crons.push(cron2(opt)?),
        "cron-harakiri" => {
            let n = positive(opt, "seconds", v)?;
            around.cron_harakiri = (n > 0).then(|| Duration::from_secs(n as u64));
        }
        "reload-mercy" => {
            around.daemon_mercy = Some(Duration::from_secs(positive(opt, "seconds", v)? as u64))
        }
        "import"
        | "pyimport"
        | "py-import"
        | "python-import"
        | "shared-import"
        | "shared-pyimport"
        | "shared-py-import"
        | "shared-python-import" => {
            if v.trim().is_empty() {
                return Err(opt.origin.error(
                    ErrorKind::InvalidValue,
                    format!("{}: empty module name", opt.key),
                ));
            }
            around.imports.push(v.trim().to_string());
        }
        "master-fifo" => around.master_fifo.push(resolve(base, v)),
        _ => {
            let (phase, exec) = hook_phase(key).expect("is_around_key checked");
            let text = if exec {
                format!("exec:{v}")
            } else {
                v.to_string()
            };
            let action = hook_action(opt, phase, &text, base)?;
            around.hooks.0.push(Hook {
                phase,
                action,
                text,
                line,
            });
        }
    }
    Ok(())
}

/// Completes what depends on several keys; `build` calls it after the last option.
/// uWSGI applies `cron-harakiri` to every job without its own `harakiri=`, wherever
/// the key is written.
pub fn finish(around: &mut Around) {
    let default = around.cron_harakiri;
    for c in &mut around.crons {
        if !c.own_harakiri {
            c.harakiri = default;
        }
    }
}

fn daemon(command: String, key: &str, line: usize) -> DaemonSpec {
    DaemonSpec {
        command,
        pidfile: None,
        daemonize: false,
        freq: 10,
        control: false,
        touch: Vec::new(),
        stop_signal: libc::SIGTERM,
        reload_signal: None,
        uid: None,
        gid: None,
        chdir: None,
        stdin: false,
        max_throttle: None,
        key: key.to_string(),
        line,
    }
}

/// uWSGI's `uwsgi_kvlist_parse`: `k=v,k=v`, `\,` escapes a comma.
fn kvlist(value: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut items = Vec::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&',') => {
                cur.push(',');
                chars.next();
            }
            ',' => items.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    items.push(cur);
    for item in items {
        if item.is_empty() {
            continue;
        }
        let (k, v) = item.split_once('=')?;
        out.push((k.to_string(), v.to_string()));
    }
    Some(out)
}

fn signal_number(opt: &Opt, what: &str, v: &str) -> Result<i32, ConfigError> {
    let n = positive(opt, what, v)?;
    if !(1..=64).contains(&n) {
        return Err(opt.origin.error(
            ErrorKind::InvalidValue,
            format!("{}: {what} = {v}: not a signal number", opt.key),
        ));
    }
    Ok(n as i32)
}

fn daemon2(opt: &Opt, base: &Path) -> Result<DaemonSpec, ConfigError> {
    let pairs = kvlist(&opt.value).ok_or_else(|| {
        opt.origin.error(
            ErrorKind::InvalidValue,
            format!("invalid --{} keyval syntax", opt.key),
        )
    })?;
    let mut d = daemon(String::new(), &opt.key, opt.origin.line.unwrap_or(0));
    let mut command = None;
    for (k, v) in pairs {
        match k.as_str() {
            "command" | "cmd" | "exec" => command = Some(v),
            "freq" => d.freq = positive(opt, "freq", &v)?.max(1) as u32,
            "pidfile" => d.pidfile = Some(resolve(base, &v)),
            "control" => d.control = keys::flag_value(&v),
            "daemonize" | "daemon" => d.daemonize = keys::flag_value(&v),
            "touch" => d.touch.extend(
                v.split(';')
                    .filter(|s| !s.is_empty())
                    .map(|p| resolve(base, p)),
            ),
            "stopsignal" | "stop_signal" => d.stop_signal = signal_number(opt, &k, &v)?,
            "reloadsignal" | "reload_signal" => d.reload_signal = Some(signal_number(opt, &k, &v)?),
            "stdin" => d.stdin = keys::flag_value(&v),
            "uid" => d.uid = Some(v),
            "gid" => d.gid = Some(v),
            "chdir" => d.chdir = Some(resolve(base, &v)),
            "max_throttle" => d.max_throttle = Some(positive(opt, "max_throttle", &v)? as u32),
            "legion" | "ns_pid" | "notifypid" => {
                return Err(opt.origin.error(
                    ErrorKind::Unsupported,
                    format!(
                        "{}: \"{k}\" is not supported: the daemon would run without it",
                        opt.key
                    ),
                ))
            }
            _ => {
                return Err(opt.origin.error(
                    ErrorKind::InvalidValue,
                    format!("{}: unknown key \"{k}\" (uWSGI refuses it too)", opt.key),
                ))
            }
        }
    }
    d.command = command.filter(|c| !c.trim().is_empty()).ok_or_else(|| {
        opt.origin.error(
            ErrorKind::InvalidValue,
            format!("--{}: you need to specify a 'command' key", opt.key),
        )
    })?;
    if d.daemonize && d.pidfile.is_none() {
        return Err(opt.origin.error(
            ErrorKind::InvalidValue,
            format!("{}: daemonize needs a pidfile", opt.key),
        ));
    }
    Ok(d)
}

fn field(opt: &Opt, name: &str, v: &str) -> Result<CronField, ConfigError> {
    let n = strict_int(v).ok_or_else(|| {
        opt.origin.error(
            ErrorKind::InvalidValue,
            format!("{}: {name} = {v:?}: not a number", opt.key),
        )
    })?;
    let max = match name {
        "minute" => 59,
        "hour" => 23,
        "day" => 31,
        "month" => 12,
        _ => 7,
    };
    if n > max || n < -max - 1 || n == 0 && (name == "day" || name == "month") {
        return Err(opt.origin.error(
            ErrorKind::InvalidValue,
            format!("{}: {name} = {v}: out of range", opt.key),
        ));
    }
    Ok(CronField::from_int(n))
}

fn cron(opt: &Opt) -> Result<CronSpec, ConfigError> {
    let mut rest = opt.value.trim_start();
    let mut f = Vec::new();
    for name in ["minute", "hour", "day", "month", "week"] {
        let end = rest.find(char::is_whitespace).ok_or_else(|| {
            opt.origin.error(
                ErrorKind::InvalidValue,
                format!("{}: invalid cron syntax: 5 fields and a command", opt.key),
            )
        })?;
        f.push(field(opt, name, &rest[..end])?);
        rest = rest[end..].trim_start();
    }
    if rest.is_empty() {
        return Err(opt
            .origin
            .error(ErrorKind::InvalidValue, format!("{}: no command", opt.key)));
    }
    Ok(CronSpec {
        minute: f[0],
        hour: f[1],
        day: f[2],
        month: f[3],
        week: f[4],
        command: rest.to_string(),
        unique: false,
        harakiri: None,
        own_harakiri: false,
        line: opt.origin.line.unwrap_or(0),
    })
}

fn cron2(opt: &Opt) -> Result<CronSpec, ConfigError> {
    let v = opt.value.trim();
    let (kv, command) = match v.split_once(' ') {
        Some((head, cmd)) if head.contains('=') => (head, cmd.trim()),
        _ if v.split_whitespace().next().is_some_and(|w| w.contains('=')) => {
            return Err(opt.origin.error(
                ErrorKind::InvalidValue,
                format!("{}: unable to parse cron definition: no command", opt.key),
            ))
        }
        _ => ("", v),
    };
    if command.is_empty() {
        return Err(opt
            .origin
            .error(ErrorKind::InvalidValue, format!("{}: no command", opt.key)));
    }
    let mut c = CronSpec {
        minute: CronField::Any,
        hour: CronField::Any,
        day: CronField::Any,
        month: CronField::Any,
        week: CronField::Any,
        command: command.to_string(),
        unique: false,
        harakiri: None,
        own_harakiri: false,
        line: opt.origin.line.unwrap_or(0),
    };
    let pairs = kvlist(kv).ok_or_else(|| {
        opt.origin.error(
            ErrorKind::InvalidValue,
            format!("{}: unable to parse cron definition", opt.key),
        )
    })?;
    for (k, val) in pairs {
        match k.as_str() {
            "minute" => c.minute = field(opt, &k, &val)?,
            "hour" => c.hour = field(opt, &k, &val)?,
            "day" => c.day = field(opt, &k, &val)?,
            "month" => c.month = field(opt, &k, &val)?,
            "week" => c.week = field(opt, &k, &val)?,
            "unique" => c.unique = positive(opt, "unique", &val)? != 0,
            "harakiri" => {
                let n = positive(opt, "harakiri", &val)?;
                // uWSGI: harakiri=0 disables it for this job even with cron-harakiri.
                c.harakiri = (n > 0).then(|| Duration::from_secs(n as u64));
                c.own_harakiri = true;
            }
            "legion" => {
                return Err(opt.origin.error(
                    ErrorKind::Unsupported,
                    format!(
                        "{}: \"legion\" is not supported: the job would run on every node",
                        opt.key
                    ),
                ))
            }
            _ => {
                return Err(opt.origin.error(
                    ErrorKind::InvalidValue,
                    format!("{}: unknown key \"{k}\" (uWSGI refuses it too)", opt.key),
                ))
            }
        }
    }
    Ok(c)
}

/// C functions `unix_signal:`/`call:` name that ask for what the master already does.
fn equivalent_call(phase: HookPhase, arg: &str) -> Option<String> {
    let (num, func) = arg.trim().split_once(' ')?;
    let num = strict_int(num)?;
    let func = func.trim();
    // SIGTERM → graceful stop is our default; SIGHUP → graceful reload is too.
    let same = matches!(
        (num, func),
        (15, "gracefully_kill_them_all")
            | (1, "grace_them_all")
            | (2, "kill_them_all")
            | (3, "kill_them_all")
    );
    (same && phase == HookPhase::MasterStart).then(|| format!("signal {num} already does {func}"))
}

fn hook_action(
    opt: &Opt,
    phase: HookPhase,
    text: &str,
    base: &Path,
) -> Result<HookAction, ConfigError> {
    let Some((name, arg)) = text.split_once(':') else {
        return Err(opt.origin.error(
            ErrorKind::InvalidValue,
            format!("{}: invalid hook syntax, must be action:args", opt.key),
        ));
    };
    let name = name.strip_prefix('!').unwrap_or(name);
    let unsupported = |what: &str| {
        opt.origin.error(
            ErrorKind::Unsupported,
            format!(
                "{} = {text}: \"{name}\" is not supported {what}: the site would lose this hook",
                opt.key
            ),
        )
    };
    let path_and_text = |arg: &str| match arg.split_once(' ') {
        Some((p, t)) => (resolve(base, p), t.to_string()),
        None => (resolve(base, arg), String::new()),
    };
    Ok(match name {
        "exec" => HookAction::Exec {
            command: arg.to_string(),
            fatal: true,
        },
        "safeexec" => HookAction::Exec {
            command: arg.to_string(),
            fatal: false,
        },
        "print" | "log" => HookAction::Log(arg.to_string()),
        "mkdir" => HookAction::Mkdir(resolve(base, arg)),
        "unlink" => HookAction::Unlink(resolve(base, arg)),
        "create" | "creat" => HookAction::Write {
            path: resolve(base, arg),
            text: String::new(),
            append: false,
        },
        "write" | "append" => {
            let (path, text) = path_and_text(arg);
            HookAction::Write {
                path,
                text,
                append: name == "append",
            }
        }
        "cd" | "chdir" if phase.in_worker() => HookAction::Chdir(resolve(base, arg)),
        "putenv" if phase.in_worker() => {
            if !arg.contains('=') {
                return Err(opt.origin.error(
                    ErrorKind::InvalidValue,
                    format!("{}: putenv needs NAME=value", opt.key),
                ));
            }
            HookAction::Putenv(arg.to_string())
        }
        "call" if arg.starts_with("uwsgi_log ") => {
            HookAction::Log(arg["uwsgi_log ".len()..].to_string())
        }
        "unix_signal" => match equivalent_call(phase, arg) {
            Some(why) => HookAction::Equivalent(why),
            None => return Err(unsupported("for this signal and function")),
        },
        "cd" | "chdir" | "putenv" => {
            return Err(unsupported("in a master hook (it would change the master)"))
        }
        "call" | "callret" | "callint" | "callintret" => {
            return Err(unsupported("(it calls a C symbol inside uWSGI)"))
        }
        _ => return Err(unsupported("")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::expand::Origin;

    fn opt(key: &str, value: &str) -> Opt {
        Opt {
            key: key.into(),
            value: value.into(),
            configured: true,
            origin: Origin {
                path: "/x.ini".into(),
                line: Some(3),
                env_line: None,
            },
        }
    }

    fn parse(key: &str, value: &str) -> Result<Around, ConfigError> {
        let mut a = Around::default();
        apply(&mut a, key, &opt(key, value), Path::new("/app"))?;
        finish(&mut a);
        Ok(a)
    }

    #[test]
    fn attach_daemon_takes_the_whole_line_as_a_shell_command() {
        let a = parse("attach-daemon", "celery -A proj worker -l info").unwrap();
        assert_eq!(a.daemons[0].command, "celery -A proj worker -l info");
        assert_eq!(a.daemons[0].stop_signal, libc::SIGTERM);
        assert!(a.daemons[0].pidfile.is_none());
    }

    #[test]
    fn smart_daemon_reads_pidfile_and_freq() {
        let a = parse(
            "smart-attach-daemon",
            "run/x.pid,3 memcached -d -P run/x.pid",
        )
        .unwrap();
        let d = &a.daemons[0];
        assert_eq!(d.pidfile.as_deref(), Some(Path::new("/app/run/x.pid")));
        assert_eq!(d.freq, 3);
        assert!(!d.daemonize);
        assert!(parse("smart-attach-daemon", "nocommand").is_err());
        assert!(parse("smart-attach-daemon2", "/p x").unwrap().daemons[0].daemonize);
    }

    #[test]
    fn attach_daemon2_keys() {
        let a = parse(
            "attach-daemon2",
            "cmd=sleep 100,stopsignal=2,reloadsignal=1,touch=/a;/b,control=1,freq=4",
        )
        .unwrap();
        let d = &a.daemons[0];
        assert_eq!(d.command, "sleep 100");
        assert_eq!(d.stop_signal, 2);
        assert_eq!(d.reload_signal, Some(1));
        assert_eq!(d.touch, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert!(d.control);
        assert_eq!(d.freq, 4);
        assert!(parse("attach-daemon2", "freq=3").is_err(), "no command");
        assert!(parse("attach-daemon2", "cmd=x,bogus=1").is_err());
        assert!(parse("attach-daemon2", "cmd=x,stopsignal=TERM").is_err());
        assert!(parse("attach-daemon2", "cmd=x,legion=l").is_err());
        assert!(
            parse("attach-daemon2", "cmd=x,daemonize=1").is_err(),
            "daemonize without pidfile"
        );
    }

    #[test]
    fn cron_reads_five_fields_and_keeps_the_command_whole() {
        let a = parse("cron", "-5 -1 -1 -1 -1 /usr/bin/backup --all  now").unwrap();
        let c = &a.crons[0];
        assert_eq!(c.minute, CronField::Every(5));
        assert_eq!(c.hour, CronField::Any);
        assert_eq!(c.command, "/usr/bin/backup --all  now");
        assert!(!c.unique);
        assert!(parse("unique-cron", "0 3 -1 -1 -1 x").unwrap().crons[0].unique);
        for bad in [
            "0 3 -1 -1 x",
            "60 3 -1 -1 -1 x",
            "0 3 -1 -1 -1",
            "a 3 -1 -1 -1 x",
            "0 3 0 -1 -1 x",
        ] {
            assert!(parse("cron", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cron2_key_values_then_command() {
        let a = parse("cron2", "minute=-15,unique=1,harakiri=30 python backup.py").unwrap();
        let c = &a.crons[0];
        assert_eq!(c.minute, CronField::Every(15));
        assert_eq!(c.hour, CronField::Any);
        assert!(c.unique);
        assert_eq!(c.harakiri, Some(Duration::from_secs(30)));
        assert_eq!(c.command, "python backup.py");
        let bare = parse("cron2", "echo every minute").unwrap();
        assert_eq!(bare.crons[0].command, "echo every minute");
        assert_eq!(bare.crons[0].minute, CronField::Any);
        assert!(parse("cron2", "minute=5").is_err(), "no command");
        assert!(parse("cron2", "minute=5,second=3 x").is_err());
    }

    #[test]
    fn cron_harakiri_applies_to_jobs_without_their_own() {
        let mut a = Around::default();
        let base = Path::new("/");
        apply(&mut a, "cron2", &opt("cron2", "harakiri=0 a"), base).unwrap();
        apply(&mut a, "cron", &opt("cron", "-1 -1 -1 -1 -1 b"), base).unwrap();
        apply(&mut a, "cron-harakiri", &opt("cron-harakiri", "10"), base).unwrap();
        apply(&mut a, "cron2", &opt("cron2", "c"), base).unwrap();
        finish(&mut a);
        let ten = Some(Duration::from_secs(10));
        // harakiri=0 means "never" for that job, as in uWSGI.
        assert_eq!(
            a.crons.iter().map(|c| c.harakiri).collect::<Vec<_>>(),
            vec![None, ten, ten]
        );
    }

    #[test]
    fn hooks_accept_what_real_inis_use_and_refuse_the_rest() {
        let a = parse("hook-pre-app", "exec:./manage.py migrate").unwrap();
        assert_eq!(
            a.hooks.0[0].action,
            HookAction::Exec {
                command: "./manage.py migrate".into(),
                fatal: true
            }
        );
        assert_eq!(a.hooks.0[0].phase, HookPhase::PreApp);
        let e = parse("exec-pre-app", "true").unwrap();
        assert_eq!(e.hooks.0[0].text, "exec:true");
        let m = parse(
            "hook-master-start",
            "unix_signal:15 gracefully_kill_them_all",
        )
        .unwrap();
        assert!(matches!(m.hooks.0[0].action, HookAction::Equivalent(_)));
        assert!(parse(
            "hook-master-start",
            "unix_signal:10 gracefully_kill_them_all"
        )
        .is_err());
        assert!(parse("hook-post-app", "call:my_symbol").is_err());
        assert_eq!(
            parse("hook-post-app", "call:uwsgi_log loaded")
                .unwrap()
                .hooks
                .0[0]
                .action,
            HookAction::Log("loaded".into())
        );
        assert!(
            parse("hook-as-user", "putenv:A=1").is_err(),
            "would mutate the master"
        );
        assert!(parse("hook-pre-app", "putenv:A=1").is_ok());
        assert!(parse("hook-pre-app", "mount:proc none /proc").is_err());
        assert!(parse("hook-pre-app", "noaction").is_err());
        assert!(!is_around_key("exec-master-start"));
    }
}
