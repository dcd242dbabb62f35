//! The emperor's own configuration: from `start --emperor DIR|GLOB`, or from an
//! ini whose `[uwsgi]` has `emperor =` (as `uwsgi --ini emperor.ini` runs it).
//!
//! An emperor ini is read with the same dialect as a vassal's (includes,
//! placeholders, logic), then every key is classed by [`class_of`]: honoured,
//! accepted as an equivalent no-op, or refused with `path:line` and what the
//! site would lose. Keys that are not uWSGI options are placeholders, as in
//! uWSGI. The emperor runs no app, so app keys (`socket`, `module`, …) in an
//! emperor ini are refused rather than ignored.

use std::path::{Path, PathBuf};

use crate::config::classes::{self, KeyClass};
use crate::config::{self, ConfigError, ErrorKind, LoadOptions, VassalExtras, Warning};

/// One `emperor =` source: a directory (every `*.ini` in it) or a glob, whose
/// wildcards may be in directories too (`/srv/*/uwsgi.d/*.ini`), as uWSGI's
/// glob monitor runs glob(3) over the whole pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitor {
    /// Absolute: the part of the path before the first wildcard.
    pub dir: PathBuf,
    /// The rest, `/`-separated, its last part the file name; `None` for a
    /// directory monitor (`*.ini`).
    pub pattern: Option<String>,
}

/// What a monitor matches now: every directory the pattern walks through
/// (watched, so that a new vassal directory or file is seen), and the files in
/// the last of them whose names match (any extension; hidden ones left out).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expansion {
    pub dirs: Vec<PathBuf>,
    pub files: Vec<PathBuf>,
}

impl Monitor {
    /// The pattern's directory parts and its file-name part.
    fn parts(&self) -> (Vec<&str>, Option<&str>) {
        let Some(p) = &self.pattern else {
            return (Vec::new(), None);
        };
        let mut parts: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
        let leaf = parts.pop();
        (parts, leaf)
    }

    /// Walks the pattern as glob(3) does: wildcards in a part match entry
    /// names, a leading `.` only when the part starts with one.
    pub fn expand(&self) -> Expansion {
        let (dir_parts, leaf) = self.parts();
        let mut level = vec![self.dir.clone()];
        let mut dirs = level.clone();
        for part in dir_parts {
            let mut next = Vec::new();
            for d in &level {
                if !is_glob(part) {
                    let c = d.join(part);
                    if c.is_dir() {
                        next.push(c);
                    }
                    continue;
                }
                for name in entry_names(d) {
                    if part_matches(part, &name) && d.join(&name).is_dir() {
                        next.push(d.join(&name));
                    }
                }
            }
            next.sort();
            dirs.extend(next.iter().cloned());
            level = next;
        }
        let mut files = Vec::new();
        for d in &level {
            for name in entry_names(d) {
                let wanted = match leaf {
                    None => !name.starts_with('.'),
                    Some(p) => part_matches(p, &name) && !name.starts_with('.'),
                };
                // metadata() follows symlinks: a symlinked vassal is a vassal.
                if wanted && d.join(&name).metadata().is_ok_and(|m| m.is_file()) {
                    files.push(d.join(&name));
                }
            }
        }
        files.sort();
        Expansion { dirs, files }
    }

    /// Whether `path` is one of the directories or files the pattern walks
    /// through (it may not exist any more): the watcher's events that matter.
    pub fn may_lead_to(&self, path: &Path) -> bool {
        self.relative_match(path, true)
    }

    /// Whether `path` is a file this monitor matches by name (any extension).
    pub fn covers(&self, path: &Path) -> bool {
        self.relative_match(path, false)
    }

    fn relative_match(&self, path: &Path, prefix: bool) -> bool {
        let Ok(rel) = path.strip_prefix(&self.dir) else {
            return false;
        };
        let names: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let (mut parts, leaf) = self.parts();
        parts.push(leaf.unwrap_or("*"));
        if names.is_empty() || names.len() > parts.len() || (!prefix && names.len() != parts.len())
        {
            return false;
        }
        names.iter().zip(&parts).all(|(n, p)| part_matches(p, n))
    }

    pub fn describe(&self) -> String {
        match &self.pattern {
            None => self.dir.display().to_string(),
            Some(p) => self.dir.join(p).display().to_string(),
        }
    }
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// glob(3) without GLOB_PERIOD: a wildcard does not match a leading `.`.
fn part_matches(part: &str, name: &str) -> bool {
    (!name.starts_with('.') || part.starts_with('.'))
        && glob_match(part.as_bytes(), name.as_bytes())
}

/// The names in `dir` (none when it cannot be read: gone, or not ours).
fn entry_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect()
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmperorConfig {
    /// The emperor ini, when there is one.
    pub ini: Option<PathBuf>,
    pub monitors: Vec<Monitor>,
    /// `emperor-pidfile` (or `pidfile`): locked for the emperor's life; `stop`,
    /// `status` and `reload` find the emperor through it and `<pidfile>.ctl`.
    pub pidfile: Option<PathBuf>,
    pub logto: Option<PathBuf>,
    /// `daemonize = FILE`: detach, log to FILE.
    pub daemonize: Option<PathBuf>,
    /// `vassal-set` and `vassals-include`/`vassals-inherit`.
    pub vassal: VassalExtras,
    /// `emperor-tyrant`: each vassal runs as the owner of its file.
    pub tyrant: bool,
    /// `emperor-tyrant-nofollow`: the owner of a symlink itself, not its target.
    pub tyrant_nofollow: bool,
    /// `emperor-stats`: uWSGI's emperor stats JSON on a unix socket or loopback.
    pub stats: Option<String>,
    /// `emperor-subreaper`: orphans of the vassals' apps are re-parented to the
    /// emperor, which reaps them (always on as PID 1, in a container).
    pub subreaper: bool,
    /// `env = NAME=value`: added to every vassal's environment (uWSGI sets it
    /// in the emperor, whose environment the vassals inherit).
    pub env: Vec<String>,
    /// `uid`/`gid`: the emperor drops to these after opening its files.
    pub uid: Option<String>,
    pub gid: Option<String>,
}

/// How the emperor treats a key found in an emperor ini.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Honoured,
    /// Nothing to do here: what it asks for is always true (or it only tunes a
    /// mechanism amy-emperor does not have).
    Equivalent(&'static str),
    /// Ignored with a warning: harmless to lose.
    Tuning(&'static str),
    /// Refused: the reason is what the site would lose.
    Unsupported(&'static str),
}

/// The emperor keys amy-emperor honours (uWSGI names, aliases included).
pub const HONOURED: &[&str] = &[
    "emperor",
    "emperor-pidfile",
    "pidfile",
    "logto",
    "daemonize",
    "vassals-include",
    "vassals-inherit",
    "vassal-set",
    "vassals-set",
    "emperor-tyrant",
    "emperor-tyrant-nofollow",
    "emperor-stats",
    "emperor-stats-server",
    "emperor-subreaper",
    "uid",
    "gid",
    "env",
];

/// Keys accepted in an emperor ini as equivalent no-ops, with why.
pub const EQUIVALENT: &[(&str, &str)] = &[
    ("master", "the emperor always supervises its vassals"),
    (
        "die-on-term",
        "SIGTERM always stops the emperor and its vassals gracefully",
    ),
    (
        "vacuum",
        "the emperor always removes its pidfile and control socket at exit",
    ),
    (
        "emperor-graceful-shutdown",
        "vassals are always stopped gracefully",
    ),
    (
        "emperor-freq",
        "vassal files are watched with inotify, not scanned every N seconds",
    ),
    (
        "emperor-throttle",
        "a dying vassal is restarted with amy-emperor's back-off (1 s doubling to 60 s)",
    ),
    (
        "emperor-max-throttle",
        "a dying vassal is restarted with amy-emperor's back-off (1 s doubling to 60 s)",
    ),
    (
        "emperor-no-blacklist",
        "a vassal with a bad config waits for its file to change instead of a blacklist",
    ),
    ("emperor-procname", "process titles are fixed"),
    ("auto-procname", "process titles are fixed"),
    ("procname-prefix", "process titles are fixed"),
    ("procname-prefix-spaced", "process titles are fixed"),
    ("procname-master", "process titles are fixed"),
    ("thunder-lock", "the emperor accepts no requests"),
    ("enable-threads", "the emperor runs no Python"),
    (
        "no-orphans",
        "vassals stop when the emperor dies (PR_SET_PDEATHSIG)",
    ),
    ("memory-report", "the emperor runs no workers"),
    ("plugins", "nothing is loaded as a plugin"),
    ("plugin", "nothing is loaded as a plugin"),
    ("need-plugin", "nothing is loaded as a plugin"),
    ("need-plugins", "nothing is loaded as a plugin"),
    ("strict", "read by the ini parser"),
    ("show-config", "see `amy-emperor check --show-config`"),
    ("ini", "read by the ini parser"),
    ("include", "read by the ini parser"),
    ("set", "read by the ini parser"),
    ("set-placeholder", "read by the ini parser"),
    ("set-ph", "read by the ini parser"),
];

/// Emperor keys real sites use that amy-emperor refuses, with what they do.
pub const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "emperor-nofollow",
        "a vassal symlink would be reloaded on a change of the link itself",
    ),
    (
        "emperor-tyrant-initgroups",
        "vassals would get the supplementary groups of their file's owner",
    ),
    (
        "emperor-on-demand-directory",
        "vassals would start on their first request (socket activation)",
    ),
    (
        "emperor-on-demand-dir",
        "vassals would start on their first request (socket activation)",
    ),
    (
        "emperor-on-demand-extension",
        "vassals would start on their first request (socket activation)",
    ),
    (
        "emperor-on-demand-ext",
        "vassals would start on their first request (socket activation)",
    ),
    (
        "emperor-on-demand-exec",
        "vassals would start on their first request (socket activation)",
    ),
    (
        "emperor-broodlord",
        "zerg vassals would be spawned under load",
    ),
    (
        "emperor-command-socket",
        "vassals could be started and stopped through a command socket",
    ),
    (
        "emperor-wait-for-command",
        "vassals would wait for a spawn command",
    ),
    (
        "emperor-trigger-socket",
        "vassals could be triggered through a socket",
    ),
    ("emperor-wrapper", "vassals would run under another binary"),
    (
        "emperor-required-heartbeat",
        "vassals that stop sending heartbeats would be killed",
    ),
    (
        "emperor-curse-tolerance",
        "the delay before a cursed vassal is killed would change",
    ),
    (
        "emperor-extra-extension",
        "vassal files with other extensions would be run",
    ),
    (
        "emperor-extra-ext",
        "vassal files with other extensions would be run",
    ),
    ("emperor-use-clone", "vassals would run in new namespaces"),
    ("emperor-cap", "vassals would get Linux capabilities"),
    ("vassals-cap", "vassals would get Linux capabilities"),
    ("vassal-cap", "vassals would get Linux capabilities"),
    (
        "cap",
        "the emperor would keep Linux capabilities after dropping privileges",
    ),
    (
        "vassals-include-before",
        "a template would be read before each vassal's own lines",
    ),
    (
        "vassals-inherit-before",
        "a template would be read before each vassal's own lines",
    ),
    (
        "vassals-start-hook",
        "a command would run before each vassal starts",
    ),
    (
        "vassals-stop-hook",
        "a command would run after each vassal dies",
    ),
];

/// How `key = value` (as written) is treated in an emperor ini. `None` for a
/// key that is not a uWSGI option (a placeholder, as in uWSGI).
pub fn class_of(key: &str, value: &str) -> Option<Class> {
    if HONOURED.contains(&key) {
        return Some(Class::Honoured);
    }
    let entry = classes::classify(key, value)?;
    Some(match emperor_class_of(key) {
        Some(c) => c,
        // The emperor runs no app: an app key here would be silently lost.
        None if entry.class == KeyClass::Honoured => {
            Class::Unsupported("the emperor would also run an app itself; make that app a vassal")
        }
        None => match entry.class {
            KeyClass::Honoured | KeyClass::Unsupported => Class::Unsupported(entry.reason),
            KeyClass::Equivalent => Class::Equivalent(entry.reason),
            KeyClass::Tuning => Class::Tuning(entry.reason),
        },
    })
}

/// The emperor's own keys (and the dialect's), independent of the instance table.
fn emperor_class_of(key: &str) -> Option<Class> {
    if let Some((_, why)) = EQUIVALENT.iter().find(|(k, _)| *k == key) {
        return Some(Class::Equivalent(why));
    }
    if let Some((_, loss)) = UNSUPPORTED.iter().find(|(k, _)| *k == key) {
        return Some(Class::Unsupported(loss));
    }
    if config::keys::logic_kind(key).is_some() || config::keys::is_logic_end(key) {
        return Some(Class::Equivalent("read by the ini parser"));
    }
    if key.starts_with("emperor") || key.starts_with("vassal") || key.starts_with("imperial") {
        return Some(Class::Unsupported(
            "an emperor feature amy-emperor does not have",
        ));
    }
    None
}

/// `start --emperor DIR|GLOB`.
pub fn from_arg(arg: &Path, cwd: &Path) -> Result<EmperorConfig, String> {
    let monitor = parse_monitor(&arg.to_string_lossy(), cwd)?;
    Ok(EmperorConfig {
        monitors: vec![monitor],
        ..EmperorConfig::default()
    })
}

/// An emperor ini (one with `emperor =`).
pub fn from_ini(
    ini: &Path,
    options: &LoadOptions,
) -> Result<(EmperorConfig, Vec<Warning>), ConfigError> {
    let (opts, mut warnings) = config::resolve(ini, options)?;
    let mut c = EmperorConfig {
        ini: Some(options.cwd.join(ini)),
        ..EmperorConfig::default()
    };
    let mut emperor_pidfile = None;
    let mut pidfile = None;
    for o in &opts {
        let err = |message: String| {
            ConfigError::new(ErrorKind::InvalidValue, o.path.clone(), o.line, message)
        };
        match class_of(&o.key, &o.value) {
            // A placeholder, or a dialect key the parser consumed.
            None | Some(Class::Equivalent(_)) => continue,
            Some(Class::Tuning(what)) => {
                warnings.push(Warning {
                    path: o.path.clone(),
                    line: o.line,
                    message: format!("\"{}\" is ignored: {what}", o.key),
                });
                continue;
            }
            Some(Class::Unsupported(loss)) if !options.allow_unsupported.contains(&o.key) => {
                return Err(ConfigError::new(
                    ErrorKind::Unsupported,
                    o.path.clone(),
                    o.line,
                    format!("\"{}\" is not supported in an emperor ini: {loss}", o.key),
                ));
            }
            Some(Class::Unsupported(loss)) => {
                warnings.push(Warning {
                    path: o.path.clone(),
                    line: o.line,
                    message: format!("\"{}\" is not supported, allowed: {loss}", o.key),
                });
                continue;
            }
            Some(Class::Honoured) => {}
        }
        let path = |v: &str| options.cwd.join(v);
        match o.key.as_str() {
            "emperor" => c
                .monitors
                .push(parse_monitor(&o.value, &options.cwd).map_err(err)?),
            "emperor-pidfile" => emperor_pidfile = Some(path(&o.value)),
            "pidfile" => pidfile = Some(path(&o.value)),
            "logto" => c.logto = Some(path(&o.value)),
            "daemonize" => c.daemonize = Some(path(&o.value)),
            "vassals-include" | "vassals-inherit" => {
                if !o.value.ends_with(".ini") {
                    return Err(err(format!(
                        "{} = {}: only ini templates are supported",
                        o.key, o.value
                    )));
                }
                c.vassal.include.push(path(&o.value));
            }
            "vassal-set" | "vassals-set" => {
                if !o.value.contains('=') {
                    return Err(err(format!("{} = {}: expected KEY=VALUE", o.key, o.value)));
                }
                c.vassal.set.push(o.value.clone());
            }
            "emperor-tyrant" => c.tyrant = config::keys::flag_value(&o.value),
            "emperor-tyrant-nofollow" => c.tyrant_nofollow = config::keys::flag_value(&o.value),
            "emperor-stats" | "emperor-stats-server" => {
                let addr = if o.value.starts_with('/') || o.value.contains(':') {
                    o.value.clone()
                } else {
                    path(&o.value).to_string_lossy().into_owned()
                };
                crate::stats::parse_address(&addr).map_err(|e| err(e.to_string()))?;
                c.stats = Some(addr);
            }
            "emperor-subreaper" => c.subreaper = config::keys::flag_value(&o.value),
            "env" => match o.value.split_once('=') {
                Some((k, _)) if !k.is_empty() => c.env.push(o.value.clone()),
                _ => return Err(err("env: expected NAME=value".into())),
            },
            "uid" => c.uid = Some(o.value.clone()),
            "gid" => c.gid = Some(o.value.clone()),
            other => unreachable!("{other} is in HONOURED but not handled"),
        }
    }
    c.pidfile = emperor_pidfile.or(pidfile);
    if c.monitors.is_empty() {
        return Err(ConfigError::new(
            ErrorKind::Missing,
            ini.to_path_buf(),
            None,
            "no `emperor =` directory or glob",
        ));
    }
    Ok((c, warnings))
}

/// `emperor = VALUE`: `dir://`, `glob://` or a plain path; other uWSGI monitors
/// (`zmq://`, `pg://`, `amqp://`, …) are refused.
fn parse_monitor(value: &str, cwd: &Path) -> Result<Monitor, String> {
    let (scheme, rest) = match value.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, value),
    };
    if let Some(s) = scheme {
        if s != "dir" && s != "glob" {
            return Err(format!(
                "emperor = {value}: the {s}:// monitor is not supported (vassals from {s} would not run); use a directory or a glob"
            ));
        }
    }
    if rest.is_empty() {
        return Err("emperor = : empty directory".into());
    }
    let path = cwd.join(rest);
    if is_glob(&path.to_string_lossy()) || scheme == Some("glob") {
        // The directory before the first wildcard, and the rest as the pattern.
        let mut dir = PathBuf::new();
        let mut pattern: Vec<String> = Vec::new();
        for c in path.components() {
            let text = c.as_os_str().to_string_lossy().into_owned();
            if pattern.is_empty() && !is_glob(&text) {
                dir.push(c);
            } else {
                pattern.push(text);
            }
        }
        // glob://DIR/NAME without a wildcard: NAME is the pattern.
        if pattern.is_empty() {
            if let Some(name) = dir.file_name().map(|n| n.to_string_lossy().into_owned()) {
                dir.pop();
                pattern.push(name);
            }
        }
        if pattern.is_empty() {
            return Err(format!("emperor = {value}: no file name to match"));
        }
        if !dir.is_dir() {
            return Err(format!(
                "emperor = {value}: {} is not a directory",
                dir.display()
            ));
        }
        return Ok(Monitor {
            dir,
            pattern: Some(pattern.join("/")),
        });
    }
    if !path.is_dir() {
        return Err(format!("emperor = {value}: not a directory"));
    }
    Ok(Monitor {
        dir: path,
        pattern: None,
    })
}

/// `fnmatch(3)` without flags: `*`, `?`, `[...]` (with `!`/`^` and ranges).
pub fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| glob_match(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && glob_match(rest, &name[1..]),
        Some((b'[', rest)) => {
            let Some((&c, tail)) = name.split_first() else {
                return false;
            };
            let (negate, body) = match rest.first() {
                Some(b'!' | b'^') => (true, &rest[1..]),
                _ => (false, rest),
            };
            // `]` first in the set is a literal.
            let Some(close) = body.iter().skip(1).position(|&b| b == b']').map(|i| i + 1) else {
                return c == b'[' && glob_match(rest, tail);
            };
            let set = &body[..close];
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == b'-' {
                    hit |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit != negate && glob_match(&body[close + 1..], tail)
        }
        Some((&p, rest)) => name.first() == Some(&p) && glob_match(rest, &name[1..]),
    }
}

/// The environment a vassal starts with: as uWSGI's emperor does
/// (core/emperor.c), each `UWSGI_VASSAL_NAME=value` becomes `UWSGI_NAME=value`
/// (replacing one already there), so the vassal takes it as the option `name`
/// while the emperor does not.
pub fn vassal_environment(
    environment: Vec<(std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut out: Vec<(std::ffi::OsString, std::ffi::OsString)> = Vec::new();
    let mut renamed = Vec::new();
    for (k, v) in environment {
        match k.as_bytes().strip_prefix(b"UWSGI_VASSAL_") {
            Some(rest) if !rest.is_empty() => {
                let name = std::ffi::OsString::from_vec([b"UWSGI_", rest].concat());
                renamed.push((name, v));
            }
            _ => out.push((k, v)),
        }
    }
    for (k, v) in renamed {
        out.retain(|(name, _)| *name != k);
        out.push((k, v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_fnmatch() {
        for (p, n, want) in [
            ("*.ini", "amy.ini", true),
            ("*.ini", "amy.ini~", false),
            ("amy_*.ini", "amy_prod.ini", true),
            ("amy_*.ini", "other.ini", false),
            ("v?.ini", "v1.ini", true),
            ("v[0-9].ini", "v7.ini", true),
            ("v[!0-9].ini", "v7.ini", false),
            ("v[!0-9].ini", "vx.ini", true),
            ("[]x].ini", "].ini", true),
        ] {
            assert_eq!(glob_match(p.as_bytes(), n.as_bytes()), want, "{p} {n}");
        }
    }

    #[test]
    fn monitors_are_directories_or_file_name_globs() {
        let tmp = crate::testutil::TempDir::new("emperor-monitor");
        let dir = tmp.0.clone();
        let m = parse_monitor(&dir.to_string_lossy(), Path::new("/")).unwrap();
        assert_eq!(
            (m.dir.as_path(), m.pattern.as_deref()),
            (dir.as_path(), None)
        );
        let g = parse_monitor(&format!("{}/amy_*.ini", dir.display()), Path::new("/")).unwrap();
        assert_eq!(g.pattern.as_deref(), Some("amy_*.ini"));
        assert!(g.covers(&dir.join("amy_prod.ini")));
        assert!(!g.covers(&dir.join("other.ini")) && !g.covers(&dir.join(".amy_x.ini")));
        let d = parse_monitor(&format!("dir://{}", dir.display()), Path::new("/")).unwrap();
        assert_eq!(d.dir, dir);
        // Wildcards in directories, relative to the current directory.
        let n = parse_monitor("./vassals/*/uwsgi.d/*.ini", &dir).unwrap_err();
        assert!(n.contains("not a directory"), "{n}");
        std::fs::create_dir_all(dir.join("vassals")).unwrap();
        let n = parse_monitor("./vassals/*/uwsgi.d/*.ini", &dir).unwrap();
        assert_eq!(
            (n.dir.as_path(), n.pattern.as_deref()),
            (dir.join("vassals").as_path(), Some("*/uwsgi.d/*.ini"))
        );
        assert!(n.covers(&dir.join("vassals/a/uwsgi.d/x.ini")));
        assert!(!n.covers(&dir.join("vassals/a/x.ini")));
        assert!(!n.covers(&dir.join("vassals/.a/uwsgi.d/x.ini")));
        assert!(
            n.may_lead_to(&dir.join("vassals/a")) && n.may_lead_to(&dir.join("vassals/a/uwsgi.d"))
        );
        assert!(!n.may_lead_to(&dir.join("vassals/a/amy.log")));
        for bad in [
            "zmq://tcp://127.0.0.1:5000",
            "/nonexistent-dir-x",
            "/nonexistent-dir-x/*/a.ini",
        ] {
            assert!(parse_monitor(bad, Path::new("/")).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_glob_with_directory_wildcards_expands_as_glob_3_does() {
        let tmp = crate::testutil::TempDir::new("emperor-expand");
        let base = tmp.0.clone();
        for f in [
            "a/uwsgi.d/one.ini",
            "a/uwsgi.d/two.yml",
            "a/uwsgi.d/.hidden.ini",
            "b/uwsgi.d/three.ini",
            "c/other/four.ini",
            ".d/uwsgi.d/five.ini",
        ] {
            std::fs::create_dir_all(base.join(f).parent().unwrap()).unwrap();
            std::fs::write(base.join(f), "").unwrap();
        }
        std::fs::create_dir_all(base.join("a/uwsgi.d/sub.ini")).unwrap();
        let m = Monitor {
            dir: base.clone(),
            pattern: Some("*/uwsgi.d/*".into()),
        };
        let e = m.expand();
        let rel = |v: &[PathBuf]| -> Vec<String> {
            v.iter()
                .map(|p| {
                    p.strip_prefix(&base)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect()
        };
        assert_eq!(
            rel(&e.files),
            [
                "a/uwsgi.d/one.ini",
                "a/uwsgi.d/two.yml",
                "b/uwsgi.d/three.ini"
            ]
        );
        // Every level is watched: a new app directory, a new uwsgi.d, a new file.
        assert_eq!(rel(&e.dirs), ["", "a", "b", "c", "a/uwsgi.d", "b/uwsgi.d"]);
    }

    #[test]
    fn every_emperor_key_of_uwsgi_has_a_class() {
        // The refusals must name a loss; honoured keys must all be uWSGI options.
        // emperor-subreaper is in uWSGI's source but not in 2.0's option list.
        for k in HONOURED.iter().chain(EQUIVALENT.iter().map(|(k, _)| k)) {
            assert!(
                config::keys::is_uwsgi_option(k) || *k == "emperor-subreaper",
                "{k}"
            );
        }
        assert_eq!(class_of("emperor", "/x"), Some(Class::Honoured));
        assert!(matches!(
            class_of("emperor-freq", "3"),
            Some(Class::Equivalent(_))
        ));
        assert!(matches!(
            class_of("emperor-broodlord", "2"),
            Some(Class::Unsupported(_))
        ));
        assert!(matches!(
            class_of("emperor-wrapper-fallback", "x"),
            Some(Class::Unsupported(_))
        ));
        assert!(
            matches!(class_of("socket", "/x.sock"), Some(Class::Unsupported(l)) if l.contains("vassal"))
        );
        assert_eq!(class_of("not-an-option", "1"), None);
    }

    #[test]
    fn uwsgi_vassal_variables_reach_vassals_as_uwsgi_variables() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
            pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
        };
        let got = vassal_environment(env(&[
            ("PATH", "/bin"),
            ("UWSGI_PROCESSES", "2"),
            ("UWSGI_VASSAL_PROCESSES", "8"),
            ("UWSGI_VASSAL_HARAKIRI", "30"),
            ("UWSGI_VASSAL_", "x"),
        ]));
        assert_eq!(
            got,
            env(&[
                ("PATH", "/bin"),
                ("UWSGI_VASSAL_", "x"),
                ("UWSGI_PROCESSES", "8"),
                ("UWSGI_HARAKIRI", "30"),
            ])
        );
    }
}
