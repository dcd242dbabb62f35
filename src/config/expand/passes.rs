//! The three expansion passes over every non-immediate value, in uWSGI's
//! order: `$(NAME)` from the environment, `@(file)` (or `@(exec://cmd)`) with
//! the file's contents or the command's output, `%(name)` with the first
//! option of that name (or placeholder math).

use std::ffi::OsString;
use std::path::Path;

use super::{Expander, Origin};
use crate::config::{keys, source, ConfigError, ErrorKind};

/// Substitutions per value before we call an expansion endless (`a = x%(a)`).
const MAX_SUBSTITUTIONS: usize = 10_000;
/// The longest value an expansion may produce: beyond any real option (uWSGI's
/// own buffers stop at 64 KiB for most of them), and small enough that a value
/// growing by itself is refused in well under a second.
const MAX_VALUE_LEN: usize = 64 * 1024;

/// What `@(exec://…)` may do in this load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecPolicy {
    /// `start` and reload: run it, as uWSGI does.
    #[default]
    Run,
    /// `check --allow-exec`: run it and say so in a warning.
    RunAndSay,
    /// `check`: never run a command.
    Refuse,
}

/// How long an `@(exec://…)` command may take before the load fails.
const EXEC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `/bin/sh -c command` in `cwd` with `environment`, stdin from /dev/null,
/// and returns its stdout (at most [`MAX_VALUE_LEN`] bytes), within [`EXEC_TIMEOUT`].
///
/// A reload reads its config on a thread while the master loop runs on, so the
/// command is made like any process of the instance: its own process group
/// (killed whole at the timeout), owned for the orphan reaper (which would
/// otherwise take its exit status), and carrying the instance marker, so a
/// stop in the middle of it stops it too (`crate::leftovers`).
fn exec_output(
    command: &str,
    cwd: &Path,
    environment: &[(OsString, OsString)],
) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .current_dir(cwd)
        .env_clear()
        .envs(environment.iter().map(|(k, v)| (k, v)))
        .env(crate::leftovers::MARKER, crate::leftovers::marker())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run /bin/sh: {e}"))?;
    let pid = child.id() as i32;
    crate::reaper::adopt(pid);
    let mut stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = (&mut stdout)
            .take(MAX_VALUE_LEN as u64 + 1)
            .read_to_end(&mut out);
        let _ = tx.send(out);
    });
    let deadline = std::time::Instant::now() + EXEC_TIMEOUT;
    let kill_group = || {
        // The whole group: what the shell started holds the pipe too.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    };
    let timed_out = || {
        format!(
            "the command did not finish within {} s",
            EXEC_TIMEOUT.as_secs()
        )
    };
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            _ => {
                kill_group();
                let _ = child.wait();
                return Err(timed_out());
            }
        }
    }
    // The shell is gone, but a process it left in the background may still
    // hold its stdout open: wait for EOF only until the deadline.
    let remaining = deadline.saturating_duration_since(std::time::Instant::now());
    let Ok(out) = rx.recv_timeout(remaining) else {
        kill_group();
        return Err(timed_out());
    };
    if out.len() > MAX_VALUE_LEN {
        return Err(format!(
            "the command printed more than {MAX_VALUE_LEN} bytes"
        ));
    }
    Ok(out)
}

impl Expander<'_> {
    /// The `$()`, `@()` and `%()` passes over every non-immediate value.
    pub fn expand(&mut self) -> Result<(), ConfigError> {
        for symbol in [b'$', b'@', b'%'] {
            for i in 0..self.opts.len() {
                if !self.opts[i].configured {
                    self.expand_one(i, symbol)?;
                }
            }
        }
        Ok(())
    }

    fn hook(
        &mut self,
        symbol: u8,
        key: &str,
        origin: &Origin,
    ) -> Result<Option<String>, ConfigError> {
        match symbol {
            b'$' => {
                let found = self.getenv(key);
                self.charge(found.as_ref().map_or(0, String::len), origin)?;
                Ok(found)
            }
            b'@' => {
                let mut raw = match key.strip_prefix("exec://") {
                    Some(command) => self.run_exec(command, origin)?,
                    None if super::uwsgi_scheme(key).is_some() => {
                        return Err(origin.error(
                            ErrorKind::Unsupported,
                            format!(
                                "@({key}): only files and exec:// are read by @(), not {}://",
                                super::uwsgi_scheme(key).unwrap_or_default()
                            ),
                        ))
                    }
                    None => {
                        let path = self.cwd().join(key);
                        source::read_regular(&path, MAX_VALUE_LEN as u64, "@() source").map_err(
                            |e| {
                                origin.error(
                                    e.kind,
                                    format!(
                                        "cannot read file \"{key}\" for @({key}): {}",
                                        e.message
                                    ),
                                )
                            },
                        )?
                    }
                };
                self.charge(raw.len(), origin)?;
                if matches!(raw.last(), Some(b'\n' | b'\r')) {
                    raw.pop();
                }
                if let Some(nul) = raw.iter().position(|&b| b == 0) {
                    raw.truncate(nul);
                }
                Ok(Some(String::from_utf8_lossy(&raw).into_owned()))
            }
            _ => self.placeholder(key, origin),
        }
    }

    /// `@(exec://command)`: uWSGI runs `/bin/sh -c command` and reads its
    /// stdout to EOF, whatever its exit status. We do the same at start and
    /// reload; `check` runs nothing unless `--allow-exec` (and then says so).
    fn run_exec(&mut self, command: &str, origin: &Origin) -> Result<Vec<u8>, ConfigError> {
        match self.exec {
            ExecPolicy::Refuse => {
                return Err(origin.error(
                    ErrorKind::Exec,
                    format!(
                        "@(exec://{command}): check runs no command unless --allow-exec is given"
                    ),
                ))
            }
            ExecPolicy::RunAndSay => self.warnings.push(origin.warning(format!(
                "@(exec://{command}): ran the command (--allow-exec)"
            ))),
            ExecPolicy::Run => {}
        }
        exec_output(command, self.cwd(), self.environment)
            .map_err(|e| origin.error(ErrorKind::Exec, format!("@(exec://{command}): {e}")))
    }

    /// `uwsgi_manage_placeholder`: a name, or the math/concat form when the
    /// reference holds a space (`%(processes cores + 2)`). Every copy is
    /// accounted for, and a concatenation is bounded by [`MAX_VALUE_LEN`]
    /// before it is built.
    fn placeholder(&mut self, key: &str, origin: &Origin) -> Result<Option<String>, ConfigError> {
        if !key.contains(' ') {
            return self.first_value_charged(key, origin);
        }
        #[derive(Clone, Copy, PartialEq)]
        enum Op {
            Concat,
            Sum,
            Sub,
            Mul,
            Div,
        }
        let mut state = Op::Concat;
        let mut current: Option<String> = None;
        for token in key.split(' ').filter(|t| !t.is_empty()) {
            let value = match token {
                "+" => {
                    state = Op::Sum;
                    continue;
                }
                "-" => {
                    state = Op::Sub;
                    continue;
                }
                "*" => {
                    state = Op::Mul;
                    continue;
                }
                "/" => {
                    state = Op::Div;
                    continue;
                }
                "++" | "--" => {
                    if let Some(c) = &current {
                        let n = strtoll(c);
                        let n = if token == "++" {
                            n.wrapping_add(1)
                        } else {
                            n.wrapping_sub(1)
                        };
                        current = Some(n.to_string());
                    }
                    state = Op::Concat;
                    continue;
                }
                t if is_a_number(t) => t.to_string(),
                t => self.first_value_charged(t, origin)?.unwrap_or_default(),
            };
            let a = current.as_deref().map_or(0, strtoll);
            let b = strtoll(&value);
            if state == Op::Concat {
                let len = current.as_ref().map_or(0, String::len) + value.len();
                if len > MAX_VALUE_LEN {
                    return Err(origin.error(
                        ErrorKind::TooLarge,
                        format!("%({key}): the placeholder grows past {MAX_VALUE_LEN} bytes"),
                    ));
                }
                self.charge(len, origin)?;
            }
            current = Some(match state {
                Op::Concat => format!("{}{}", current.as_deref().unwrap_or(""), value),
                Op::Sum => a.wrapping_add(b).to_string(),
                Op::Sub => a.wrapping_sub(b).to_string(),
                Op::Mul => a.wrapping_mul(b).to_string(),
                Op::Div => if b == 0 { 0 } else { a.wrapping_div(b) }.to_string(),
            });
            state = Op::Concat;
        }
        Ok(current)
    }

    /// `uwsgi_apply_config_pass` on one option, byte for byte: after each
    /// substitution the scan restarts at index 1 (uWSGI sets `j = 0` before `j++`).
    fn expand_one(&mut self, i: usize, symbol: u8) -> Result<(), ConfigError> {
        let origin = self.opts[i].origin.clone();
        self.charge(self.opts[i].value.len(), &origin)?;
        let mut substitutions = 0;
        let mut has: usize = 0;
        let mut depth: usize = 0;
        let mut key_start: usize = 0;
        let mut j: usize = 0;
        loop {
            let value = self.opts[i].value.as_bytes();
            if j >= value.len() {
                break;
            }
            let c = value[j];
            if c == symbol {
                has = 1;
            } else if c == b'(' && has == 1 {
                has = 2;
                depth = 0;
                key_start = j + 1;
            } else if has > 1 {
                if c == b'(' {
                    has += 1;
                    depth += 1;
                } else if c == b')' {
                    if depth > 0 {
                        has += 1;
                        depth -= 1;
                        j += 1;
                        continue;
                    }
                    if has <= 2 {
                        has = 0;
                        j += 1;
                        continue;
                    }
                    let key_len = has - 2;
                    // The key alone is copied (the hook needs `&mut self`);
                    // the value is rebuilt below only once its size is known.
                    let key = self.opts[i].value[key_start..key_start + key_len].to_string();
                    let key = key.as_str();
                    has = 0;
                    let Some(replacement) = self.hook(symbol, key, &origin)? else {
                        j += 1;
                        continue;
                    };
                    substitutions += 1;
                    if substitutions > MAX_SUBSTITUTIONS {
                        return Err(origin.error(
                            ErrorKind::Syntax,
                            format!(
                            "{}: the expansion of {} never ends (a value that refers to itself?)",
                            self.opts[i].key, symbol as char
                        ),
                        ));
                    }
                    // A value that refers to itself through its own first
                    // definition doubles at each pass: bound the size, not only
                    // the count, or a typo eats the host's memory (on a reload,
                    // the master's).
                    let value = &self.opts[i].value;
                    let grown = value.len() - key_len - 3 + replacement.len();
                    if grown > MAX_VALUE_LEN {
                        return Err(origin.error(ErrorKind::TooLarge, format!(
                            "{}: the expansion of {} grows past {} bytes (a value that refers to itself?)",
                            self.opts[i].key,
                            symbol as char,
                            MAX_VALUE_LEN
                        )));
                    }
                    // The rebuild, and the rescan from the start that follows it.
                    self.charge(2 * grown, &origin)?;
                    let value = &self.opts[i].value;
                    let new = format!(
                        "{}{}{}",
                        &value[..key_start - 2],
                        replacement,
                        &value[key_start + key_len + 1..]
                    );
                    self.opts[i].value = new;
                    j = 1;
                    continue;
                } else {
                    has += 1;
                }
            } else {
                has = 0;
            }
            j += 1;
        }
        Ok(())
    }
}

/// `is_a_number`: every byte a digit (the empty string counts, as in uWSGI).
fn is_a_number(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

/// C `strtoll(s, NULL, 10)`.
fn strtoll(s: &str) -> i64 {
    keys::atoi(s)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{dir, kv, run, write};
    use super::ExecPolicy;
    use crate::config::ErrorKind;

    #[test]
    fn env_file_and_placeholder_passes_in_uwsgis_order() {
        let d = dir("passes");
        write(&d, "secret.txt", "s3cret\n");
        write(
            &d,
            "a.ini",
            "[uwsgi]\nph = first\nph = second\na = $(HOME)-$(NOPE)\nb = @(secret.txt)\nc = %(ph)\nn = %(two * two + 1)\ntwo = 2\n",
        );
        let r = run(&d, "a.ini", &[("HOME", "/home/amy")], ExecPolicy::Refuse).unwrap();
        let kv = kv(&r);
        assert!(kv.contains(&("a", "/home/amy-$(NOPE)")));
        assert!(kv.contains(&("b", "s3cret")));
        assert!(kv.contains(&("c", "first")));
        assert!(kv.contains(&("n", "5")));
    }

    #[test]
    fn a_missing_at_file_is_an_error_with_its_line() {
        let d = dir("atmissing");
        write(&d, "a.ini", "[uwsgi]\nx = @(nofile)\n");
        let e = run(&d, "a.ini", &[], ExecPolicy::Refuse).err().unwrap();
        assert_eq!(e.kind, ErrorKind::Read);
        assert!(
            e.to_string()
                .starts_with("a.ini:2: cannot read file \"nofile\" for @(nofile): cannot read: "),
            "{e}"
        );
    }

    #[test]
    fn exec_runs_only_when_the_policy_allows_and_says_so_in_check() {
        let d = dir("exec");
        write(&d, "a.ini", "[uwsgi]\nx = <@(exec://echo out)>\n");
        let e = run(&d, "a.ini", &[], ExecPolicy::Refuse).err().unwrap();
        assert_eq!(e.kind, ErrorKind::Exec);
        assert_eq!(
            e.to_string(),
            "a.ini:2: @(exec://echo out): check runs no command unless --allow-exec is given"
        );
        let r = run(&d, "a.ini", &[], ExecPolicy::Run).unwrap();
        assert_eq!(kv(&r), vec![("x", "<out>")]);
        assert!(r.warnings.is_empty());
        let r = run(&d, "a.ini", &[], ExecPolicy::RunAndSay).unwrap();
        assert_eq!(
            r.warnings[0].message,
            "@(exec://echo out): ran the command (--allow-exec)"
        );
    }

    #[test]
    fn a_value_that_grows_by_itself_is_refused() {
        let d = dir("grow");
        write(&d, "a.ini", "[uwsgi]\nx = ab%(x)%(x)\n");
        let e = run(&d, "a.ini", &[], ExecPolicy::Refuse).err().unwrap();
        assert!(
            matches!(e.kind, ErrorKind::TooLarge | ErrorKind::Syntax),
            "{e}"
        );
    }
}
