//! Differential test: every ini of `tests/ini_corpus/` through real uWSGI
//! (`uwsgi --show-config --ini X`) and through `amy-emperor check X --show-config
//! --show-secrets`; the `(key, value)` lists of the printed block must be equal.
//!
//! uWSGI goes on to start after printing, so it runs in a throw-away cwd, inside a
//! network namespace (`unshare -n`, so no TCP socket can reach anything) and a PID
//! namespace (`-p -f --kill-child`, so killing the one process we started takes
//! down whatever it forked or daemonized). We read until the end marker or a 10 s
//! deadline, then kill it by PID and reap it.
//!
//! A corpus file may carry a header line:
//! - `; amy-expect: error <text>`: uWSGI refuses it (no block); we exit 2 and our
//!   stderr holds `<text>`.
//! - `; amy-expect: differs <reason>`: a deliberate difference; we exit 0 and our
//!   stderr holds the text of `; amy-expect-stderr: <text>`.
//! - `; amy-expect-check: <text>`: the blocks must still be equal, but the typed
//!   config is refused on this host (an unsupported key, a missing chdir, no
//!   socket…): we exit 2 and our stderr holds `<text>`. Without it, exit 0.
//! - `; amy-check-args: <args>`: extra arguments for our `check` (`--allow-exec`).
//!
//! uWSGI binary: `$AMY_TEST_UWSGI`, default `.venv-test/bin/uwsgi`
//! (`scripts/setup-test-deps.sh` installs it). Missing is a failure, not a skip.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BEGIN: &str = ";uWSGI instance configuration";
const END: &str = ";end of configuration";
const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Same(Option<String>),
    /// Same block, but `check` refuses the typed config with this text.
    SameButRefused(String),
    Error(String),
    Differs {
        reason: String,
        stderr: Option<String>,
    },
}

fn expectation(text: &str) -> Expect {
    let mut expect = Expect::Same(None);
    let mut stderr = None;
    let mut refused = None;
    for line in text.lines().take(10) {
        if let Some(rest) = line.strip_prefix("; amy-expect-check: ") {
            refused = Some(rest.trim().to_string());
        }
        if let Some(rest) = line.strip_prefix("; amy-expect: error ") {
            expect = Expect::Error(rest.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("; amy-expect: differs ") {
            expect = Expect::Differs {
                reason: rest.trim().to_string(),
                stderr: None,
            };
        } else if let Some(rest) = line.strip_prefix("; amy-expect-stderr: ") {
            stderr = Some(rest.trim().to_string());
        }
    }
    match expect {
        Expect::Differs { reason, .. } => Expect::Differs { reason, stderr },
        Expect::Same(_) if refused.is_some() => Expect::SameButRefused(refused.unwrap()),
        Expect::Same(_) => Expect::Same(stderr),
        error => error,
    }
}

/// The `(key, value)` lines of the first block in `out`, if any. uWSGI may prefix
/// every log line (`log-date`): the prefix of the marker line is stripped from all.
fn block(out: &str) -> Option<Vec<(String, String)>> {
    let mut lines = out.split('\n');
    let mut previous = "";
    let prefix = loop {
        let line = lines.next()?;
        if let Some(i) = line.find(BEGIN) {
            // uWSGI logs "\n;uWSGI instance…" in one call: its prefix sits alone
            // on the line before the marker.
            break if i > 0 {
                line[..i].to_string()
            } else {
                previous.to_string()
            };
        }
        previous = line;
    };
    let mut items = Vec::new();
    for line in lines {
        let line = line.strip_prefix(prefix.as_str()).unwrap_or(line);
        if line == END {
            return Some(items);
        }
        if line == "[uwsgi]" {
            continue;
        }
        if line == "[uwsgi]" {
            continue;
        }
        match line.split_once(" = ") {
            Some((k, v)) => items.push((k.to_string(), v.to_string())),
            None => items.push((line.trim_end_matches(" =").to_string(), String::new())),
        }
    }
    None
}

fn environment() -> Vec<(&'static str, String)> {
    vec![
        ("HOME", "/home/amy-test".into()),
        ("PATH", "/usr/local/bin:/usr/bin:/bin".into()),
        ("LANG", "C".into()),
        ("AMY_TEST_VAR", "hello".into()),
        ("AMY_TEST_MODE", "production".into()),
    ]
}

fn uwsgi_binary() -> PathBuf {
    let path = std::env::var_os("AMY_TEST_UWSGI")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/uwsgi"));
    assert!(
        path.is_file(),
        "uWSGI not found at {} (set AMY_TEST_UWSGI or run scripts/setup-test-deps.sh)",
        path.display()
    );
    path
}

fn unshare_works() -> bool {
    Command::new("unshare")
        .args(["-n", "-p", "-f", "--kill-child", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs uWSGI on `ini` in `cwd` until it has printed its block (or the deadline),
/// then kills it. Returns everything it wrote, plus any log file it created in `cwd`.
fn run_uwsgi(uwsgi: &Path, ini: &Path, cwd: &Path, sandbox: bool, env: &[(&str, &str)]) -> String {
    let mut cmd = if sandbox {
        let mut c = Command::new("unshare");
        c.args(["-n", "-p", "-f", "--kill-child"]).arg(uwsgi);
        c
    } else {
        let mut c = Command::new(uwsgi);
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        c
    };
    cmd.arg("--show-config").arg("--ini").arg(ini);
    cmd.current_dir(cwd)
        .env_clear()
        .envs(environment())
        .envs(env.iter().copied());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn uwsgi");
    let output = Arc::new(Mutex::new(String::new()));
    let readers: Vec<_> = [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ]
    .into_iter()
    .map(|mut pipe| {
        let output = Arc::clone(&output);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                output
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    })
    .collect();
    let start = Instant::now();
    let found_in_files = |cwd: &Path| -> Option<String> {
        for entry in std::fs::read_dir(cwd).ok()?.flatten() {
            if let Ok(text) = std::fs::read_to_string(entry.path()) {
                if text.contains(END) {
                    return Some(text);
                }
            }
        }
        None
    };
    let mut from_file = None;
    loop {
        if output.lock().unwrap().contains(END) {
            break;
        }
        if let Some(text) = found_in_files(cwd) {
            from_file = Some(text);
            break;
        }
        if start.elapsed() > DEADLINE {
            break;
        }
        if let Ok(Some(_)) = child.try_wait() {
            // Exited: give the readers a moment to drain, bounded by the deadline.
            let drained = Instant::now();
            while readers.iter().any(|r| !r.is_finished())
                && drained.elapsed() < Duration::from_secs(2)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if !sandbox {
        // SAFETY: kill(2) on the process group we created for this child only.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut text = output.lock().unwrap().clone();
    if let Some(file_text) = from_file.or_else(|| found_in_files(cwd)) {
        text.push('\n');
        text.push_str(&file_text);
    }
    text
}

struct Ours {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run_ours(ini: &Path, cwd: &Path, extra: &[String], env: &[(&str, &str)]) -> Ours {
    let out = Command::new(env!("CARGO_BIN_EXE_amy-emperor"))
        .arg("check")
        .arg(ini)
        .args(["--show-config", "--show-secrets"])
        .args(extra)
        .current_dir(cwd)
        .env_clear()
        .envs(environment())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run amy-emperor");
    Ours {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        let ft = entry.file_type().unwrap();
        if ft.is_symlink() {
            let link = std::fs::read_link(entry.path()).unwrap();
            std::os::unix::fs::symlink(link, &target).unwrap();
        } else if ft.is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// One case's verdict: `Ok(matched_exactly)` or a failure description.
fn check_case(uwsgi: &Path, ini: &Path, work: &Path, sandbox: bool) -> Result<bool, String> {
    let name = ini.file_name().unwrap().to_string_lossy().into_owned();
    let cwd = work.join(format!("cwd-{name}"));
    std::fs::create_dir_all(&cwd).unwrap();
    let text = String::from_utf8_lossy(&std::fs::read(ini).unwrap()).into_owned();
    let expect = expectation(&text);
    let theirs_out = run_uwsgi(uwsgi, ini, &cwd, sandbox, &[]);
    let extra: Vec<String> = text
        .lines()
        .take(10)
        .filter_map(|l| l.strip_prefix("; amy-check-args: "))
        .flat_map(|a| a.split_whitespace().map(str::to_string))
        .collect();
    let ours = run_ours(ini, &cwd, &extra, &[]);
    let theirs = block(&theirs_out);
    let mine = block(&ours.stdout);
    let context = || {
        format!(
            "\n--- uwsgi output (tail) ---\n{}\n--- our stdout ---\n{}\n--- our stderr ---\n{}",
            tail(&theirs_out, 40),
            ours.stdout,
            ours.stderr
        )
    };
    match expect {
        Expect::Same(needle) => {
            let theirs =
                theirs.ok_or_else(|| format!("{name}: uWSGI printed no block{}", context()))?;
            if ours.code != Some(0) {
                return Err(format!("{name}: we exited {:?}{}", ours.code, context()));
            }
            let mine = mine.ok_or_else(|| format!("{name}: we printed no block{}", context()))?;
            if mine != theirs {
                return Err(format!(
                    "{name}: blocks differ\n{}{}",
                    diff(&theirs, &mine),
                    context()
                ));
            }
            if let Some(needle) = needle {
                if !ours.stderr.contains(&needle) {
                    return Err(format!(
                        "{name}: expected {needle:?} on stderr{}",
                        context()
                    ));
                }
            }
            Ok(true)
        }
        Expect::SameButRefused(needle) => {
            let theirs =
                theirs.ok_or_else(|| format!("{name}: uWSGI printed no block{}", context()))?;
            let mine = mine.ok_or_else(|| format!("{name}: we printed no block{}", context()))?;
            if mine != theirs {
                return Err(format!(
                    "{name}: blocks differ\n{}{}",
                    diff(&theirs, &mine),
                    context()
                ));
            }
            if ours.code != Some(2) || !ours.stderr.contains(&needle) {
                return Err(format!(
                    "{name}: expected check to exit 2 with {needle:?} on stderr{}",
                    context()
                ));
            }
            Ok(true)
        }
        Expect::Error(needle) => {
            if theirs.is_some() {
                return Err(format!(
                    "{name}: expected uWSGI to refuse it, but it printed a block{}",
                    context()
                ));
            }
            if ours.code != Some(2) || !ours.stderr.contains(&needle) {
                return Err(format!(
                    "{name}: expected exit 2 with {needle:?} on stderr{}",
                    context()
                ));
            }
            Ok(false)
        }
        Expect::Differs { reason, stderr } => {
            if ours.code != Some(0) || mine.is_none() {
                return Err(format!(
                    "{name} ({reason}): expected exit 0 and a block{}",
                    context()
                ));
            }
            if let Some(needle) = stderr {
                if !ours.stderr.contains(&needle) {
                    return Err(format!(
                        "{name} ({reason}): expected {needle:?} on stderr{}",
                        context()
                    ));
                }
            }
            if theirs.is_some() && theirs == mine {
                return Err(format!(
                    "{name} ({reason}): marked as differing but the blocks are equal"
                ));
            }
            Ok(false)
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn diff(theirs: &[(String, String)], mine: &[(String, String)]) -> String {
    let mut out = String::new();
    for i in 0..theirs.len().max(mine.len()) {
        let t = theirs.get(i);
        let m = mine.get(i);
        if t != m {
            out.push_str(&format!("  #{i}: uwsgi {t:?}\n  #{i}: ours  {m:?}\n"));
        }
    }
    out
}

#[test]
fn corpus_matches_uwsgi_show_config() {
    let uwsgi = uwsgi_binary();
    let sandbox = unshare_works();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ini_corpus");
    let work = std::env::temp_dir().join(format!("amy-differential-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let copy = work.join("corpus");
    copy_dir(&corpus, &copy);
    // Tests must not depend on the mode git gave the files: env files 0600 as deployed.
    for entry in std::fs::read_dir(&copy).unwrap().flatten() {
        if entry.file_name().to_string_lossy().contains("env") && entry.path().is_file() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    let mut inis: Vec<PathBuf> = std::fs::read_dir(&copy)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "ini") && p.is_file())
        .collect();
    inis.sort();
    assert!(inis.len() >= 40, "corpus has only {} inis", inis.len());

    let results: Vec<(String, Result<bool, String>)> = std::thread::scope(|s| {
        let chunks: Vec<Vec<PathBuf>> = inis
            .chunks(inis.len().div_ceil(6))
            .map(|c| c.to_vec())
            .collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let (uwsgi, work) = (&uwsgi, &work);
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|ini| {
                            let name = ini.file_name().unwrap().to_string_lossy().into_owned();
                            (name, check_case(uwsgi, ini, work, sandbox))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let exact = results
        .iter()
        .filter(|(_, r)| matches!(r, Ok(true)))
        .count();
    let failures: Vec<&String> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .collect();
    eprintln!(
        "differential: {} inis, {} identical to uWSGI, {} expected differences/errors, {} failures",
        results.len(),
        exact,
        results.len() - exact - failures.len(),
        failures.len()
    );
    let _ = std::fs::remove_dir_all(&work);
    assert!(
        failures.is_empty(),
        "{}",
        failures
            .iter()
            .map(|f| f.as_str())
            .collect::<Vec<_>>()
            .join("\n\n")
    );
}

#[test]
fn uwsgi_environment_variables_are_options_in_uwsgis_order() {
    // uWSGI's parse_sys_envs: UWSGI_NAME=value is the option `name`, parsed
    // before the command line (so the ini's scalar wins); its own plumbing
    // variables are not options.
    let work = std::env::temp_dir().join(format!("amy-differential-env-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let ini = work.join("site.ini");
    std::fs::write(
        &ini,
        "[uwsgi]\nmodule = app:application\nsocket = 127.0.0.1:0\nprocesses = 2\n",
    )
    .unwrap();
    let env = [
        ("UWSGI_PROCESSES", "5"),
        ("UWSGI_MAX_REQUESTS", "100"),
        ("UWSGI_RELOADS", "3"),
        ("UWSGI_HARAKIRI", "30"),
    ];
    let theirs = block(&run_uwsgi(
        &uwsgi_binary(),
        &ini,
        &work,
        unshare_works(),
        &env,
    ))
    .expect("uWSGI printed its block");
    let ours = run_ours(&ini, &work, &[], &env);
    assert_eq!(ours.code, Some(0), "{}", ours.stderr);
    let mine = block(&ours.stdout).expect("our block");
    let _ = std::fs::remove_dir_all(&work);
    assert_eq!(theirs, mine, "{}", diff(&theirs, &mine));
    // In the environment's order (Command passes it sorted), before show-config.
    let keys: Vec<&str> = mine.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        &keys[..4],
        ["harakiri", "max-requests", "processes", "show-config"]
    );
}

#[test]
fn block_parser_strips_log_prefixes() {
    let out = "x\n - \n;uWSGI instance configuration\n[uwsgi]\n - a = 1\n - b = \n - ;end of configuration\n";
    assert_eq!(
        block(out),
        Some(vec![("a".into(), "1".into()), ("b".into(), "".into())])
    );
    assert_eq!(block("nothing"), None);
}

#[test]
fn expectation_header_is_read() {
    assert_eq!(
        expectation("; amy-expect: error bad\n[uwsgi]\n"),
        Expect::Error("bad".into())
    );
    assert_eq!(
        expectation("; amy-expect: differs bom\n; amy-expect-stderr: mark\n"),
        Expect::Differs {
            reason: "bom".into(),
            stderr: Some("mark".into())
        }
    );
    assert_eq!(expectation("[uwsgi]\n"), Expect::Same(None));
    assert_eq!(
        expectation("; amy-expect-stderr: w\n"),
        Expect::Same(Some("w".into()))
    );
    assert_eq!(
        expectation("; amy-expect-check: no such directory\n[uwsgi]\n"),
        Expect::SameButRefused("no such directory".into())
    );
}
