//! Emperor mode on the command line: `start --emperor DIR|GLOB`, `start
//! emperor.ini`, `check emperor.ini`, and how `status` and `reload` print an
//! emperor's answer. The running emperor is [`crate::emperor`].
//!
//! Start-up order, as for a master: config errors exit 2 before anything is
//! touched; the pidfile lock and the control socket are taken before privileges
//! are dropped; the loop runs on a current-thread runtime.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;

use crate::cli::StartArgs;
use crate::config::LoadOptions;
use crate::emperor::config::{self as emperor_config, EmperorConfig};
use crate::emperor::executor::{self, Setup};
use crate::logs::{LogSink, SinkWriter};
use crate::{control, pidfile, privileges};

/// Whether `start INI`/`check INI` should treat the ini as an emperor's.
pub fn is_emperor_ini(ini: &Path) -> bool {
    let Ok(cwd) = std::env::current_dir() else {
        return false;
    };
    let options = LoadOptions {
        environment: std::env::vars_os().collect(),
        cwd,
        ..LoadOptions::default()
    };
    crate::config::is_emperor(ini, &options)
}

/// `start --emperor DIR|GLOB` (`ini` None) or `start emperor.ini`.
pub fn start(ini: Option<&Path>, args: &StartArgs, verbosity: i8) -> ExitCode {
    let config = match read_config(ini, args) {
        Ok(c) => c,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let logto = config.logto.clone().or(config.daemonize.clone());
    // Detach first, while this process has no thread; the parent returns once
    // the emperor is ready (every first vassal served or failed).
    let ready_pipe = if args.daemonize || config.daemonize.is_some() {
        if logto.is_none() {
            eprintln!("amy-emperor: a daemonized emperor needs `daemonize = FILE` or `logto` (its log would be lost)");
            return ExitCode::from(2);
        }
        match super::start::daemonize() {
            Ok(pipe) => pipe,
            Err(e) => {
                eprintln!("amy-emperor: cannot daemonize: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };
    let sink = match &logto {
        Some(path) => match LogSink::open(Some(path), 0) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("{}: cannot open the log: {e}", path.display());
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    match &sink {
        Some(s) => crate::logs::init_tracing(SinkWriter(s.clone()), verbosity),
        None => crate::logs::init_tracing(std::io::stderr, verbosity),
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("amy-emperor: cannot find my own executable: {e}");
            return ExitCode::from(1);
        }
    };
    let mut vassal_args: Vec<OsString> = Vec::new();
    for _ in 0..verbosity.max(0) {
        vassal_args.push("-v".into());
    }
    for _ in 0..verbosity.min(0).unsigned_abs() {
        vassal_args.push("-q".into());
    }
    // The operator's allowances hold for every vassal, as for one instance.
    for key in &args.allow.unsupported {
        vassal_args.push("--allow-unsupported".into());
        vassal_args.push(key.into());
    }
    if args.allow.root_workers {
        vassal_args.push("--allow-root-workers".into());
    }
    if let Some(env_file) = &args.env_file {
        vassal_args.push("--env-file".into());
        vassal_args.push(env_file.clone().into_os_string());
    }
    let (pidfile, control) = match &config.pidfile {
        Some(path) => {
            let held = match pidfile::acquire(path) {
                Ok(p) => p,
                Err(e) => return fail(&e.to_string()),
            };
            match control::bind(path) {
                Ok(c) => (Some(held), Some(c)),
                Err(e) => {
                    held.remove_if_ours();
                    return fail(&e);
                }
            }
        }
        None => (None, None),
    };
    if let Err(e) = privileges::drop_to(config.uid.as_deref(), config.gid.as_deref()) {
        return fail(&e.to_string());
    }
    // Vassals must not claim to be the service: the emperor speaks to systemd.
    let mut environment: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| k != "NOTIFY_SOCKET")
        .collect();
    for kv in &config.env {
        let (k, v) = kv
            .split_once('=')
            .expect("checked when the config was read");
        environment.retain(|(name, _)| name != k);
        environment.push((k.into(), v.into()));
    }
    let environment = crate::emperor::config::vassal_environment(environment);
    let setup = Setup {
        config,
        exe,
        vassal_args,
        environment,
        pidfile,
        control,
        sink,
        ready_pipe,
    };
    // `amy-emperor emperor <ini or directory>`, as a master shows its ini.
    let titled = match (ini, setup.config.monitors.first()) {
        (Some(ini), _) => ini.to_path_buf(),
        (None, Some(m)) => PathBuf::from(m.describe()),
        (None, None) => PathBuf::new(),
    };
    crate::proctitle::set_or_log(&crate::proctitle::emperor(&titled));
    let code = crate::runtime::run_loop(executor::run(setup));
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn fail(message: &str) -> ExitCode {
    tracing::error!(reason = %message, "cannot start the emperor");
    eprintln!("amy-emperor: {message}");
    ExitCode::from(1)
}

fn read_config(ini: Option<&Path>, args: &StartArgs) -> Result<EmperorConfig, String> {
    let cwd =
        std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
    match (ini, &args.emperor) {
        (_, Some(arg)) => {
            let mut c =
                emperor_config::from_arg(arg, &cwd).map_err(|e| format!("amy-emperor: {e}"))?;
            c.pidfile = args.pidfile.as_ref().map(|p| cwd.join(p));
            Ok(c)
        }
        (Some(ini), None) => {
            let options = LoadOptions {
                environment: std::env::vars_os().collect(),
                cwd,
                allow_unsupported: args.allow.unsupported.clone(),
                ..LoadOptions::default()
            };
            let (config, warnings) =
                emperor_config::from_ini(ini, &options).map_err(|e| e.to_string())?;
            for w in warnings {
                eprintln!("{w}");
            }
            Ok(config)
        }
        (None, None) => Err("amy-emperor: no emperor directory".into()),
    }
}

/// `check emperor.ini`: the emperor's keys, validated as `start` reads them.
pub fn check(ini: &Path) -> ExitCode {
    let args = StartArgs {
        ini: Some(ini.to_path_buf()),
        env_file: None,
        daemonize: false,
        emperor: None,
        pidfile: None,
        vassal_set: Vec::new(),
        vassal_include: Vec::new(),
        allow: Default::default(),
    };
    match read_config(Some(ini), &args) {
        Ok(c) => {
            let monitors: Vec<String> = c.monitors.iter().map(|m| m.describe()).collect();
            println!(
                "{}: valid emperor config (vassals: {}{})",
                ini.display(),
                monitors.join(", "),
                if c.tyrant { "; tyrant mode" } else { "" }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// Whether a control answer comes from an emperor.
pub fn is_emperor_answer(v: &Value) -> bool {
    v["role"] == "emperor"
}

/// `status` of an emperor, for people.
pub fn human_status(v: &Value) -> String {
    let mut s = format!(
        "emperor: pid {}, {}, up {:.0} s, watching {}{}\n",
        v["pid"],
        v["phase"].as_str().unwrap_or("?"),
        v["uptime_s"].as_f64().unwrap_or(0.0),
        v["monitors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        if v["tyrant"] == true { " (tyrant)" } else { "" },
    );
    let vassals = v["vassals"].as_array().cloned().unwrap_or_default();
    if vassals.is_empty() {
        s += "no vassals\n";
    }
    for x in &vassals {
        let workers = x["workers"].as_array().map(Vec::len);
        s += &format!(
            "{}: {}{}{}, restarts {}",
            x["file"].as_str().unwrap_or("?"),
            x["state"].as_str().unwrap_or("?"),
            x["pid"]
                .as_i64()
                .map(|p| format!(", master pid {p}"))
                .unwrap_or_default(),
            workers
                .map(|n| format!(", {n} workers"))
                .unwrap_or_default(),
            x["restarts"],
        );
        if let Some(last) = x["last_reload"].as_object() {
            s += &format!(", last reload {}", last["result"].as_str().unwrap_or("?"));
        }
        if let Some(reason) = x["reason"].as_str() {
            s += &format!(" ({reason})");
        }
        if let Some(e) = x["error"].as_str() {
            s += &format!(" [{e}]");
        }
        s += "\n";
        for w in x["workers"].as_array().into_iter().flatten() {
            s += &format!(
                "  worker {} pid {} gen {} {} requests {}\n",
                w["id"],
                w["pid"],
                w["generation"],
                w["state"].as_str().unwrap_or("?"),
                w["requests"]
            );
        }
    }
    s
}

/// `reload` of an emperor: one line per vassal; success only if every vassal
/// serves its new generation.
pub fn report_reload(answer: &Value) -> Result<super::Done, super::CommandError> {
    let vassals = answer["vassals"].as_array().cloned().unwrap_or_default();
    let mut failed = Vec::new();
    for v in &vassals {
        let result = v["result"].as_str().unwrap_or("unknown");
        let file = v["file"].as_str().unwrap_or("?");
        if result == "serving" {
            println!("{file}: reloaded, generation {} serving", v["generation"]);
        } else {
            failed.push(format!(
                "{file}: reload {result}: {}",
                v["reason"].as_str().unwrap_or("unknown reason")
            ));
        }
    }
    if vassals.is_empty() {
        println!("no vassals to reload");
    }
    if failed.is_empty() {
        Ok(super::Done::Success)
    } else {
        Err(super::CommandError::Failed(failed.join("\n")))
    }
}
