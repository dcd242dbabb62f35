//! `amy-emperor status [INI|--pidfile P] [--json]`, with LSB exit codes:
//! 0 running, 1 dead but pidfile exists, 3 not running, 4 unknown.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use crate::cli::StatusArgs;
use crate::control;
use crate::pidfile::{self, Running};

pub fn run(args: &StatusArgs) -> ExitCode {
    let (value, code) = match super::locate_pidfile(&args.target) {
        Err(e) => (json!({"running": false, "error": e}), 4),
        Ok(path) => match pidfile::inspect(&path) {
            Ok(Running::NotRunning) => (json!({"running": false}), 3),
            Ok(Running::Stale(pid)) => (
                json!({"running": false, "stale_pid": pid, "pidfile": path}),
                1,
            ),
            Err(e) => (json!({"running": false, "error": e.to_string()}), 4),
            Ok(Running::Master(pid)) => {
                match control::request(&control::path_for(&path), "status", Duration::from_secs(5))
                {
                    Ok(v) => (v, 0),
                    Err(e) => (
                        json!({"running": true, "pid": pid, "error": e.to_string()}),
                        0,
                    ),
                }
            }
        },
    };
    if args.json {
        println!("{value}");
    } else {
        print!("{}", human(&value));
    }
    ExitCode::from(code)
}

fn human(v: &Value) -> String {
    if super::emperor::is_emperor_answer(v) {
        return super::emperor::human_status(v);
    }
    if v["running"] != json!(true) {
        let mut s = String::from("not running");
        if let Some(pid) = v["stale_pid"].as_i64() {
            s += &format!(" (stale pidfile names pid {pid})");
        }
        if let Some(e) = v["error"].as_str() {
            s += &format!(": {e}");
        }
        return s + "\n";
    }
    let mut s = format!(
        "running: master pid {}, {}, generation {}, up {:.0} s\n",
        v["pid"],
        v["phase"].as_str().unwrap_or("?"),
        v["generation"],
        v["uptime_s"].as_f64().unwrap_or(0.0)
    );
    if let Some(last) = v["last_reload"].as_object() {
        s += &format!("last reload: {}", last["result"].as_str().unwrap_or("?"));
        if let Some(reason) = last.get("reason").and_then(|r| r.as_str()) {
            s += &format!(": {reason}");
        }
        s += "\n";
    }
    s += "worker  pid      gen  state     requests  rss MiB  request age\n";
    for w in v["workers"].as_array().into_iter().flatten() {
        let age = w["request_age_s"]
            .as_f64()
            .map(|a| format!("{a:.1} s"))
            .unwrap_or_else(|| "-".into());
        // serde_json's Display ignores widths: pad strings, not Values.
        s += &format!(
            "{:<7} {:<8} {:<4} {:<9} {:<9} {:<8.1} {}\n",
            w["id"].to_string(),
            w["pid"].to_string(),
            w["generation"].to_string(),
            w["state"].as_str().unwrap_or("?"),
            w["requests"].to_string(),
            w["rss_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
            age
        );
    }
    s
}
