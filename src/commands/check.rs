//! `amy-emperor check [INI] [--show-config] [--show-secrets] [--env-file PATH]`.
//!
//! Loads the config exactly as `start` and reload do, prints warnings as
//! `path:line: warning: …` and errors as `path:line: reason` on stderr, and with
//! `--show-config` prints uWSGI's `--show-config` block on stdout.

use std::process::ExitCode;

use crate::cli::CheckArgs;
use crate::config::{self, LoadOptions, Warning};

fn print_warning(w: &Warning) {
    match w.line {
        Some(line) => eprintln!("{}:{}: warning: {}", w.path.display(), line, w.message),
        None => eprintln!("{}: warning: {}", w.path.display(), w.message),
    }
}

pub fn run(args: &CheckArgs) -> ExitCode {
    let ini = args.ini.clone().unwrap_or_else(|| "amy_uwsgi.ini".into());
    if super::emperor::is_emperor_ini(&ini) {
        return super::emperor::check(&ini);
    }
    let cwd = match std::env::current_dir() {
        Ok(cwd) => cwd,
        Err(e) => {
            eprintln!("amy-emperor: cannot read the current directory: {e}");
            return ExitCode::from(2);
        }
    };
    let options = LoadOptions {
        env_file: args.env_file.clone(),
        environment: std::env::vars_os().collect(),
        cwd,
        vassal: Default::default(),
    };
    match config::load(&ini, &options) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                print_warning(w);
            }
            if args.show_config {
                let mut resolved = loaded.resolved.clone();
                // uWSGI lists the ini as given on its command line.
                if let Some(first) = resolved.first_mut() {
                    first.1 = ini.to_string_lossy().into_owned();
                }
                print!("{}", config::show::render(&resolved, args.show_secrets));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
