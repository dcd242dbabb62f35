//! `amy-emperor reload [INI|--pidfile P]`: ask the master for a graceful reload
//! and wait for the outcome. 0 serving, 1 rejected or failed, 3 not running.

use std::process::ExitCode;
use std::time::Duration;

use crate::cli::ReloadArgs;
use crate::control;
use crate::pidfile::{self, Running};

pub fn run(args: &ReloadArgs) -> ExitCode {
    let path = match super::locate_pidfile(&args.target) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("amy-emperor: {e}");
            return ExitCode::from(3);
        }
    };
    match pidfile::inspect(&path) {
        Ok(Running::Master(_)) => {}
        Ok(_) => {
            eprintln!("amy-emperor: not running");
            return ExitCode::from(3);
        }
        Err(e) => {
            eprintln!("amy-emperor: {e}");
            return ExitCode::from(3);
        }
    }
    let timeout = Duration::from_secs_f64(args.timeout.max(1.0));
    let answer = match control::request(&control::path_for(&path), "reload", timeout) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("amy-emperor: {e}");
            return ExitCode::from(3);
        }
    };
    if super::emperor::is_emperor_answer(&answer) {
        return super::emperor::report_reload(&answer);
    }
    match answer["result"].as_str() {
        Some("serving") => {
            println!("reloaded: generation {} serving", answer["generation"]);
            ExitCode::SUCCESS
        }
        Some(result) => {
            eprintln!(
                "reload {result}: {}",
                answer["reason"].as_str().unwrap_or("unknown reason")
            );
            ExitCode::from(1)
        }
        None => {
            eprintln!("amy-emperor: unexpected answer: {answer}");
            ExitCode::from(1)
        }
    }
}
