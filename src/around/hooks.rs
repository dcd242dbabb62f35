//! Master-side hooks (`hook-as-root`, `hook-as-user`, `hook-master-start` and
//! their `exec-` forms), run in order and waited for, as uWSGI's `core/hooks.c`
//! does. A failing `exec:` is fatal for the instance (uWSGI: "FATAL hook failed,
//! destroying instance"); `safeexec:` only logs. The worker-side phases
//! (`pre app`, `post app`, `accepting`) run in the Python worker (`hooks.py`).

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::process::Stdio;

use tracing::{info, warn};

use crate::config::around::{HookAction, HookPhase};
use crate::config::Config;

/// Runs the master hooks of `phase`. `log` receives the commands' output
/// (inherited stdout/stderr when `None`). `Err` says which hook failed and how.
pub fn run_master_phase(
    config: &Config,
    phase: HookPhase,
    env: &[(OsString, OsString)],
    log: Option<&OwnedFd>,
) -> Result<(), String> {
    for hook in config.around.hooks.phase(phase) {
        info!(hook = %hook.text, phase = phase.as_str(), "running hook");
        match &hook.action {
            HookAction::Exec { command, fatal } => {
                let mut cmd = std::process::Command::new("/bin/sh");
                cmd.arg("-c")
                    .arg(command)
                    .env_clear()
                    .envs(env.iter().map(|(k, v)| (k, v)));
                cmd.stdin(Stdio::null());
                if let Some(dir) = &config.chdir {
                    cmd.current_dir(dir);
                }
                if let Some(fd) = log {
                    if let (Ok(a), Ok(b)) = (fd.try_clone(), fd.try_clone()) {
                        cmd.stdout(Stdio::from(a)).stderr(Stdio::from(b));
                    }
                }
                let status = cmd
                    .status()
                    .map_err(|e| format!("hook \"{}\" ({}): {e}", hook.text, phase.as_str()))?;
                if !status.success() {
                    let why = format!(
                        "command \"{command}\" exited with non-zero code: {} ({} hook, line {})",
                        super::describe(&Ok(status)),
                        phase.as_str(),
                        hook.line
                    );
                    if *fatal {
                        return Err(why);
                    }
                    warn!(reason = %why, "hook failed (safeexec: carrying on)");
                }
            }
            HookAction::Log(text) => info!(text = %text, "hook"),
            HookAction::Mkdir(path) => std::fs::create_dir(path)
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| format!("hook \"{}\": {e}", hook.text))?,
            HookAction::Unlink(path) => {
                // uWSGI logs and carries on when the file is missing.
                if let Err(e) = std::fs::remove_file(path) {
                    warn!(path = %path.display(), error = %e, "hook unlink failed");
                }
            }
            HookAction::Write { path, text, append } => {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .append(*append)
                    .truncate(!*append)
                    .open(path)
                    .map_err(|e| format!("hook \"{}\": {e}", hook.text))?;
                f.write_all(text.as_bytes())
                    .map_err(|e| format!("hook \"{}\": {e}", hook.text))?;
            }
            HookAction::Equivalent(why) => {
                info!(hook = %hook.text, why = %why, "hook is already our behaviour")
            }
            // Refused by the config for master phases.
            HookAction::Chdir(_) | HookAction::Putenv(_) => {
                return Err(format!("hook \"{}\" cannot run in the master", hook.text))
            }
        }
    }
    Ok(())
}

/// The worker-side hooks as the worker JSON carries them:
/// `{"pre_app": [{"text", "kind", "arg", "fatal", "path", "append"}], …}`.
pub fn worker_json(config: &Config) -> serde_json::Value {
    use serde_json::json;
    let mut phases = serde_json::Map::new();
    for (phase, name) in [
        (HookPhase::PreApp, "pre_app"),
        (HookPhase::PostApp, "post_app"),
        (HookPhase::Accepting, "accepting"),
    ] {
        let list: Vec<_> = config
            .around
            .hooks
            .phase(phase)
            .map(|h| {
                let (kind, arg, extra) = match &h.action {
                    HookAction::Exec { command, fatal } => {
                        ("exec", command.clone(), json!({"fatal": fatal}))
                    }
                    HookAction::Log(t) => ("log", t.clone(), json!({})),
                    HookAction::Mkdir(p) => ("mkdir", p.display().to_string(), json!({})),
                    HookAction::Unlink(p) => ("unlink", p.display().to_string(), json!({})),
                    HookAction::Write { path, text, append } => (
                        "write",
                        path.display().to_string(),
                        json!({"text": text, "append": append}),
                    ),
                    HookAction::Chdir(p) => ("chdir", p.display().to_string(), json!({})),
                    HookAction::Putenv(kv) => ("putenv", kv.clone(), json!({})),
                    HookAction::Equivalent(why) => ("log", why.clone(), json!({})),
                };
                let mut o = json!({"text": h.text, "kind": kind, "arg": arg, "line": h.line});
                if let (Some(o), Some(extra)) = (o.as_object_mut(), extra.as_object()) {
                    o.extend(extra.clone());
                }
                o
            })
            .collect();
        if !list.is_empty() {
            phases.insert(name.into(), serde_json::Value::Array(list));
        }
    }
    serde_json::Value::Object(phases)
}
