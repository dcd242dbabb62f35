//! `amy-emperor reload [INI|--pidfile P]`: ask the master for a graceful reload
//! and wait for the outcome. 0 serving, 1 rejected or failed, 3 not running.

use std::time::Duration;

use super::{CommandError, Done};
use crate::cli::ReloadArgs;
use crate::control;
use crate::pidfile::{self, Running};
use crate::supervisor::status::{ReloadReport, ReloadResult};

pub fn run(args: &ReloadArgs) -> Result<Done, CommandError> {
    let not_running = |e: String| CommandError::NotRunning(format!("amy-emperor: {e}"));
    let path = super::locate_pidfile(&args.target).map_err(not_running)?;
    match pidfile::inspect(&path) {
        Ok(Running::Master(_)) => {}
        Ok(_) => return Err(not_running("not running".into())),
        Err(e) => return Err(not_running(e.to_string())),
    }
    let timeout = Duration::from_secs_f64(args.timeout.max(1.0));
    let value: serde_json::Value =
        match control::request(&control::path_for(&path), "reload", timeout) {
            Ok(a) => a,
            Err(e @ control::ControlError::Unexpected { .. }) => {
                return Err(CommandError::Failed(format!("amy-emperor: {e}")))
            }
            Err(e) => return Err(not_running(e.to_string())),
        };
    // An emperor answers for each of its vassals.
    if super::emperor::is_emperor_answer(&value) {
        return super::emperor::report_reload(&value);
    }
    let answer: ReloadReport = serde_json::from_value(value.clone())
        .map_err(|_| CommandError::Failed(format!("amy-emperor: unexpected answer: {value}")))?;
    match answer.result {
        ReloadResult::Serving => {
            println!(
                "reloaded: generation {} serving",
                answer
                    .generation
                    .map(|g| g.to_string())
                    .unwrap_or_else(|| "null".into())
            );
            Ok(Done::Success)
        }
        result => Err(CommandError::Failed(format!(
            "reload {}: {}",
            result.as_str(),
            answer.reason.as_deref().unwrap_or("unknown reason")
        ))),
    }
}
