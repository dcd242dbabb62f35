//! `check` tells the truth about `start`: the real binary's `check` and `start`
//! on the same inis, exit codes and exact messages; a refused start creates no
//! file. Also the operator's allowances (`--allow-unsupported`,
//! `--allow-root-workers`, `--allow-exec`), and that they hold for reloads.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{http_get, temp_dir, venv, Site, BIN};

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A directory with the app's files and an ini whose `[uwsgi]` body is `body`
/// after a valid preamble (chdir, module, home, socket in the directory).
struct Case {
    dir: PathBuf,
}

impl Case {
    fn new(name: &str) -> Case {
        let dir = temp_dir(name);
        std::fs::write(dir.join("app.py"), "def application(e, s):\n    pass\n").unwrap();
        Case { dir }
    }

    fn ini(&self) -> PathBuf {
        self.dir.join("site.ini")
    }

    fn preamble(&self) -> String {
        format!(
            "[uwsgi]\nchdir = {dir}\nwsgi-file = app.py\nsocket = {dir}/site.sock\npidfile = {dir}/site.pid\nlogto = {dir}/site.log\nuid = nobody\ngid = nogroup\n",
            dir = self.dir.display(),
        )
    }

    /// Writes the preamble plus `body`; returns the line number of `body`'s first line.
    fn write(&self, body: &str) -> usize {
        let pre = self.preamble();
        let first = pre.lines().count() + 1;
        std::fs::write(self.ini(), format!("{pre}{body}")).unwrap();
        std::fs::set_permissions(self.ini(), std::fs::Permissions::from_mode(0o644)).unwrap();
        first
    }

    fn check(&self, extra: &[&str]) -> Output {
        let ini = self.ini();
        let mut args = vec!["check", ini.to_str().unwrap()];
        args.extend_from_slice(extra);
        run(&self.dir, &args)
    }

    /// `start` on a config it must refuse: exit 2 at once, nothing created.
    fn start_refused(&self, extra: &[&str]) -> String {
        let before = listing(&self.dir);
        let ini = self.ini();
        let mut args = vec!["start"];
        args.extend_from_slice(extra);
        args.push(ini.to_str().unwrap());
        let started = Instant::now();
        let out = run(&self.dir, &args);
        assert_eq!(out.status.code(), Some(2), "start: {}", stderr(&out));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(listing(&self.dir), before, "a refused start created files");
        stderr(&out)
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Asserts `check` and `start` both refuse with exactly `message` at `line`.
fn refused(case: &Case, line: Option<usize>, message: &str) {
    let at = match line {
        Some(l) => format!("{}:{l}: {message}", case.ini().display()),
        None => format!("{}: {message}", case.ini().display()),
    };
    let out = case.check(&[]);
    assert_eq!(out.status.code(), Some(2), "check: {}", stderr(&out));
    assert!(
        stderr(&out).lines().any(|l| l == at),
        "check stderr lacks {at:?}:\n{}",
        stderr(&out)
    );
    let err = case.start_refused(&[]);
    assert!(
        err.lines().any(|l| l == at),
        "start stderr lacks {at:?}:\n{err}"
    );
}

#[test]
fn a_valid_ini_is_one_ok_line() {
    let case = Case::new("ok");
    case.write("processes = 2\n");
    let out = case.check(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("{}: ok (0 warnings)\n", case.ini().display())
    );
}

#[test]
fn unsupported_keys_fail_check_and_start_unless_allowed() {
    let case = Case::new("unsupported");
    let line = case.write("https = :8443,site.crt,site.key\n");
    refused(
        &case,
        Some(line),
        "\"https\" is not supported: no HTTPS router: nothing listens on that address, the site is unreachable there (--allow-unsupported KEY accepts it)",
    );
    let out = case.check(&["--allow-unsupported", "https"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "{ini}:{line}: warning: \"https\" is not supported: no HTTPS router: nothing listens on that address, the site is unreachable there (allowed by --allow-unsupported https)\n",
            ini = case.ini().display()
        )
    );
    assert_eq!(
        stdout(&out),
        format!("{}: ok (1 warning)\n", case.ini().display())
    );
}

#[test]
fn several_unsupported_keys_are_counted_in_one_message() {
    let case = Case::new("several");
    let line = case
        .write("py-autoreload = 1\nresponse-route = ^/x addheader:A: b\nfinal-route = ^/x log:x\n");
    refused(
        &case,
        Some(line),
        &format!(
            "\"py-autoreload\" is not supported: code changes are not picked up automatically: touch the ini or use touch-reload (and 2 more unsupported keys at lines {}, {}; --allow-unsupported KEY accepts one)",
            line + 1,
            line + 2
        ),
    );
}

#[test]
fn equivalent_and_tuning_keys_start_with_a_warning_at_most() {
    let case = Case::new("equivalent");
    let line = case.write(
        "master = true\nenable-threads = true\nthunder-lock = true\ndie-on-term = true\nhook-master-start = unix_signal:15 gracefully_kill_them_all\ncpu-affinity = 1\n",
    );
    let out = case.check(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "{}:{}: warning: \"cpu-affinity\" ignored (tuning): workers are not pinned to CPUs\n",
            case.ini().display(),
            line + 5
        )
    );
    // Any other hook-master-start is a hook that runs; an action amy-emperor
    // cannot run is refused.
    case.write("hook-master-start = exec:/bin/true\n");
    assert_eq!(case.check(&[]).status.code(), Some(0));
    case.write("hook-master-start = mount:proc none /proc\n");
    assert_eq!(case.check(&[]).status.code(), Some(2));
}

#[test]
fn what_the_host_lacks_is_refused_by_check_as_by_start() {
    let case = Case::new("host");
    let venv_s = venv().display().to_string();
    let dir_s = case.dir.display().to_string();

    std::fs::write(
        case.ini(),
        format!("[uwsgi]\nchdir = {dir_s}/nope\nmodule = app\nsocket = {dir_s}/s.sock\n"),
    )
    .unwrap();
    refused(
        &case,
        Some(2),
        &format!("chdir = {dir_s}/nope: no such directory"),
    );

    std::fs::write(
        case.ini(),
        format!("[uwsgi]\nwsgi-file = {dir_s}/missing.py\nsocket = {dir_s}/s.sock\n"),
    )
    .unwrap();
    refused(
        &case,
        Some(2),
        &format!("wsgi-file = {dir_s}/missing.py: no such file"),
    );

    std::fs::create_dir_all(case.dir.join("venv/bin")).unwrap();
    std::fs::write(case.dir.join("venv/bin/python"), "").unwrap();
    std::fs::write(
        case.ini(),
        format!("[uwsgi]\nhome = {dir_s}/venv\nmodule = app\nsocket = {dir_s}/s.sock\n"),
    )
    .unwrap();
    refused(
        &case,
        Some(2),
        &format!("home = {dir_s}/venv: {dir_s}/venv/bin/python is missing or not executable: the workers could not start"),
    );
    std::fs::remove_dir_all(case.dir.join("venv")).unwrap();

    std::fs::write(
        case.ini(),
        format!("[uwsgi]\nhome = {venv_s}\nmodule = app\nsocket = {dir_s}/s.sock\nuid = no-such-user-amy\n"),
    )
    .unwrap();
    refused(
        &case,
        Some(5),
        "uid = no-such-user-amy: no such user on this host",
    );

    std::fs::write(
        case.ini(),
        format!("[uwsgi]\nmodule = app\nsocket = {dir_s}/s.sock\ngid = no-such-group-amy\nuid = nobody\n"),
    )
    .unwrap();
    refused(
        &case,
        Some(4),
        "gid = no-such-group-amy: no such group on this host",
    );

    std::fs::write(case.ini(), "[uwsgi]\nmodule = app\nprocesses = 2\n").unwrap();
    refused(
        &case,
        None,
        "no socket configured (socket, uwsgi-socket or http-socket): nothing could reach the app",
    );

    std::fs::write(
        case.ini(),
        format!(
            "[uwsgi]\nmodule = app\nsocket = {dir_s}/s.sock\nuid = nobody\nstats = 0.0.0.0:9191\n"
        ),
    )
    .unwrap();
    refused(
        &case,
        Some(5),
        "stats = 0.0.0.0:9191: the stats server has no authentication, so it listens only on a unix socket or an explicit loopback address (127.0.0.1:PORT, localhost:PORT, [::1]:PORT)",
    );

    let long = format!("{dir_s}/{}.sock", "s".repeat(110));
    std::fs::write(
        case.ini(),
        format!("[uwsgi]\nmodule = app\nsocket = {long}\n"),
    )
    .unwrap();
    refused(
        &case,
        Some(3),
        &format!(
            "socket = {long}: the socket path is {} bytes, longer than the 107 a unix socket address holds",
            long.len()
        ),
    );
}

#[test]
fn a_missing_for_readline_file_is_an_error_not_a_site_without_secrets() {
    let case = Case::new("readline");
    let line = case.write("for-readline = %dno_such_env\nenv = %(_)\nendfor =\n");
    refused(
        &case,
        Some(line),
        "for-readline = no_such_env: cannot open: No such file or directory (os error 2); uWSGI would skip the loop and start without these variables",
    );
}

#[test]
fn ini_files_that_are_not_configs_are_refused_without_blocking() {
    let d = temp_dir("kinds");
    let fifo = d.join("fifo.ini");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let cases: Vec<(PathBuf, String)> = vec![
        (fifo.clone(), "is a FIFO, not an ini file".into()),
        (d.clone(), "is a directory, not an ini file".into()),
        (
            PathBuf::from("/dev/null"),
            "is a character device, not an ini file".into(),
        ),
        (
            {
                let p = d.join("empty.ini");
                std::fs::write(&p, "\n  \n").unwrap();
                p
            },
            "the ini file is empty".into(),
        ),
        (
            {
                let p = d.join("nosection.ini");
                std::fs::write(&p, "[app]\nsocket = /tmp/x.sock\n").unwrap();
                p
            },
            "no [uwsgi] section: uWSGI would start with nothing from this file".into(),
        ),
        (
            {
                let p = d.join("huge.ini");
                let mut text = String::from("[uwsgi]\n");
                while text.len() <= 4 * 1024 * 1024 {
                    text.push_str("# padding padding padding padding padding padding padding\n");
                }
                std::fs::write(&p, &text).unwrap();
                p
            },
            format!(
                "ini file is {} bytes, larger than the 4194304 bytes allowed",
                std::fs::metadata(d.join("huge.ini"))
                    .map(|m| m.len())
                    .unwrap_or(0)
            ),
        ),
    ];
    for (path, message) in cases {
        let started = Instant::now();
        let out = run(&d, &["check", path.to_str().unwrap()]);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path:?} blocked"
        );
        assert_eq!(out.status.code(), Some(2), "{path:?}: {}", stderr(&out));
        assert_eq!(
            stderr(&out),
            format!("{}: {message}\n", path.display()),
            "{path:?}"
        );
    }
}

#[test]
fn exec_runs_at_start_but_never_in_check_without_allow_exec() {
    let case = Case::new("exec");
    let marker = case.dir.join("ran");
    let line = case.write(&format!(
        "processes = @(exec://touch {m} && echo 2)\n",
        m = marker.display()
    ));
    let out = case.check(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "{}:{line}: @(exec://touch {m} && echo 2): check runs no command unless --allow-exec is given\n",
            case.ini().display(),
            m = marker.display()
        )
    );
    assert!(!marker.exists(), "check ran the command");
    let out = case.check(&["--allow-exec"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(marker.exists());
    assert!(
        stderr(&out).contains(&format!(
            "{}:{line}: warning: @(exec://touch {m} && echo 2): ran the command (--allow-exec)",
            case.ini().display(),
            m = marker.display()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn root_rules_apply_when_the_master_runs_as_root() {
    if !nix::unistd::geteuid().is_root() {
        // The non-root side of these rules is unit-tested in envfile.rs; this
        // test needs the real thing and says so instead of passing silently.
        panic!("this test must run as root (scripts/test.sh runs as root)");
    }
    let case = Case::new("root");
    let dir_s = case.dir.display().to_string();
    let base = format!("[uwsgi]\nchdir = {dir_s}\nwsgi-file = app.py\nsocket = {dir_s}/s.sock\n");

    std::fs::write(case.ini(), format!("{base}uid = root\n")).unwrap();
    refused(
        &case,
        Some(5),
        "uid = root: the workers would run the app as root; refusing (--allow-root-workers accepts it)",
    );
    let out = case.check(&["--allow-root-workers"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out)
        .contains("uid = root: the workers run the app as root (allowed by --allow-root-workers)"));

    // The workers' user must reach the venv's python: a private venv is refused.
    let private = case.dir.join("private");
    std::fs::create_dir_all(private.join("venv/bin")).unwrap();
    std::os::unix::fs::symlink("/usr/bin/python3", private.join("venv/bin/python")).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let venv_p = private.join("venv");
    std::fs::write(
        case.ini(),
        format!("{base}home = {}\nuid = nobody\n", venv_p.display()),
    )
    .unwrap();
    refused(
        &case,
        Some(5),
        &format!(
            "home = {v}: {v}/bin/python cannot be used by uid nobody (a directory on its path or the file itself denies it): the workers could not start",
            v = venv_p.display()
        ),
    );
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = case.check(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // Implicit root workers: uWSGI's loud warning, but it starts.
    std::fs::write(case.ini(), &base).unwrap();
    let out = case.check(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("*** WARNING: you are running the app as root"));

    // chmod-socket 666: starts, loudly.
    std::fs::write(
        case.ini(),
        format!("{base}uid = nobody\nchmod-socket = 666\n"),
    )
    .unwrap();
    let out = case.check(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!(
        "{}:6: warning: chmod-socket = 666: EVERY local user can connect",
        case.ini().display()
    )));

    // An ini others can write decides what a root master runs: refused.
    std::fs::write(case.ini(), format!("{base}uid = nobody\n")).unwrap();
    std::fs::set_permissions(case.ini(), std::fs::Permissions::from_mode(0o664)).unwrap();
    refused(
        &case,
        None,
        "ini file is group-writable (mode 664) and the master runs as root; refusing it: chmod g-w",
    );
    std::fs::set_permissions(case.ini(), std::fs::Permissions::from_mode(0o644)).unwrap();

    // A socket directory anyone can write, without the sticky bit: refused.
    let open = case.dir.join("open");
    std::fs::create_dir_all(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(
        case.ini(),
        format!("[uwsgi]\nchdir = {dir_s}\nwsgi-file = app.py\nuid = nobody\nsocket = {dir_s}/open/s.sock\n"),
    )
    .unwrap();
    refused(
        &case,
        Some(5),
        &format!("socket = {dir_s}/open/s.sock: its directory {dir_s}/open is writable by every user without the sticky bit (mode 0777); anyone could replace the socket: refusing"),
    );
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = case.check(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("(sticky bit set); a private directory is safer"));
}

#[test]
fn the_ini_message_names_the_file_even_when_refused_for_its_mode() {
    // refused() above matches whole lines; this pins the path prefix of a
    // permission error, which has no line.
    if !nix::unistd::geteuid().is_root() {
        panic!("this test must run as root");
    }
    let case = Case::new("mode");
    case.write("");
    std::fs::set_permissions(case.ini(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = case.check(&[]);
    assert_eq!(
        stderr(&out),
        format!(
            "{}: ini file is world-writable (mode 666); refusing it: chmod o-w\n",
            case.ini().display()
        )
    );
}

#[test]
fn warnings_are_the_same_lines_from_check_and_start() {
    let site = Site::new("samewarn", "hello", 1, "cpu-affinity = 1");
    let out = site.cli(&["check", site.ini().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let check_warnings: Vec<String> = stderr(&out).lines().map(str::to_string).collect();
    assert!(
        check_warnings.iter().any(|w| w.contains("cpu-affinity")),
        "{check_warnings:?}"
    );
    let inst = site.start();
    let start_err = std::fs::read_to_string(site.dir.join("stderr.txt")).unwrap();
    for w in &check_warnings {
        assert!(
            start_err.lines().any(|l| l == w),
            "start lacks {w:?}:\n{start_err}"
        );
    }
    drop(inst);
}

#[test]
fn env_file_bytes_reach_the_worker_unchanged() {
    let site = Site::new("envbytes", "environb", 1, "");
    let env = site.dir.join("uwsgi_env");
    std::fs::write(&env, b"AMY_BYTES=caf\xe9 \xff\xfe=x\n").unwrap();
    std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o600)).unwrap();
    let _inst = site.start();
    let r = http_get(site.http_port, "/").unwrap();
    assert_eq!(r.text(), hex(b"caf\xe9 \xff\xfe=x"));
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn a_reload_with_an_unsupported_key_is_rejected_and_the_old_generation_serves() {
    let site = Site::new("reloadunsup", "hello", 1, "");
    let _inst = site.start();
    site.write_ini("hello", 1, "response-route = ^/x addheader:A: b");
    let out = site.cli(&["reload", site.ini().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        said.contains("\"response-route\" is not supported"),
        "{said}"
    );
    assert_eq!(http_get(site.http_port, "/").unwrap().status, 200);
}

#[test]
fn an_allowance_given_to_start_holds_for_its_reloads() {
    let site = Site::new("reloadallow", "hello", 1, "");
    let _inst = site.start_with(&["--allow-unsupported", "response-route"]);
    site.write_ini("hello", 1, "response-route = ^/x addheader:A: b");
    let out = site.cli(&["reload", site.ini().to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(http_get(site.http_port, "/").unwrap().status, 200);
}

#[test]
fn a_log_in_a_directory_that_does_not_exist_is_refused_unless_an_asap_hook_may_create_it() {
    // start exits 1 when it cannot open a log: check and start refuse it first,
    // at its line, for each key that names a log file the master opens.
    let case = Case::new("check-logdir");
    let missing = case.dir.join("no-such-dir");
    for key in [
        "logto = ",
        "logger = file:",
        "req-logger = file:",
        "daemonize = ",
    ] {
        let line = case.write(&format!("{key}{}/x.log\n", missing.display()));
        refused(
            &case,
            Some(line),
            &format!(
                "{key}{}/x.log: no such directory {} (start could not open the log)",
                missing.display(),
                missing.display()
            ),
        );
    }
    // An asap hook runs before the logs are opened (a `mkdir -p`): a warning.
    case.write(&format!(
        "exec-asap = mkdir -p {m}\nlogto = {m}/x.log\n",
        m = missing.display()
    ));
    let out = case.check(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unless an asap hook creates it"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_fs_reload_directory_holding_the_instances_own_log_is_warned_as_a_reload_loop() {
    let case = Case::new("check-fsreload-loop");
    let logs = case.dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    case.write(&format!(
        "logger = file:{l}/app.log\nfs-reload = {l}\n",
        l = logs.display()
    ));
    let out = case.check(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "fs-reload = {l}: logger = file:{l}/app.log is written inside it, so every write reloads the instance",
            l = logs.display()
        )),
        "{}",
        stderr(&out)
    );
}
