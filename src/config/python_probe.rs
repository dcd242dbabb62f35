//! What only the app's Python can answer, asked at load so that `check` (and a
//! reload) fail where the worker would: is `gevent` importable, and does every
//! route regexp compile.
//!
//! Route regexps are compiled by the worker with Python's `re`; uWSGI compiles
//! them with PCRE. Validating them in Rust (the `regex` crate) would judge a
//! third dialect: it refuses lookarounds and backreferences that both PCRE and
//! `re` accept, and accepts nothing `re` would refuse more reliably than `re`
//! itself. So the interpreter the workers run (`home`'s `bin/python`, else
//! `python3`) compiles them, once per load, in one short process that is only
//! started when the config has route regexps or `gevent`. Where PCRE and `re`
//! differ is listed in docs/migrating-from-uwsgi.md (`route`).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;

use super::{Config, ConfigError, ErrorKind};

/// A Python start plus `import re` takes ~30 ms; a host that cannot do it in
/// this long could not start a worker either.
const TIMEOUT: Duration = Duration::from_secs(20);

const SCRIPT: &str = r#"
import json, sys
req = json.load(sys.stdin)
sys.path[:0] = req["pythonpath"]
out = []
for item in req["items"]:
    try:
        if "module" in item:
            import importlib.util
            out.append(None if importlib.util.find_spec(item["module"]) else "not installed")
        else:
            import re
            re.compile(item["regexp"])
            out.append(None)
    except Exception as e:
        out.append("%s: %s" % (type(e).__name__, e))
sys.stdout.write(json.dumps({"version": sys.version.split()[0], "results": out}))
"#;

#[derive(Deserialize)]
struct Answer {
    version: String,
    results: Vec<Option<String>>,
}

/// The interpreter the workers run (worker/spawn.rs `python_for` agrees).
fn python_of(c: &Config) -> PathBuf {
    match &c.home {
        Some(home) => home.join("bin").join("python"),
        None => PathBuf::from("python3"),
    }
}

/// Runs the checks that need the app's Python; nothing is started when the
/// config has neither `gevent` nor a route regexp.
pub fn check(c: &Config, environment: &[(OsString, OsString)]) -> Result<(), ConfigError> {
    let s = &c.serving;
    if let (Some((n, origin)), false) = (&s.async_cores, s.loop_gevent) {
        return Err(origin.error(
            ErrorKind::Unsupported,
            format!("\"async\" = {n} is not supported without loop = gevent: uWSGI's plain async mode needs an app written for uwsgi.suspend(); each worker would serve one request at a time (use gevent = {n})"),
        ));
    }
    if s.loop_gevent && s.gevent == 0 {
        return Err(at_gevent(
            c,
            ErrorKind::InvalidValue,
            "loop = gevent needs async = N, the greenlets per worker (uWSGI: \"the gevent loop engine requires async mode\")".to_string(),
        ));
    }
    if s.gevent > 0 && c.threads > 1 {
        return Err(at_gevent(
            c,
            ErrorKind::Unsupported,
            format!(
                "gevent = {} with threads = {} is not supported: a gevent worker serves its greenlets on one thread; drop threads",
                s.gevent, c.threads
            ),
        ));
    }
    let mut items = Vec::new();
    if s.gevent > 0 {
        items.push(json!({"module": "gevent"}));
    }
    for (_, re) in &s.regexps {
        items.push(json!({"regexp": re}));
    }
    if items.is_empty() {
        return Ok(());
    }
    let python = python_of(c);
    let request = json!({"pythonpath": c.pythonpath, "items": items}).to_string();
    let answer = run(&python, c, environment, &request).map_err(|why| {
        ConfigError::new(
            ErrorKind::Missing,
            c.ini_path.clone(),
            None,
            format!(
                "could not run {} to check {}: {why}",
                python.display(),
                if s.gevent > 0 {
                    "that gevent is installed and the route regexps compile"
                } else {
                    "that the route regexps compile"
                }
            ),
        )
    })?;
    let mut results = answer.results.into_iter();
    if s.gevent > 0 {
        if let Some(Some(why)) = results.next() {
            return Err(at_gevent(
                c,
                ErrorKind::Missing,
                format!(
                    "gevent = {}: the app's Python ({}, Python {}) cannot import gevent ({why}): install gevent in that virtualenv, or remove gevent (each worker would then serve one request at a time)",
                    s.gevent,
                    python.display(),
                    answer.version
                ),
            ));
        }
    }
    for ((origin, re), result) in s.regexps.iter().zip(results) {
        if let Some(why) = result {
            return Err(origin.error(
                ErrorKind::InvalidValue,
                format!(
                    "route regexp {re:?} does not compile in Python {}'s re, which the worker uses (uWSGI uses PCRE): {why}",
                    answer.version
                ),
            ));
        }
    }
    Ok(())
}

fn at_gevent(c: &Config, kind: ErrorKind, message: String) -> ConfigError {
    match &c.serving.gevent_origin {
        Some(o) => o.error(kind, message),
        None => ConfigError::new(kind, c.ini_path.clone(), None, message),
    }
}

fn run(
    python: &Path,
    c: &Config,
    environment: &[(OsString, OsString)],
    request: &str,
) -> Result<Answer, String> {
    let mut cmd = Command::new(python);
    cmd.arg("-c")
        .arg(SCRIPT)
        .env_clear()
        .envs(environment.iter().map(|(k, v)| (k, v)))
        .envs(c.env.iter().map(|v| (&v.name, &v.value)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(dir) = c.chdir.as_ref().filter(|d| d.is_dir()) {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    // The request is small (a pipe holds it): written whole before reading.
    let written = child
        .stdin
        .take()
        .expect("piped")
        .write_all(request.as_bytes());
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).map(|_| out)
    });
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer in {} s", TIMEOUT.as_secs()));
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let out = reader
        .join()
        .map_err(|_| "reader thread panicked".to_string())?
        .map_err(|e| e.to_string())?;
    written.map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("it exited with {status}"));
    }
    serde_json::from_slice(&out).map_err(|e| format!("unreadable answer: {e}"))
}
