//! The serving keys: static files, mounts, routes, post-buffering, add-header,
//! socket-timeout. Parsed and checked here, carried out by the Python worker
//! (`python/amy_worker/{static,mounts,routes,buffering,dispatch}.py`), which
//! receives [`Serving`] as the `"serving"` object of its JSON config.
//!
//! Syntax follows uWSGI 2.0 (`core/uwsgi.c` option handlers, `core/routing.c`
//! `uwsgi_opt_add_route`, the `router_*` plugins). A route action or condition
//! that is not implemented is an error naming the line: a site must never lose
//! an authentication or redirect rule silently. Regular expressions are
//! compiled by the worker (Python `re`, close to PCRE for the forms inis use);
//! one that does not compile fails the worker's start with the traceback.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::expand::{Opt, Origin};
use super::{ConfigError, ErrorKind, Warning};

/// Everything the serving keys configure; all empty/off by default, and then
/// the worker's per-request path is exactly the plain app call.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Serving {
    /// `static-map` (`append` false) and `static-map2` (`append` true), in order.
    pub static_maps: Vec<StaticMap>,
    /// `check-static`/`static-check` directories, in order.
    pub check_static: Vec<PathBuf>,
    /// `check-static-docroot`: look in nginx's `DOCUMENT_ROOT` too.
    pub check_static_docroot: bool,
    pub static_index: Vec<String>,
    pub static_skip_ext: Vec<String>,
    pub static_safe: Vec<PathBuf>,
    /// `static-expires*` rules in uWSGI's order of evaluation.
    pub static_expires: Vec<Expires>,
    pub static_gzip_all: bool,
    /// `static-gzip-dir`/`static-gzip-prefix`.
    pub static_gzip_dirs: Vec<String>,
    /// `static-gzip-ext`/`static-gzip-suffix`.
    pub static_gzip_exts: Vec<String>,
    /// `static-gzip` regexps (matched against the file name).
    pub static_gzip_regexps: Vec<String>,
    /// `mount = /prefix=app`, in order.
    pub mounts: Vec<Mount>,
    pub manage_script_name: bool,
    /// `post-buffering`: bodies are read before the app is called; bodies of at
    /// least this many bytes go to a temporary file. 0 = off.
    pub post_buffering: u64,
    /// `socket-timeout` in seconds (uWSGI default 4; unset keeps the worker's 10 s).
    pub socket_timeout: Option<u64>,
    /// `add-header = Name: value`, as (name, value).
    pub add_headers: Vec<(String, String)>,
    pub routes: Vec<Route>,
    /// `gevent = N`: each worker serves up to N requests at once on greenlets
    /// (`python/amy_worker/gevent_loop.py`); 0 = off.
    pub gevent: u64,
    /// `gevent-monkey-patch` / `gevent-early-monkey-patch`: `patch_all()` before
    /// the app import (uWSGI patches after it for the first; see gevent_loop.py).
    pub gevent_monkey_patch: bool,
    pub gevent_early_monkey_patch: bool,
    /// Where `gevent` (or `loop = gevent`) was set, for the messages of `python_probe`.
    #[serde(skip)]
    pub gevent_origin: Option<Origin>,
    /// `async = N` as read (uWSGI's async cores; `gevent = N` sets it too), and
    /// where, so `python_probe` can refuse it without `loop = gevent`.
    #[serde(skip)]
    pub async_cores: Option<(u64, Origin)>,
    /// Each mounted file, with its line and value, for [`check_on_host`].
    #[serde(skip)]
    pub mount_files: Vec<(Origin, String, PathBuf)>,
    /// `loop = gevent` (or `gevent = N`) was read.
    #[serde(skip)]
    pub loop_gevent: bool,
    /// Each route regexp and where it was written: compiled by the app's Python
    /// at load ([`check_with_python`]), so `check` fails where the worker would.
    #[serde(skip)]
    pub regexps: Vec<(Origin, String)>,
}

impl Serving {
    /// Whether the worker needs its dispatcher (anything beyond add-header and timeouts).
    pub fn needs_dispatch(&self) -> bool {
        !(self.static_maps.is_empty()
            && self.check_static.is_empty()
            && !self.check_static_docroot
            && self.mounts.is_empty()
            && self.post_buffering == 0
            && self.routes.is_empty())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StaticMap {
    pub prefix: String,
    pub docroot: PathBuf,
    /// `static-map2`: the whole PATH_INFO is appended to the docroot.
    pub append: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Expires {
    /// `type`, `file`, `uri`, `path-info`.
    pub on: &'static str,
    /// From the file's mtime instead of now.
    pub mtime: bool,
    /// A MIME type for `type`, a regexp otherwise.
    pub pattern: String,
    pub seconds: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mount {
    pub mountpoint: String,
    /// A `.py`/`.wsgi` file (resolved against chdir) or `module:callable`.
    pub app: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// What is matched: `path_info`, `request_uri`, `query_string`, `http_host`,
    /// `remote_addr`, `user_agent`, `referer`, `remote_user`; or `if`, `if-not`,
    /// `run`, `label`.
    pub subject: &'static str,
    /// The regexp (subject routes), the condition text after `name:` (`if`), the
    /// label name (`label`); empty for `run`.
    pub pattern: String,
    /// The condition name for `if`/`if-not`.
    pub condition: String,
    pub action: String,
    pub arg: String,
    pub line: usize,
}

/// What the host must provide for the serving keys (as `site::check` does for
/// `wsgi-file`): a mounted file that is missing would leave its prefix unserved
/// (the worker could not load it).
pub fn check_on_host(s: &Serving) -> Result<(), ConfigError> {
    for (origin, value, file) in &s.mount_files {
        if !file.is_file() {
            return Err(origin.error(
                ErrorKind::Missing,
                format!("mount = {value}: {}: no such file", file.display()),
            ));
        }
    }
    Ok(())
}

/// `gevent = N` at most: the acceptor's slot pipe holds N tokens (a pipe holds 64 KiB).
const MAX_GEVENT: u64 = 50_000;

/// Route actions the worker implements (uWSGI names, aliases included).
const ACTIONS: &[&str] = &[
    "basicauth",
    "basicauth-next",
    "redirect",
    "redirect-302",
    "redirect-permanent",
    "redirect-301",
    "rewrite",
    "rewrite-last",
    "addheader",
    "break",
    "last",
    "continue",
    "return",
    "break-with-status",
    "goto",
    "log",
    "donotlog",
    "static",
];

/// `route-if` conditions the worker implements.
const CONDITIONS: &[&str] = &[
    "exists",
    "isfile",
    "isdir",
    "islink",
    "isexec",
    "equal",
    "isequal",
    "eq",
    "==",
    "startswith",
    "endswith",
    "regexp",
    "re",
    "contains",
    "contain",
    "empty",
    "ishigher",
    ">",
    "islower",
    "<",
    "ishigherequal",
    ">=",
    "islowerequal",
    "<=",
];

/// Whether `key` (canonical) is one of the keys this module parses.
pub fn handles(key: &str) -> bool {
    matches!(
        key,
        "static-map"
            | "static-map2"
            | "check-static"
            | "static-check"
            | "check-static-docroot"
            | "static-index"
            | "static-skip-ext"
            | "static-safe"
            | "static-expires-type"
            | "static-expires-type-mtime"
            | "static-expires"
            | "static-expires-mtime"
            | "static-expires-uri"
            | "static-expires-uri-mtime"
            | "static-expires-path-info"
            | "static-expires-path-info-mtime"
            | "static-gzip"
            | "static-gzip-all"
            | "static-gzip-dir"
            | "static-gzip-prefix"
            | "static-gzip-ext"
            | "static-gzip-suffix"
            | "mount"
            | "manage-script-name"
            | "post-buffering"
            | "socket-timeout"
            | "add-header"
            | "gevent"
            | "gevent-monkey-patch"
            | "gevent-early-monkey-patch"
            | "gevent-wait-for-hub"
            | "async"
            | "loop"
    ) || route_subject(key).is_some()
}

fn route_subject(key: &str) -> Option<&'static str> {
    Some(match key {
        "route" => "path_info",
        "route-host" => "http_host",
        "route-uri" => "request_uri",
        "route-qs" => "query_string",
        "route-remote-addr" => "remote_addr",
        "route-user-agent" => "user_agent",
        "route-remote-user" => "remote_user",
        "route-referer" => "referer",
        "route-if" => "if",
        "route-if-not" => "if-not",
        "route-run" => "run",
        "route-label" => "label",
        _ => return None,
    })
}

fn resolve(base: &Path, value: &str) -> PathBuf {
    let p = Path::new(value);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// A whole non-negative decimal number, or an error naming the key.
fn number(opt: &Opt) -> Result<u64, ConfigError> {
    let v = opt.value.trim();
    if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(opt.origin.error(
            ErrorKind::InvalidValue,
            format!(
                "invalid value for option \"{}\": {:?} is not a whole number",
                opt.key, opt.value
            ),
        ));
    }
    v.parse().map_err(|_| {
        opt.origin.error(
            ErrorKind::InvalidValue,
            format!("\"{}\": number out of range", opt.key),
        )
    })
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+.^_`|~-".contains(&b))
}

/// `Name: value` as uWSGI's `add-header` and `addheader` take it.
pub fn parse_header(text: &str) -> Option<(String, String)> {
    let (name, value) = text.split_once(':')?;
    let name = name.trim();
    if !is_token(name) || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return None;
    }
    Some((name.to_string(), value.trim().to_string()))
}

/// Applies one serving option (canonical `key`) to `s`. `app_base` is the final
/// chdir (or the start-up cwd): relative docroots resolve against it.
pub fn apply(
    s: &mut Serving,
    key: &str,
    opt: &Opt,
    app_base: &Path,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    let v = opt.value.as_str();
    let flag = super::keys::flag_value(v);
    let line = opt.origin.line.unwrap_or(0);
    match key {
        "static-map" | "static-map2" => {
            let (prefix, docroot) = v.split_once('=').ok_or_else(|| {
                opt.origin.error(
                    ErrorKind::InvalidValue,
                    format!(
                    "{key} = {v}: invalid document root in static map, syntax mountpoint=docroot"
                ),
                )
            })?;
            if docroot.is_empty() {
                return Err(opt.origin.error(
                    ErrorKind::InvalidValue,
                    format!("{key} = {v}: empty document root"),
                ));
            }
            let docroot = resolve(app_base, docroot);
            if !docroot.exists() {
                warnings.push(opt.origin.warning(format!(
                    "{key} = {v}: {} does not exist (yet): those URLs reach the app until it does",
                    docroot.display()
                )));
            }
            s.static_maps.push(StaticMap {
                prefix: prefix.to_string(),
                docroot,
                append: key == "static-map2",
            });
        }
        "check-static" | "static-check" => s.check_static.push(resolve(app_base, v)),
        "check-static-docroot" => s.check_static_docroot = flag,
        "static-index" => s.static_index.push(v.to_string()),
        "static-skip-ext" => s.static_skip_ext.push(v.to_string()),
        "static-safe" => s.static_safe.push(resolve(app_base, v)),
        "static-expires-type" | "static-expires-type-mtime" => {
            let (mime, secs) = v.split_once('=').ok_or_else(|| {
                opt.origin.error(
                    ErrorKind::InvalidValue,
                    format!("{key} = {v}: invalid dictionary syntax (type=seconds)"),
                )
            })?;
            s.static_expires.push(Expires {
                on: "type",
                mtime: key.ends_with("-mtime"),
                pattern: mime.to_string(),
                seconds: seconds(opt, secs)?,
            });
        }
        "static-expires"
        | "static-expires-mtime"
        | "static-expires-uri"
        | "static-expires-uri-mtime"
        | "static-expires-path-info"
        | "static-expires-path-info-mtime" => {
            let (re, secs) = v.split_once(' ').ok_or_else(|| {
                opt.origin.error(
                    ErrorKind::InvalidValue,
                    format!("{key} = {v}: invalid dictionary syntax (regexp seconds)"),
                )
            })?;
            let on = if key.starts_with("static-expires-uri") {
                "uri"
            } else if key.starts_with("static-expires-path-info") {
                "path-info"
            } else {
                "file"
            };
            s.static_expires.push(Expires {
                on,
                mtime: key.ends_with("-mtime"),
                pattern: re.to_string(),
                seconds: seconds(opt, secs)?,
            });
        }
        "static-gzip" => s.static_gzip_regexps.push(v.to_string()),
        "static-gzip-all" => s.static_gzip_all = flag,
        "static-gzip-dir" | "static-gzip-prefix" => s.static_gzip_dirs.push(v.to_string()),
        "static-gzip-ext" | "static-gzip-suffix" => s.static_gzip_exts.push(v.to_string()),
        "mount" => {
            let (mountpoint, app) = v.split_once('=').ok_or_else(|| {
                opt.origin.error(
                    ErrorKind::InvalidValue,
                    format!("mount = {v}: invalid mountpoint, syntax /prefix=app"),
                )
            })?;
            // uWSGI's python plugin mounts only these forms; anything else
            // would leave the prefix unserved.
            if !(app.contains(':') || app.ends_with(".py") || app.ends_with(".wsgi")) {
                return Err(opt.origin.error(
                    ErrorKind::InvalidValue,
                    format!("mount = {v}: the app must be a .py/.wsgi file or module:callable"),
                ));
            }
            let app = if app.ends_with(".py") || app.ends_with(".wsgi") {
                let file = resolve(app_base, app);
                // As `wsgi-file`, checked once every key is read (check_on_host).
                s.mount_files
                    .push((opt.origin.clone(), v.to_string(), file.clone()));
                file.display().to_string()
            } else {
                app.to_string()
            };
            let mountpoint = if mountpoint.is_empty() {
                "/"
            } else {
                mountpoint
            };
            if s.mounts.iter().any(|m| m.mountpoint == mountpoint) {
                return Err(opt.origin.error(
                    ErrorKind::InvalidValue,
                    format!("mount = {v}: mountpoint {mountpoint} is already configured"),
                ));
            }
            s.mounts.push(Mount {
                mountpoint: mountpoint.to_string(),
                app,
            });
        }
        "manage-script-name" => s.manage_script_name = flag,
        "post-buffering" => s.post_buffering = number(opt)?,
        "socket-timeout" => {
            let n = number(opt)?;
            s.socket_timeout = Some(n.clamp(1, 86400));
        }
        "add-header" => {
            let h = parse_header(v).ok_or_else(|| {
                opt.origin.error(
                    ErrorKind::InvalidValue,
                    format!("add-header = {v}: expected \"Name: value\""),
                )
            })?;
            s.add_headers.push(h);
        }
        "gevent" => {
            let n = number(opt)?;
            if !(1..=MAX_GEVENT).contains(&n) {
                return Err(opt.origin.error(
                    ErrorKind::OutOfRange,
                    format!(
                        "gevent = {v}: the number of greenlets per worker must be 1..={MAX_GEVENT}"
                    ),
                ));
            }
            // uwsgi_opt_setup_gevent: async cores, the gevent loop, and a
            // socket timeout of at least 30 s (a later socket-timeout wins).
            s.gevent = n;
            s.gevent_origin = Some(opt.origin.clone());
            s.async_cores = Some((n, opt.origin.clone()));
            s.loop_gevent = true;
            if s.socket_timeout.map_or(true, |t| t < 30) {
                s.socket_timeout = Some(30);
            }
        }
        // `loop = gevent` + `async = N` is the long form of `gevent = N`.
        "async" => {
            let n = number(opt)?;
            if !(1..=MAX_GEVENT).contains(&n) {
                return Err(opt.origin.error(
                    ErrorKind::OutOfRange,
                    format!("async = {v}: the number of async cores must be 1..={MAX_GEVENT}"),
                ));
            }
            s.async_cores = Some((n, opt.origin.clone()));
            if s.loop_gevent {
                s.gevent = n;
            }
        }
        "loop" => {
            if v != "gevent" {
                return Err(opt.origin.error(
                    ErrorKind::Unsupported,
                    format!("\"loop\" = {v} is not supported: only the gevent loop is (each worker would serve `threads` requests at a time)"),
                ));
            }
            s.loop_gevent = true;
            s.gevent_origin = Some(opt.origin.clone());
            if let Some((n, _)) = &s.async_cores {
                s.gevent = *n;
            }
        }
        "gevent-monkey-patch" => s.gevent_monkey_patch = flag,
        "gevent-early-monkey-patch" => s.gevent_early_monkey_patch = flag,
        // uWSGI: wait for the hub's death instead of its control greenlet at
        // shutdown; here the worker stops once its requests are done either way.
        "gevent-wait-for-hub" => {}
        _ => {
            let subject = route_subject(key).expect("handles() checked the key");
            let mut route = parse_route(opt, key, subject, v, line)?;
            if route.condition.is_empty() || matches!(route.condition.as_str(), "regexp" | "re") {
                route.pattern = pcre_names_to_python(&route.pattern).map_err(|why| {
                    opt.origin
                        .error(ErrorKind::InvalidValue, format!("{key} = {v}: {why}"))
                })?;
            }
            if let Some(re) = route_regexp(&route) {
                s.regexps.push((opt.origin.clone(), re.to_string()));
            }
            s.routes.push(route);
        }
    }
    Ok(())
}

fn seconds(opt: &Opt, text: &str) -> Result<i64, ConfigError> {
    text.trim().parse::<i64>().map_err(|_| {
        opt.origin.error(
            ErrorKind::InvalidValue,
            format!("\"{}\": {:?} is not a number of seconds", opt.key, text),
        )
    })
}

/// `uwsgi_opt_add_route`: `SUBJECT ACTION:ARGS` (the first space splits), `if`
/// subjects are `condition:text`, `run` has only the action, `label` only a name.
fn parse_route(
    opt: &Opt,
    key: &str,
    subject: &'static str,
    v: &str,
    line: usize,
) -> Result<Route, ConfigError> {
    let mut route = Route {
        subject,
        pattern: String::new(),
        condition: String::new(),
        action: String::new(),
        arg: String::new(),
        line,
    };
    if subject == "label" {
        route.pattern = v.to_string();
        return Ok(route);
    }
    let command = if subject == "run" {
        v
    } else {
        let (head, command) = v.split_once(' ').ok_or_else(|| {
            opt.origin.error(
                ErrorKind::InvalidValue,
                format!("{key} = {v}: invalid route syntax"),
            )
        })?;
        if subject == "if" || subject == "if-not" {
            let (cond, text) = head.split_once(':').ok_or_else(|| {
                opt.origin.error(
                    ErrorKind::InvalidValue,
                    format!("{key} = {v}: invalid route condition syntax"),
                )
            })?;
            if !CONDITIONS.contains(&cond) {
                return Err(opt.origin.error(
                    ErrorKind::Unsupported,
                    format!(
                    "\"{key}\" condition \"{cond}\" is not supported: the rule would never apply"
                ),
                ));
            }
            route.condition = cond.to_string();
            route.pattern = text.to_string();
        } else {
            route.pattern = head.to_string();
        }
        command
    };
    let (action, arg) = command.split_once(':').ok_or_else(|| {
        opt.origin.error(
            ErrorKind::InvalidValue,
            format!("{key} = {v}: invalid route syntax"),
        )
    })?;
    if !ACTIONS.contains(&action) {
        return Err(opt.origin.error(ErrorKind::Unsupported, format!(
            "\"{key}\" action \"{action}\" is not supported: the site would lose what that rule does"
        )));
    }
    if arg.contains("${") && arg.contains('[') {
        return Err(opt.origin.error(
            ErrorKind::Unsupported,
            format!("\"{key}\" = {v}: route variables ${{name[...]}} are not supported"),
        ));
    }
    match action {
        "basicauth" | "basicauth-next" if !arg.contains(',') => {
            return Err(opt.origin.error(
                ErrorKind::InvalidValue,
                format!("{key} = {v}: basicauth needs realm,user:password or realm,htpasswd-file"),
            ));
        }
        "addheader" if parse_header(arg).is_none() => {
            return Err(opt.origin.error(
                ErrorKind::InvalidValue,
                format!("{key} = {v}: addheader needs \"Name: value\""),
            ));
        }
        "return" | "break-with-status" if !is_status(arg) => {
            return Err(opt.origin.error(
                ErrorKind::InvalidValue,
                format!("{key} = {v}: return needs a 3-digit status"),
            ));
        }
        _ => {}
    }
    route.action = action.to_string();
    route.arg = arg.to_string();
    Ok(route)
}

/// PCRE's named-group spellings that Python's `re` spells otherwise:
/// `(?<name>…)` and `(?'name'…)` become `(?P<name>…)`, `\k<name>`/`\k'name'`/
/// `\k{name}` become `(?P=name)`. Group numbers (`$1`) do not change. Lookbehinds
/// `(?<=`/`(?<!`, escapes and character classes are left as written. A POSIX
/// bracket class (`[[:alpha:]]`) is refused: `re` compiles it as a different set.
pub fn pcre_names_to_python(re: &str) -> Result<String, String> {
    let b = re.as_bytes();
    let mut out = String::with_capacity(re.len() + 4);
    let mut i = 0;
    let mut in_class = false;
    let name_end = |from: usize, close: u8| -> Option<usize> {
        let mut j = from;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
            j += 1;
        }
        (j > from && j < b.len() && b[j] == close && !b[from].is_ascii_digit()).then_some(j)
    };
    while i < b.len() {
        let c = b[i];
        if c == b'\\' && i + 1 < b.len() {
            if !in_class && b[i + 1] == b'k' && i + 2 < b.len() {
                let close = match b[i + 2] {
                    b'<' => b'>',
                    b'\'' => b'\'',
                    b'{' => b'}',
                    _ => 0,
                };
                if let Some(j) = (close != 0).then(|| name_end(i + 3, close)).flatten() {
                    out.push_str("(?P=");
                    out.push_str(&re[i + 3..j]);
                    out.push(')');
                    i = j + 1;
                    continue;
                }
            }
            out.push_str(&re[i..i + 2 + utf8_extra(b[i + 1])]);
            i += 2 + utf8_extra(b[i + 1]);
            continue;
        }
        if in_class {
            if c == b'[' && matches!(b.get(i + 1), Some(b':' | b'=' | b'.')) {
                return Err(format!(
                    "the POSIX class in {re:?} is PCRE only: Python's re (the worker's) reads it as a set of characters; spell it out ([a-zA-Z], [0-9], \\s)"
                ));
            }
            in_class = c != b']';
        } else if c == b'[' {
            in_class = true;
            // `[]…]` and `[^]…]`: a leading `]` is a literal.
            let mut j = i + 1;
            if j < b.len() && b[j] == b'^' {
                j += 1;
            }
            if j < b.len() && b[j] == b']' {
                out.push_str(&re[i..=j]);
                i = j + 1;
                continue;
            }
        } else if c == b'(' && b.get(i + 1) == Some(&b'?') {
            let close = match b.get(i + 2) {
                Some(b'<') => b'>',
                Some(b'\'') => b'\'',
                _ => 0,
            };
            if let Some(j) = (close != 0).then(|| name_end(i + 3, close)).flatten() {
                out.push_str("(?P<");
                out.push_str(&re[i + 3..j]);
                out.push('>');
                i = j + 1;
                continue;
            }
        }
        let len = 1 + utf8_extra(c);
        out.push_str(&re[i..i + len]);
        i += len;
    }
    Ok(out)
}

/// Continuation bytes after a UTF-8 lead byte (so slices stay on char boundaries).
fn utf8_extra(lead: u8) -> usize {
    match lead {
        0xF0..=0xFF => 3,
        0xE0..=0xEF => 2,
        0xC0..=0xDF => 1,
        _ => 0,
    }
}

/// The regexp the worker compiles for a route (`routes.py`: subject routes,
/// and the right side of a `regexp`/`re` condition).
fn route_regexp(route: &Route) -> Option<&str> {
    match route.subject {
        "if" | "if-not" if matches!(route.condition.as_str(), "regexp" | "re") => {
            Some(route.pattern.split_once(';').map_or("", |(_, re)| re))
        }
        "if" | "if-not" | "run" | "label" => None,
        _ => Some(route.pattern.as_str()),
    }
}

fn is_status(arg: &str) -> bool {
    arg.len() >= 3 && arg.as_bytes()[..3].iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_need_a_token_name_and_no_line_break() {
        assert_eq!(
            parse_header("X-Frame-Options: DENY"),
            Some(("X-Frame-Options".into(), "DENY".into()))
        );
        assert_eq!(parse_header("no colon"), None);
        assert_eq!(parse_header("Bad Name: x"), None);
        assert_eq!(parse_header(": x"), None);
    }

    #[test]
    fn pcre_named_groups_become_python_ones() {
        assert_eq!(
            pcre_names_to_python(r"^/(?<year>\d{4})/(?'slug'[a-z]+)$").unwrap(),
            r"^/(?P<year>\d{4})/(?P<slug>[a-z]+)$"
        );
        assert_eq!(
            pcre_names_to_python(r"(?<w>a)\k<w>\k{w}").unwrap(),
            r"(?P<w>a)(?P=w)(?P=w)"
        );
        assert!(pcre_names_to_python(r"^/[[:alpha:]]+$").is_err());
        // Lookbehinds, escapes, classes and Python's own spelling stay as written.
        for same in [
            r"(?<=a)b(?<!c)",
            r"\(?<x>",
            r"[(?<x>]",
            r"[]](?P<x>y)",
            r"(?<1x>)",
            "é(?:ü)",
        ] {
            assert_eq!(pcre_names_to_python(same).unwrap(), same);
        }
    }

    #[test]
    fn every_route_key_is_handled() {
        for k in [
            "route",
            "route-if",
            "route-if-not",
            "route-run",
            "route-label",
            "route-host",
            "route-uri",
            "route-qs",
        ] {
            assert!(handles(k), "{k}");
        }
        assert!(!handles("response-route"));
        assert!(!handles("final-route"));
    }
}
