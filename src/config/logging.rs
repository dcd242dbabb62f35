//! The logging keys: `logger`, `req-logger`, `log-format`, `log-date` and the
//! conditional request-log keys, read as uWSGI reads them (`core/logging.c`,
//! `core/uwsgi.c`, `plugins/logfile`, `plugins/syslog`), strictly: a logger we
//! cannot write to is `path:line: reason`, never lines silently lost.
//!
//! uWSGI's model, kept here: `logger = [ID ]NAME[:ARG]`. Unnamed loggers
//! replace `logto` as the destination of every line (the master's, the
//! workers' output and, without a request logger, the request lines); `stdio`
//! is `logto` itself (or stderr). `req-logger` gives the request lines their own
//! destinations, and they no longer reach the main log. A logger with an ID only
//! receives what `log-route` sends it, and `log-route` (a regular expression) is
//! not implemented, so such a logger gets no line, as in uWSGI without a route.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::expand::Opt;
use super::keys;
use super::values;
use super::{ConfigError, ErrorKind, Warning};

/// The longest `log-format` accepted: a request line must fit one atomic pipe
/// write (4096 bytes) with room for the values.
pub const MAX_FORMAT: usize = 2048;

/// Everything about where log lines go and how request lines look.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Logging {
    /// `logger`: destinations of every line (replacing `logto` when any is unnamed).
    pub loggers: Vec<LoggerSpec>,
    /// `req-logger`/`logger-req`: destinations of request lines only.
    pub req_loggers: Vec<LoggerSpec>,
    /// The worker's side: how request lines are built and which are written.
    pub request: RequestLog,
    /// `log-date`/`logdate`/`log-prefix`: prefix for the master's and the
    /// workers' own lines (not the request lines, not the app's output, as uWSGI).
    pub date: Option<LogDate>,
    /// `log-backupname`: where `logto` goes when `log-maxsize` rotates it
    /// (uWSGI's default: `logto` plus a timestamp suffix).
    pub backupname: Option<std::path::PathBuf>,
    /// `log-truncate`: `logto` is emptied when the instance starts.
    pub truncate: bool,
    /// `log-encoder`: applied in order to every line of the main log (and to
    /// request lines when no `req-logger` takes them), as uWSGI's log master.
    pub encoders: Vec<Encoder>,
    /// `log-req-encoder`: the same for the lines a `req-logger` takes.
    pub req_encoders: Vec<Encoder>,
}

/// One of uWSGI's embedded log encoders (core/logging.c).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoder {
    Prefix(String),
    Suffix(String),
    /// Adds a newline.
    Nl,
    /// `format TEMPLATE`: literal text and `${var}`s.
    Format(Vec<Piece>),
    /// `json TEMPLATE`: the same, with `msg`, `msgnl` and `strftime:` values
    /// JSON-escaped.
    Json(Vec<Piece>),
}

/// A piece of a `format`/`json` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    /// `msg` (the line without its newline), `msgnl`, `unix`, `micros`,
    /// `millis`, `strftime:FMT`; any other name prints nothing, as in uWSGI.
    Var(String),
}

/// `log-encoder = NAME[ ARGS]` as uWSGI's uwsgi_setup_log_encoders splits it.
fn parse_encoder(opt: &Opt, v: &str) -> Result<Encoder, ConfigError> {
    let (name, args) = v.split_once(' ').unwrap_or((v, ""));
    if let Some((_, id)) = name.split_once(':') {
        return Err(opt.origin.error(
            ErrorKind::Unsupported,
            format!(
                "{} = {v}: an encoder for the logger \"{id}\" only applies to routed lines (log-route), which are not supported",
                opt.key
            ),
        ));
    }
    Ok(match name {
        "prefix" => Encoder::Prefix(args.to_string()),
        "suffix" => Encoder::Suffix(args.to_string()),
        "nl" => Encoder::Nl,
        "format" => Encoder::Format(template_pieces(args)),
        "json" => Encoder::Json(template_pieces(args)),
        "gzip" | "compress" => {
            return Err(opt.origin.error(
                ErrorKind::Unsupported,
                format!("{} = {v}: the {name} encoder is not supported (lines would be written uncompressed)", opt.key),
            ))
        }
        other => {
            return Err(opt.origin.error(
                ErrorKind::InvalidValue,
                format!("{} = {v}: log encoder \"{other}\" not found (uWSGI exits): prefix, suffix, nl, format, json", opt.key),
            ))
        }
    })
}

/// uWSGI's uwsgi_log_encoder_parse_vars: `${name}` is a variable, a `$` not
/// followed by `{` is text, an unterminated `${…` is text.
pub fn template_pieces(t: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = t;
    while let Some(at) = rest.find("${") {
        match rest[at + 2..].find('}') {
            Some(end) => {
                text.push_str(&rest[..at]);
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Var(rest[at + 2..at + 2 + end].to_string()));
                rest = &rest[at + 2 + end + 1..];
            }
            None => break,
        }
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    pieces
}

/// `log-date` without a value (or a boolean value): uWSGI's `ctime` form
/// (`Tue Dec  1 23:31:22 2026 - `); with one, that strftime format and ` - `.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum LogDate {
    Ctime,
    Strftime(String),
}

/// The request-log settings a worker receives (the `logging` object of its JSON).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct RequestLog {
    /// `log-format`/`logformat`; `None`: uWSGI's default line.
    pub format: Option<String>,
    /// `log-format-strftime`: `%(ftime)` uses the `log-date` format.
    pub format_strftime: bool,
    /// The `log-date` strftime format (for `%(ftime)` and the workers' own lines).
    pub strftime: Option<String>,
    /// `log-date` is on (the workers prefix their own lines).
    pub date: bool,
    #[serde(rename = "log_4xx")]
    pub log_4xx: bool,
    #[serde(rename = "log_5xx")]
    pub log_5xx: bool,
    /// `log-big`: bytes; a response body at least this large is logged. 0 = off.
    pub big: u64,
    /// `log-zero`: a response without a body is logged.
    pub zero: bool,
    /// `log-sendfile`: a response sent with sendfile() (a file wrapper or a
    /// static file) is logged.
    pub sendfile: bool,
    /// `log-ioerror`: a request that had both a body read error and a
    /// response write error is logged (core/logging.c: read_errors > 0 &&
    /// write_errors > 0, not either one).
    pub ioerror: bool,
    /// `log-micros`: the default line reports microseconds.
    pub micros: bool,
    /// `log-x-forwarded-for`: the address logged is the X-Forwarded-For header.
    pub x_forwarded_for: bool,
    /// Request lines start with [`crate::logs::REQUEST_MARK`] so the master can
    /// route them to the request loggers (set when `req-logger` is).
    pub mark: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggerSpec {
    /// The `ID` of `logger = ID name:arg`: such a logger only gets routed lines.
    pub id: Option<String>,
    pub kind: LoggerKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoggerKind {
    /// `file:PATH` or `file:logfile=PATH,maxsize=N,backupname=NAME`.
    File {
        path: PathBuf,
        /// Bytes, 0 = never rotate.
        maxsize: u64,
        /// Where a rotated file goes; `None`: `PATH.<unixtime>` as `log-maxsize` does.
        backupname: Option<PathBuf>,
    },
    /// `stdio`: `logto` if set, else stderr.
    Stdio,
    /// `syslog[:IDENT[,FACILITY]]`: datagrams to /dev/log, priority info,
    /// ident `uwsgi` and facility `daemon` by default, as uWSGI's plugin.
    Syslog { ident: String, facility: u8 },
}

/// The logging keys this module reads (canonical names and their aliases).
pub fn is_logging_key(key: &str) -> bool {
    matches!(
        key,
        "logger"
            | "req-logger"
            | "logger-req"
            | "log-format"
            | "logformat"
            | "log-format-strftime"
            | "logformat-strftime"
            | "log-date"
            | "logdate"
            | "log-prefix"
            | "log-4xx"
            | "log-5xx"
            | "log-big"
            | "log-zero"
            | "log-sendfile"
            | "log-ioerror"
            | "log-micros"
            | "log-x-forwarded-for"
            | "log-master"
            | "log-syslog"
            | "log-backupname"
            | "log-truncate"
            | "log-encoder"
            | "log-req-encoder"
    )
}

/// uWSGI's syslog facility names (plugins/syslog), as their numeric codes.
const FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("security", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// Applies one logging key; `cwd` resolves relative `file:` paths as `logto`'s.
pub fn apply(
    l: &mut Logging,
    key: &str,
    opt: &Opt,
    cwd: &Path,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    let v = opt.value.as_str();
    let flag = keys::flag_value(v);
    let r = &mut l.request;
    match key {
        "logger" => l.loggers.push(parse_logger(opt, v, cwd, warnings)?),
        "log-backupname" => l.backupname = Some(cwd.join(v)),
        "log-truncate" => l.truncate = flag,
        "log-encoder" => l.encoders.push(parse_encoder(opt, v)?),
        "log-req-encoder" => l.req_encoders.push(parse_encoder(opt, v)?),
        "log-syslog" => {
            // uWSGI: `log-syslog[=ARG]` is `logger = syslog[:ARG]`.
            let spec = if v.is_empty() || v == "1" || v.eq_ignore_ascii_case("true") {
                "syslog".to_string()
            } else {
                format!("syslog:{v}")
            };
            l.loggers.push(parse_logger(opt, &spec, cwd, warnings)?)
        }
        "req-logger" | "logger-req" => l.req_loggers.push(parse_logger(opt, v, cwd, warnings)?),
        "log-format" | "logformat" => {
            if v.len() > MAX_FORMAT {
                return Err(opt.origin.error(
                    ErrorKind::InvalidValue,
                    format!(
                        "\"{}\" is {} bytes long: at most {MAX_FORMAT} (a request line must fit one atomic write)",
                        opt.key,
                        v.len()
                    ),
                ));
            }
            if v.chars().any(|c| c.is_control()) {
                return Err(opt.origin.error(
                    ErrorKind::InvalidValue,
                    format!(
                        "\"{}\" holds a control character: it would split request lines",
                        opt.key
                    ),
                ));
            }
            if v.contains("%(metric.") {
                return Err(opt.origin.error(
                    ErrorKind::Unsupported,
                    format!("\"{}\": %(metric.NAME) is not supported (amy-emperor has no uWSGI metrics subsystem): the value would be missing from every line", opt.key),
                ));
            }
            r.format = (!v.is_empty()).then(|| v.to_string())
        }
        "log-format-strftime" | "logformat-strftime" => r.format_strftime = flag,
        "log-date" | "logdate" | "log-prefix" => {
            // uwsgi_opt_log_date: a boolean value means the ctime form.
            let boolean = v.is_empty()
                || ["true", "1", "on", "yes"]
                    .iter()
                    .any(|b| v.eq_ignore_ascii_case(b));
            if !boolean
                && (v == "0"
                    || ["false", "off", "no"]
                        .iter()
                        .any(|b| v.eq_ignore_ascii_case(b)))
            {
                // uWSGI would use "false" as a literal prefix; nobody means that.
                l.date = None;
                r.date = false;
                r.strftime = None;
                return Ok(());
            }
            let date = if boolean {
                LogDate::Ctime
            } else {
                LogDate::Strftime(v.to_string())
            };
            r.date = true;
            r.strftime = match &date {
                LogDate::Strftime(f) => Some(f.clone()),
                LogDate::Ctime => None,
            };
            l.date = Some(date);
        }
        "log-4xx" => r.log_4xx = flag,
        "log-5xx" => r.log_5xx = flag,
        "log-zero" => r.zero = flag,
        "log-sendfile" => r.sendfile = flag,
        "log-ioerror" => r.ioerror = flag,
        "log-micros" => r.micros = flag,
        "log-x-forwarded-for" => r.x_forwarded_for = flag,
        "log-big" => {
            r.big = values::parse_u64(&opt.key, v, 0, u64::MAX)
                .map_err(|e| opt.origin.error(ErrorKind::InvalidValue, e.to_string()))?
        }
        // Worker output already goes through the master: uWSGI's `log-master`.
        "log-master" => {}
        other => {
            return Err(opt.origin.error(
                ErrorKind::Unsupported,
                format!("\"{other}\" is not supported: amy-emperor does not read it yet"),
            ))
        }
    }
    Ok(())
}

/// After every key: request lines carry the routing mark when request loggers exist.
pub fn finish(l: &mut Logging) {
    l.request.mark = !l.req_loggers.is_empty();
}

fn parse_logger(
    opt: &Opt,
    value: &str,
    cwd: &Path,
    warnings: &mut Vec<Warning>,
) -> Result<LoggerSpec, ConfigError> {
    let bad = |m: String| opt.origin.error(ErrorKind::InvalidValue, m);
    // setup_chosen_logger: `ID NAME:ARG` when the part before the space is alphanumeric.
    let (id, rest) = match value.split_once(' ') {
        Some((head, tail))
            if !head.is_empty() && head.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            (Some(head.to_string()), tail)
        }
        _ => (None, value),
    };
    let (name, arg) = match rest.split_once(':') {
        Some((n, a)) => (n, (!a.is_empty()).then_some(a)),
        None => (rest, None),
    };
    let kind = match name {
        "file" => {
            let arg = arg.ok_or_else(|| {
                bad(format!("{} = {value}: file: needs a path (file:PATH)", opt.key))
            })?;
            parse_file(opt, value, arg, cwd)?
        }
        "stdio" => LoggerKind::Stdio,
        "syslog" => {
            let (ident, facility) = match arg {
                None => ("uwsgi", "daemon"),
                Some(a) => match a.split_once(',') {
                    Some((i, f)) => (i, f),
                    None => (a, "daemon"),
                },
            };
            let facility = FACILITIES
                .iter()
                .find(|(n, _)| *n == facility)
                .map(|(_, c)| *c)
                // uWSGI keeps `daemon` for an unknown name.
                .unwrap_or(3);
            LoggerKind::Syslog {
                ident: ident.to_string(),
                facility,
            }
        }
        other => {
            return Err(opt.origin.error(
                ErrorKind::Unsupported,
                format!(
                    "{} = {value}: the \"{other}\" logger is not supported (file:, stdio and syslog are): its lines would be lost",
                    opt.key
                ),
            ))
        }
    };
    if let Some(id) = &id {
        warnings.push(opt.origin.warning(format!(
            "{} = {value}: the named logger \"{id}\" only receives lines routed by log-route, which amy-emperor does not implement: it gets no line (as in uWSGI without a route)",
            opt.key
        )));
    }
    Ok(LoggerSpec { id, kind })
}

fn parse_file(opt: &Opt, value: &str, arg: &str, cwd: &Path) -> Result<LoggerKind, ConfigError> {
    let resolve = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            cwd.join(p)
        }
    };
    if !arg.contains('=') {
        return Ok(LoggerKind::File {
            path: resolve(arg),
            maxsize: 0,
            backupname: None,
        });
    }
    // uwsgi_kvlist_parse(',', '='): logfile, backupname, maxsize.
    let (mut path, mut maxsize, mut backupname) = (None, 0, None);
    for item in arg.split(',') {
        let (k, v) = item.split_once('=').ok_or_else(|| {
            opt.origin.error(
                ErrorKind::InvalidValue,
                format!("{} = {value}: \"{item}\" is not key=value", opt.key),
            )
        })?;
        match k {
            "logfile" => path = Some(resolve(v)),
            "backupname" => backupname = Some(resolve(v)),
            "maxsize" => {
                maxsize = values::parse_u64("maxsize", v, 0, u64::MAX)
                    .map_err(|e| opt.origin.error(ErrorKind::InvalidValue, e.to_string()))?
            }
            other => {
                return Err(opt.origin.error(
                    ErrorKind::InvalidValue,
                    format!(
                        "{} = {value}: unknown file logger key \"{other}\" (logfile, maxsize, backupname)",
                        opt.key
                    ),
                ))
            }
        }
    }
    let path = path.ok_or_else(|| {
        opt.origin.error(
            ErrorKind::InvalidValue,
            format!(
                "{} = {value}: the logfile= key is missing (uWSGI would log nothing there)",
                opt.key
            ),
        )
    })?;
    Ok(LoggerKind::File {
        path,
        maxsize,
        backupname,
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
            configured: false,
            origin: Origin {
                path: "/x/app.ini".into(),
                line: Some(3),
                env_line: None,
            },
        }
    }

    fn run(pairs: &[(&str, &str)]) -> Result<(Logging, Vec<Warning>), ConfigError> {
        let mut l = Logging::default();
        let mut w = Vec::new();
        for (k, v) in pairs {
            apply(&mut l, k, &opt(k, v), Path::new("/run"), &mut w)?;
        }
        finish(&mut l);
        Ok((l, w))
    }

    #[test]
    fn encoders_parse_as_uwsgi_splits_them_and_the_rest_fails_closed() {
        let (l, _) = run(&[
            ("log-encoder", "prefix [app]"),
            ("log-encoder", "json {\"m\":\"${msg}\"}"),
            ("log-encoder", "nl"),
            ("log-req-encoder", "suffix !"),
        ])
        .unwrap();
        assert_eq!(
            l.encoders,
            vec![
                Encoder::Prefix("[app]".into()),
                Encoder::Json(template_pieces("{\"m\":\"${msg}\"}")),
                Encoder::Nl
            ]
        );
        assert_eq!(l.req_encoders, vec![Encoder::Suffix("!".into())]);
        for (v, says) in [
            ("gzip", "not supported"),
            ("compress", "not supported"),
            ("prefix:mylogger x", "log-route"),
            ("base64", "not found"),
        ] {
            let e = run(&[("log-encoder", v)]).unwrap_err();
            assert!(e.to_string().contains(says), "{v}: {e}");
        }
    }

    #[test]
    fn loggers_parse_as_uwsgi_names_them() {
        let (l, w) = run(&[
            ("logger", "file:/var/log/a.log"),
            ("logger", "file:rel.log"),
            ("logger", "stdio"),
            ("logger", "syslog:myapp,local3"),
            ("logger", "syslog"),
            (
                "req-logger",
                "file:logfile=/r.log,maxsize=100,backupname=/r.old",
            ),
        ])
        .unwrap();
        assert!(w.is_empty());
        let kinds: Vec<_> = l.loggers.iter().map(|s| s.kind.clone()).collect();
        assert_eq!(
            kinds,
            vec![
                LoggerKind::File {
                    path: "/var/log/a.log".into(),
                    maxsize: 0,
                    backupname: None
                },
                LoggerKind::File {
                    path: "/run/rel.log".into(),
                    maxsize: 0,
                    backupname: None
                },
                LoggerKind::Stdio,
                LoggerKind::Syslog {
                    ident: "myapp".into(),
                    facility: 19
                },
                LoggerKind::Syslog {
                    ident: "uwsgi".into(),
                    facility: 3
                },
            ]
        );
        assert_eq!(
            l.req_loggers[0].kind,
            LoggerKind::File {
                path: "/r.log".into(),
                maxsize: 100,
                backupname: Some("/r.old".into())
            }
        );
        assert!(l.request.mark);
    }

    #[test]
    fn named_logger_warns_and_unknown_plugins_fail_closed() {
        let (l, w) = run(&[("logger", "errs file:/tmp/e.log")]).unwrap();
        assert_eq!(l.loggers[0].id.as_deref(), Some("errs"));
        assert!(w[0].message.contains("log-route"), "{:?}", w);
        for bad in [
            "redislog:127.0.0.1:6379",
            "socket:/tmp/x",
            "file:",
            "file:maxsize=3",
            "rsyslog:1.2.3.4:514",
        ] {
            let e = run(&[("logger", bad)]).unwrap_err().to_string();
            assert!(e.contains("/x/app.ini:3"), "{bad}: {e}");
        }
    }

    #[test]
    fn log_date_forms() {
        let (l, _) = run(&[("log-date", "")]).unwrap();
        assert_eq!(l.date, Some(LogDate::Ctime));
        let (l, _) = run(&[("logdate", "true")]).unwrap();
        assert_eq!(l.date, Some(LogDate::Ctime));
        let (l, _) = run(&[("log-date", "%Y-%m-%d")]).unwrap();
        assert_eq!(l.date, Some(LogDate::Strftime("%Y-%m-%d".into())));
        assert_eq!(l.request.strftime.as_deref(), Some("%Y-%m-%d"));
        let (l, _) = run(&[("log-date", "%Y"), ("log-date", "false")]).unwrap();
        assert_eq!(l.date, None);
        assert!(!l.request.date);
    }

    #[test]
    fn format_and_conditions() {
        let (l, _) = run(&[
            ("logformat", "%(method) %(uri)"),
            ("log-4xx", ""),
            ("log-5xx", "true"),
            ("log-big", "1000"),
            ("log-x-forwarded-for", ""),
            ("log-ioerror", "true"),
        ])
        .unwrap();
        let r = &l.request;
        assert!(r.ioerror);
        assert_eq!(r.format.as_deref(), Some("%(method) %(uri)"));
        assert!(r.log_4xx && r.log_5xx && r.x_forwarded_for && !r.mark);
        assert_eq!(r.big, 1000);
        assert!(run(&[("log-big", "lots")]).is_err());
        assert!(run(&[("log-format", &"x".repeat(MAX_FORMAT + 1))]).is_err());
    }
}
