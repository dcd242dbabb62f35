//! `amy-emperor check [INI] [--show-config] [--show-secrets] [--env-file PATH]
//! [--allow-exec] [--allow-unsupported KEY]… [--allow-root-workers]`.
//!
//! Loads the config exactly as `start` and reload do (the same rules, the same
//! host checks), so exit 0 means `start` would accept it. Warnings go to stderr
//! as `path:line: warning: …`, the error as `path:line: reason`. A valid config
//! ends with one `path: ok (N warnings)` line. `--show-config` prints uWSGI's
//! `--show-config` block on stdout whenever the ini could be read and expanded,
//! even if the typed config is then refused. No `@(exec://…)` command runs
//! unless `--allow-exec`.

use super::{CommandError, Done};
use crate::cli::CheckArgs;
use crate::config::{self, ExecPolicy, LoadOptions};

pub fn run(args: &CheckArgs) -> Result<Done, CommandError> {
    let ini = args.ini.clone().unwrap_or_else(|| "amy_uwsgi.ini".into());
    let cwd = std::env::current_dir().map_err(|e| {
        CommandError::Invalid(format!(
            "amy-emperor: cannot read the current directory: {e}"
        ))
    })?;
    let options = LoadOptions {
        env_file: args.env_file.clone(),
        environment: std::env::vars_os().collect(),
        cwd: cwd.clone(),
        allow_unsupported: args.allow.unsupported.clone(),
        allow_root_workers: args.allow.root_workers,
        exec: if args.allow_exec {
            ExecPolicy::RunAndSay
        } else {
            ExecPolicy::Refuse
        },
        as_root: None,
        vassal: Default::default(),
    };
    let (resolved, outcome) = config::load_with_resolved(&ini, &options);
    if let Ok(loaded) = &outcome {
        for w in &loaded.warnings {
            eprintln!("{w}");
        }
    }
    if args.show_config {
        if let Some(mut resolved) = resolved {
            // uWSGI lists the ini as given on its command line (the first `ini`:
            // options from UWSGI_* environment variables come before it).
            if let Some(first) = resolved.iter_mut().find(|(key, _)| key == "ini") {
                first.1 = ini.to_string_lossy().into_owned();
            }
            print!("{}", config::show::render(&resolved, args.show_secrets));
        }
    }
    match outcome {
        Ok(loaded) => {
            let n = loaded.warnings.len();
            let line = format!(
                "{}: ok ({n} warning{})",
                loaded.config.ini_path.display(),
                if n == 1 { "" } else { "s" }
            );
            if args.show_config {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
            Ok(Done::Success)
        }
        Err(e) => Err(CommandError::Invalid(e.to_string())),
    }
}
