//! Raw option list → typed, validated [`Config`].
//!
//! Scalars: the last occurrence wins; `socket`, `env`, `pythonpath` and
//! `touch-reload` accumulate. Numbers are read as uWSGI reads them (`atoi`, so
//! `4 # four` is 4) but a negative value is an error, as it is fatal in uWSGI.
//! Paths resolve the way uWSGI resolves them: sockets, `wsgi-file`, `home`,
//! `touch-reload` and unix `stats` against `chdir` (uWSGI binds and loads after
//! changing directory); `pidfile`, `logto` and `daemonize` against the start-up cwd.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::envfile::{self, LineKind};
use super::expand::{Expander, Opt};
use super::keys;
use super::serving;
use super::{
    ChownSpec, Config, ConfigError, EnvVar, LoadOptions, Protocol, SocketAddress, SocketSpec,
    Warning,
};

fn non_negative(opt: &Opt) -> Result<i64, ConfigError> {
    let n = keys::atoi(&opt.value);
    if n < 0 || opt.value.trim_start().starts_with('-') {
        return Err(opt.origin.error(format!(
            "invalid value for option \"{}\": must be > 0",
            opt.key
        )));
    }
    Ok(n)
}

fn resolve(base: &Path, value: &str) -> PathBuf {
    let p = Path::new(value);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// `chmod-socket`: `1` means 666, otherwise exactly three octal digits.
pub fn parse_chmod(value: &str) -> Option<u32> {
    if value == "1" {
        return Some(0o666);
    }
    let b = value.as_bytes();
    if b.len() != 3 || !b.iter().all(|c| (b'0'..=b'7').contains(c)) {
        return None;
    }
    Some(b.iter().fold(0, |acc, c| (acc << 3) + u32::from(c - b'0')))
}

fn parse_socket(opt: &Opt, protocol: Protocol, base: &Path) -> Result<SocketSpec, ConfigError> {
    let v = opt.value.as_str();
    let address = if v.is_empty() {
        return Err(opt
            .origin
            .error(format!("{}: empty socket address", opt.key)));
    } else if v.starts_with('@') {
        return Err(opt.origin.error(format!(
            "{} = {v}: abstract unix sockets are not supported",
            opt.key
        )));
    } else if let (false, Some(colon)) = (v.starts_with('/') || v.starts_with('.'), v.rfind(':')) {
        let port: u16 = v[colon + 1..]
            .parse()
            .map_err(|_| opt.origin.error(format!("{} = {v}: invalid port", opt.key)))?;
        SocketAddress::Tcp {
            host: v[..colon].to_string(),
            port,
        }
    } else {
        SocketAddress::Unix(resolve(base, v))
    };
    Ok(SocketSpec {
        address,
        protocol,
        key: opt.key.clone(),
        line: opt.origin.line.unwrap_or(0),
    })
}

pub fn build(
    ini: &Path,
    ex: &Expander<'_>,
    options: &LoadOptions,
) -> Result<(Config, Vec<Warning>), ConfigError> {
    let cwd = options.cwd.as_path();
    let mut warnings = Vec::new();
    // uWSGI changes directory before it binds and loads: find the final chdir first.
    let chdir = ex
        .opts
        .iter()
        .rfind(|o| o.key == "chdir")
        .map(|o| resolve(cwd, &o.value));
    let app_base = chdir.clone().unwrap_or_else(|| cwd.to_path_buf());

    let mut c = Config {
        ini_path: std::path::absolute(cwd.join(ini)).unwrap_or_else(|_| cwd.join(ini)),
        watch_paths: Vec::new(),
        sockets: Vec::new(),
        chmod_socket: None,
        chown_socket: None,
        listen: None,
        chdir: chdir.clone(),
        module: None,
        wsgi_file: None,
        callable: "application".into(),
        home: None,
        pythonpath: Vec::new(),
        processes: 1,
        threads: 1,
        pidfile: None,
        vacuum: false,
        uid: None,
        gid: None,
        env: Vec::new(),
        harakiri: None,
        max_requests: 0,
        reload_on_rss_mb: 0,
        worker_reload_mercy: Duration::from_secs(60),
        buffer_size: None,
        logto: None,
        log_maxsize: 0,
        log_reopen: false,
        disable_logging: false,
        daemonize: None,
        touch_reload: Vec::new(),
        stats: None,
        strict: ex.strict(),
        die_on_term: false,
        lazy_apps: false,
        need_app: false,
        reload_one_by_one: false,
        serving: Default::default(),
    };
    let mut ini_env = Vec::new();
    let mut reported: HashSet<String> = HashSet::new();
    // The first entry is uWSGI's own `--ini X` from the command line.
    for opt in ex.opts.iter().skip(1) {
        let key = keys::canonical(&opt.key);
        let v = opt.value.as_str();
        let flag = keys::flag_value(v);
        match key {
            "socket" => c
                .sockets
                .push(parse_socket(opt, Protocol::Uwsgi, &app_base)?),
            "http-socket" => c
                .sockets
                .push(parse_socket(opt, Protocol::Http, &app_base)?),
            "chmod-socket" => {
                c.chmod_socket = Some(
                    parse_chmod(v)
                        .ok_or_else(|| opt.origin.error(format!("invalid chmod value: {v}")))?,
                )
            }
            "chown-socket" => {
                c.chown_socket = Some(match v.split_once(':') {
                    Some((u, g)) => ChownSpec {
                        user: u.into(),
                        group: Some(g.into()),
                    },
                    None => ChownSpec {
                        user: v.into(),
                        group: None,
                    },
                })
            }
            "listen" => c.listen = Some(non_negative(opt)?.min(i64::from(u32::MAX)) as u32),
            "module" => c.module = Some(v.into()),
            "wsgi-file" => c.wsgi_file = Some(resolve(&app_base, v)),
            "callable" => c.callable = v.into(),
            "home" => c.home = Some(resolve(&app_base, v)),
            "pythonpath" => c.pythonpath.push(v.into()),
            "processes" => c.processes = (non_negative(opt)?.clamp(1, 1 << 16)) as u32,
            "threads" => c.threads = (non_negative(opt)?.clamp(1, 1 << 16)) as u32,
            "pidfile" => c.pidfile = Some(resolve(cwd, v)),
            "vacuum" => c.vacuum = flag,
            "uid" => c.uid = Some(v.into()),
            "gid" => c.gid = Some(v.into()),
            "env" => {
                if let Some(var) = env_var(opt, &mut warnings)? {
                    ini_env.push(var);
                }
            }
            "harakiri" => {
                let n = non_negative(opt)?;
                c.harakiri = (n > 0).then(|| Duration::from_secs(n as u64));
            }
            "max-requests" => c.max_requests = non_negative(opt)? as u64,
            "reload-on-rss" => c.reload_on_rss_mb = non_negative(opt)? as u64,
            "worker-reload-mercy" => {
                c.worker_reload_mercy = Duration::from_secs(non_negative(opt)? as u64)
            }
            // uWSGI stores it in 16 bits and clamps silently.
            "buffer-size" => c.buffer_size = Some(non_negative(opt)?.min(65535) as u32),
            "logto" => {
                if v.contains(':') {
                    warnings.push(opt.origin.warning(format!(
                        "logto = {v}: uWSGI reads a value with ':' as a UDP address; amy-emperor treats it as a file"
                    )));
                }
                c.logto = Some(resolve(cwd, v))
            }
            "log-maxsize" => c.log_maxsize = non_negative(opt)? as u64,
            "log-reopen" => c.log_reopen = flag,
            "disable-logging" => c.disable_logging = flag,
            "daemonize" => c.daemonize = Some(resolve(cwd, v)),
            "touch-reload" => c.touch_reload.push(resolve(&app_base, v)),
            "stats" => {
                c.stats = Some(if v.contains(':') && !v.starts_with('/') {
                    v.to_string()
                } else {
                    resolve(&app_base, v).display().to_string()
                })
            }
            "die-on-term" => c.die_on_term = flag,
            "lazy-apps" => c.lazy_apps = flag,
            "need-app" => c.need_app = flag,
            "reload-one-by-one" => c.reload_one_by_one = flag,
            k if serving::handles(k) => serving::apply(&mut c.serving, k, opt, &app_base)?,
            _ => {
                if key.is_empty() || keys::is_logic_end(key) || !reported.insert(opt.key.clone()) {
                    continue;
                }
                if !keys::is_uwsgi_option(&opt.key) {
                    warnings.push(opt.origin.warning(format!(
                        "unknown key \"{}\" ignored (uWSGI keeps it as a placeholder)",
                        opt.key
                    )));
                } else if !keys::is_honoured(key) {
                    warnings.push(opt.origin.warning(format!(
                        "uWSGI option \"{}\" is not supported by amy-emperor; ignored",
                        opt.key
                    )));
                }
            }
        }
    }
    if c.sockets.is_empty() {
        warnings.push(Warning {
            path: ini.to_path_buf(),
            line: None,
            message: "no socket, uwsgi-socket or http-socket: start will refuse to run".into(),
        });
    }

    // The env file comes first, then `env =` lines (DESIGN §4).
    let mut env_files: Vec<PathBuf> = ex.env_files_read.clone();
    let explicit = options
        .env_file
        .as_ref()
        .map(|p| resolve(cwd, &p.to_string_lossy()));
    let implicit = if explicit.is_none() && ex.env_files_read.is_empty() {
        let beside = c.ini_path.parent().map(|d| d.join("uwsgi_env"));
        beside.filter(|p| p.is_file())
    } else {
        None
    };
    if let Some(path) = explicit.or(implicit) {
        let (vars, w) = envfile::read(&path)?;
        warnings.extend(w);
        c.env.extend(vars);
        env_files.push(path);
    }
    c.env.extend(ini_env);

    c.watch_paths.extend(ex.inis_read.iter().cloned());
    c.watch_paths.extend(env_files);
    c.watch_paths.extend(c.touch_reload.iter().cloned());
    let mut seen = HashSet::new();
    c.watch_paths.retain(|p| seen.insert(p.clone()));
    Ok((c, warnings))
}

/// One `env =` option as a variable. Lines a `for-readline` loop brought in obey
/// the env-file rules, checked on the raw line, but take the value uWSGI would
/// (after `$()`, `@()` and `%()` expansion).
fn env_var(opt: &Opt, warnings: &mut Vec<Warning>) -> Result<Option<EnvVar>, ConfigError> {
    let value = opt.value.as_str();
    if let Some(src) = &opt.origin.env_line {
        let kind = envfile::parse_line(&src.raw, &src.path, src.line, warnings)?;
        let LineKind::Var {
            name,
            export_prefix,
            ..
        } = kind
        else {
            return Ok(None);
        };
        if ["$(", "%(", "@("].iter().any(|m| src.raw.contains(m)) {
            warnings.push(Warning {
                path: src.path.clone(),
                line: Some(src.line),
                message: format!("value of {name} contains $(, %( or @(: expanded as uWSGI does"),
            });
        }
        let body = if export_prefix {
            value
                .trim_start()
                .strip_prefix("export ")
                .map_or(value, str::trim_start)
        } else {
            value
        };
        let v = body.split_once('=').map_or("", |(_, v)| v);
        return Ok(Some(EnvVar {
            name,
            value: v.to_string(),
        }));
    }
    match value.split_once('=') {
        Some((name, v)) if !name.is_empty() => Ok(Some(EnvVar {
            name: name.into(),
            value: v.into(),
        })),
        _ => {
            let name: String = value.chars().take(40).collect();
            warnings.push(opt.origin.warning(format!(
                "env = {name}: no '=' (uWSGI would unset the variable); ignored"
            )));
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chmod_accepts_1_and_three_octal_digits_only() {
        assert_eq!(parse_chmod("1"), Some(0o666));
        assert_eq!(parse_chmod("660"), Some(0o660));
        assert_eq!(parse_chmod("007"), Some(0o007));
        for bad in ["", "66", "0660", "888", "abc", "rw"] {
            assert_eq!(parse_chmod(bad), None, "{bad:?}");
        }
    }
}
