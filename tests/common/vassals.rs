//! Emperor fixtures: a vassal directory with, beside it, a directory for the
//! vassals' sockets, pidfiles and logs (so that their writes do not land in the
//! watched one), and a running emperor stopped by PID on drop. Vassals serve
//! tests/apps/hello.py. Included by path (`#[path = "common/vassals.rs"]`) by
//! the emperor and kit tests, after `mod common;`; [`KeptOnFailure`] and
//! [`Running`] are the directory and process guards both use.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{kill, repo, temp_dir, uwsgi_get, venv, wait_for, BIN};

/// How long a vassal may take to serve (a Python interpreter per master).
pub const READY: Duration = Duration::from_secs(60);

/// A test's directory: removed at the end of a passing test, kept for
/// inspection after a failure.
pub struct KeptOnFailure(pub PathBuf);

impl Drop for KeptOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A process a test started, its stdout and stderr in `<dir>/<stem>.out|.err`
/// (a pipe nobody reads would block its logging). On drop: SIGINT (a fast
/// stop, its vassals and workers with it), SIGKILL after 20 s, and its stderr
/// printed if the test failed.
pub struct Running {
    child: Option<Child>,
    pub what: String,
    pub stderr: PathBuf,
}

impl Running {
    pub fn spawn(what: &str, mut cmd: Command, dir: &Path, stem: &str) -> Running {
        let file = |ext: &str| std::fs::File::create(dir.join(format!("{stem}.{ext}"))).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(file("out")))
            .stderr(Stdio::from(file("err")))
            .spawn()
            .unwrap();
        Running {
            child: Some(child),
            what: what.into(),
            stderr: dir.join(format!("{stem}.err")),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Its exit code, once it exits within `timeout` (None: killed by a signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut().expect("running");
        let status = wait_for(&format!("{} to exit", self.what), timeout, || {
            child.try_wait().unwrap()
        });
        self.child = None;
        status.code()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} stderr ---\n{}", self.what, self.stderr());
        }
        if let Some(mut child) = self.child.take() {
            kill(child.id() as i32, libc::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub struct Dirs {
    pub base: PathBuf,
    pub vassals: PathBuf,
    pub run: PathBuf,
    /// Last: the directories go once nothing else needs them.
    _kept: KeptOnFailure,
}

pub fn dirs(name: &str) -> Dirs {
    let base = temp_dir(name);
    let d = Dirs {
        vassals: base.join("vassals"),
        run: base.join("run"),
        _kept: KeptOnFailure(base.clone()),
        base,
    };
    std::fs::create_dir_all(&d.vassals).unwrap();
    std::fs::create_dir_all(&d.run).unwrap();
    d
}

impl Dirs {
    pub fn ini(&self, name: &str) -> PathBuf {
        self.vassals.join(format!("{name}.ini"))
    }
    pub fn sock(&self, name: &str) -> PathBuf {
        self.run.join(format!("{name}.sock"))
    }
    pub fn pidfile(&self, name: &str) -> PathBuf {
        self.run.join(format!("{name}.pid"))
    }

    /// A one-worker vassal serving hello.py on run/NAME.sock; `extra` is
    /// appended to `[uwsgi]`.
    pub fn ini_text(&self, name: &str, extra: &str) -> String {
        format!(
            "[uwsgi]\nchdir = {apps}\nmodule = hello\nhome = {venv}\nmaster = true\nprocesses = 1\n\
             socket = {sock}\nvacuum = true\npidfile = {pid}\nlogto = {run}/{name}.log\n\
             worker-reload-mercy = 10\n{extra}\n",
            apps = repo().join("tests/apps").display(),
            venv = venv().display(),
            sock = self.sock(name).display(),
            pid = self.pidfile(name).display(),
            run = self.run.display(),
        )
    }

    pub fn write_vassal(&self, name: &str) {
        self.write_vassal_with(name, "");
    }

    pub fn write_vassal_with(&self, name: &str, extra: &str) {
        std::fs::write(self.ini(name), self.ini_text(name, extra)).unwrap();
    }

    pub fn master_pid(&self, name: &str) -> Option<i32> {
        std::fs::read_to_string(self.pidfile(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The pid of the worker that answered a request on `name`'s socket.
    pub fn serving_pid(&self, name: &str) -> Option<i32> {
        let r = uwsgi_get(&self.sock(name), "/").ok()?;
        if r.status != 200 || r.body != b"Hello, World!\n" {
            return None;
        }
        r.header("X-Worker-Pid")?.parse().ok()
    }

    /// Waits until `name` serves; returns the pid of the worker that answered.
    pub fn wait_serving(&self, name: &str) -> i32 {
        wait_for(&format!("vassal {name} to serve"), READY, || {
            self.serving_pid(name)
        })
    }

    pub fn emperor_pidfile(&self) -> PathBuf {
        self.run.join("emperor.pid")
    }

    /// An emperor ini beside the vassal directory.
    pub fn write_emperor_ini(&self, extra: &str) -> PathBuf {
        let path = self.base.join("emperor.ini");
        std::fs::write(
            &path,
            format!(
                "[uwsgi]\nemperor = {vassals}\nemperor-pidfile = {run}/emperor.pid\n\
                 logto = {run}/emperor.log\nmaster = true\ndie-on-term = true\nvacuum = true\n{extra}\n",
                vassals = self.vassals.display(),
                run = self.run.display(),
            ),
        )
        .unwrap();
        path
    }

    pub fn emperor_log(&self) -> String {
        std::fs::read_to_string(self.run.join("emperor.log")).unwrap_or_default()
    }

    /// `amy-emperor ARGS`, run to completion in the base directory.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .current_dir(&self.base)
            .output()
            .unwrap()
    }

    /// `status --json --pidfile run/emperor.pid`.
    pub fn status(&self) -> serde_json::Value {
        let pidfile = self.emperor_pidfile();
        let out = self.cli(&["status", "--json", "--pidfile", pidfile.to_str().unwrap()]);
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// The emperor's view of one vassal.
    pub fn vassal_status(&self, name: &str) -> serde_json::Value {
        let file = self.ini(name);
        self.status()["vassals"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["file"] == file.to_str().unwrap())
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    }

    /// The pids of `name`'s current workers, as its own master reports them.
    pub fn worker_pids(&self, name: &str) -> Vec<i64> {
        let mut pids: Vec<i64> = self.vassal_status(name)["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w["pid"].as_i64())
            .collect();
        pids.sort();
        pids
    }
}

/// A running emperor; stopped (and its vassals with it) on drop, printing its
/// stderr and log tail if the test failed.
pub struct Emperor<'a> {
    pub dirs: &'a Dirs,
    process: Running,
}

impl<'a> Emperor<'a> {
    /// `amy-emperor start --emperor VASSALS`.
    pub fn start(dirs: &'a Dirs) -> Emperor<'a> {
        let dir = dirs.vassals.to_str().unwrap().to_owned();
        Emperor::spawn(dirs, &["start", "--emperor", &dir])
    }

    /// `amy-emperor ARGS` as the emperor, its output in run/emperor.{out,err}.
    pub fn spawn(dirs: &'a Dirs, args: &[&str]) -> Emperor<'a> {
        let mut cmd = Command::new(BIN);
        cmd.args(args).current_dir(&dirs.base);
        Emperor {
            dirs,
            process: Running::spawn("emperor", cmd, &dirs.run, "emperor"),
        }
    }

    pub fn pid(&self) -> i32 {
        self.process.pid()
    }

    pub fn stderr(&self) -> String {
        self.process.stderr()
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        self.process.wait_exit(timeout)
    }
}

impl Drop for Emperor<'_> {
    fn drop(&mut self) {
        // Its stderr follows, when `process` is dropped (and the emperor stopped).
        if std::thread::panicking() {
            let log = self.dirs.emperor_log();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(60);
            eprintln!("--- emperor log tail ---\n{}", lines[from..].join("\n"));
        }
    }
}
