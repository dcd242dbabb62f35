//! `amy-emperor completions SHELL` and `amy-emperor man`: generated from the clap
//! definitions in `cli.rs`, so they cannot drift from the real command line.
//! Printed on stdout for packagers (`amy-emperor man > amy-emperor.1`).

use std::io::Write;

use clap::CommandFactory;

use super::{CommandError, Done};
use crate::cli::{Cli, CompletionsArgs};

pub fn completions(args: &CompletionsArgs) -> Result<Done, CommandError> {
    let mut command = Cli::command();
    let name = command.get_name().to_string();
    clap_complete::generate(args.shell, &mut command, name, &mut std::io::stdout());
    Ok(Done::Success)
}

pub fn man() -> Result<Done, CommandError> {
    let mut page = Vec::new();
    render_man(&mut page).map_err(|e| {
        CommandError::Failed(format!("amy-emperor: cannot render the man page: {e}"))
    })?;
    std::io::stdout()
        .write_all(&page)
        .map_err(|_| CommandError::StdoutClosed)?;
    Ok(Done::Success)
}

/// The main page, then one section per subcommand (clap_mangen renders one
/// command per page; a single page is what `man amy-emperor` wants).
pub fn render_man(out: &mut Vec<u8>) -> std::io::Result<()> {
    let command = Cli::command();
    clap_mangen::Man::new(command.clone()).render(out)?;
    for sub in command.get_subcommands() {
        if sub.is_hide_set() {
            continue;
        }
        writeln!(out, ".SH \"{}\"", sub.get_name().to_uppercase())?;
        // clap's names are &'static; a page is rendered once per process.
        let title: &'static str = format!("amy-emperor {}", sub.get_name()).leak();
        let man = clap_mangen::Man::new(sub.clone().name(title));
        man.render_description_section(out)?;
        man.render_synopsis_section(out)?;
        man.render_options_section(out)?;
    }
    out.extend_from_slice(EXIT_AND_SIGNALS.as_bytes());
    Ok(())
}

/// What clap does not know: exit codes and signals (README.md's "Commands and
/// exit codes" and "Signals to the master" say the same; init scripts depend on them).
const EXIT_AND_SIGNALS: &str = r#".SH "EXIT STATUS"
start: 0 clean stop, 1 runtime halt, 2 config or usage error.
stop: 0 stopped or not running, 1 timed out, 4 bad pidfile.
reload: 0 new generation serving, 1 rejected, 3 not running.
status: 0 running, 1 dead but pidfile exists, 3 not running, 4 unknown.
check: 0 valid, 2 invalid.
.SH SIGNALS
SIGHUP graceful reload; SIGTERM graceful stop; SIGINT, SIGQUIT fast stop;
SIGUSR1 stats summary in the log; SIGUSR2 reopen the log files.
The emperor forwards SIGHUP and SIGUSR2 to every vassal and stops them all on SIGTERM.
.SH FILES
The instance's pidfile, its control socket PIDFILE.ctl, its sockets and logto.
.SH "SEE ALSO"
nginx(8), uwsgi(1), docs/migrating-from-uwsgi.md
"#;
