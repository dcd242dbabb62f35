//! Emperor mode (README.md "Emperor mode"): the real binary supervising real vassals, each its
//! own `amy-emperor start` with Python workers serving tests/apps/hello.py.
//! Observed through the vassals' sockets, pidfiles and /proc, never through the
//! emperor's internals.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

mod common;

use common::{alive, kill, repo, uwsgi_get, venv, wait_for, BIN};
const READY: Duration = Duration::from_secs(60);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The vassal directory and, beside it, a directory for the vassals' sockets,
/// pidfiles and logs (so that their writes do not land in the watched one).
/// Removed at the end of a passing test; kept for inspection after a failure.
struct Dirs {
    base: PathBuf,
    vassals: PathBuf,
    run: PathBuf,
}

impl Drop for Dirs {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }
}

fn dirs(name: &str) -> Dirs {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let base = PathBuf::from(format!("/tmp/amy-e-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let d = Dirs {
        vassals: base.join("vassals"),
        run: base.join("run"),
        base,
    };
    std::fs::create_dir_all(&d.vassals).unwrap();
    std::fs::create_dir_all(&d.run).unwrap();
    d
}

impl Dirs {
    fn ini(&self, name: &str) -> PathBuf {
        self.vassals.join(format!("{name}.ini"))
    }
    fn sock(&self, name: &str) -> PathBuf {
        self.run.join(format!("{name}.sock"))
    }
    fn pidfile(&self, name: &str) -> PathBuf {
        self.run.join(format!("{name}.pid"))
    }

    fn ini_text(&self, name: &str, extra: &str) -> String {
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

    fn write_vassal(&self, name: &str) {
        std::fs::write(self.ini(name), self.ini_text(name, "")).unwrap();
    }

    fn master_pid(&self, name: &str) -> Option<i32> {
        std::fs::read_to_string(self.pidfile(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The pid of the worker that answered a request on `name`'s socket.
    fn serving_pid(&self, name: &str) -> Option<i32> {
        let r = uwsgi_get(&self.sock(name), "/").ok()?;
        if r.status != 200 || r.body != b"Hello, World!\n" {
            return None;
        }
        r.header("X-Worker-Pid")?.parse().ok()
    }

    fn wait_serving(&self, name: &str) -> i32 {
        wait_for(&format!("vassal {name} to serve"), READY, || {
            self.serving_pid(name)
        })
    }
}

/// A running `amy-emperor start --emperor DIR`; stopped (and its vassals with it)
/// on drop, printing its stderr if the test failed.
struct Emperor<'a> {
    dirs: &'a Dirs,
    child: Option<Child>,
}

fn start_emperor(dirs: &Dirs) -> Emperor<'_> {
    let child = Command::new(BIN)
        .arg("start")
        .arg("--emperor")
        .arg(&dirs.vassals)
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            std::fs::File::create(dirs.run.join("emperor.out")).unwrap(),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(dirs.run.join("emperor.err")).unwrap(),
        ))
        .spawn()
        .unwrap();
    Emperor {
        dirs,
        child: Some(child),
    }
}

impl Emperor<'_> {
    fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dirs.run.join("emperor.err")).unwrap_or_default()
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut().expect("running");
        let status = wait_for("the emperor to exit", timeout, || child.try_wait().unwrap());
        self.child = None;
        status.code()
    }
}

impl Drop for Emperor<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- emperor stderr ---\n{}", self.stderr());
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

fn touch(path: &Path) {
    let mut f = std::fs::File::options().append(true).open(path).unwrap();
    // A real edit, as a deploy makes: the vassal's master reloads on writes.
    f.write_all(b"# touched\n").unwrap();
    f.set_modified(SystemTime::now()).unwrap();
}

#[test]
fn vassals_come_and_go_with_their_files_and_stop_with_the_emperor() {
    let d = dirs("life");
    d.write_vassal("v1");
    d.write_vassal("v2");
    let mut emperor = start_emperor(&d);
    let mut workers = vec![d.wait_serving("v1"), d.wait_serving("v2")];
    let mut masters = vec![d.master_pid("v1").unwrap(), d.master_pid("v2").unwrap()];
    assert_ne!(masters[0], masters[1]);

    // A new file starts a vassal, whether written in place or renamed into place
    // the way deploy tools do.
    d.write_vassal("v3");
    workers.push(d.wait_serving("v3"));
    masters.push(d.master_pid("v3").unwrap());
    let staged = d.vassals.join(".v4.ini.tmp");
    std::fs::write(&staged, d.ini_text("v4", "")).unwrap();
    std::fs::rename(&staged, d.ini("v4")).unwrap();
    let v4_worker = d.wait_serving("v4");
    let v4_master = d.master_pid("v4").unwrap();

    // Renamed away (disabled) is as good as removed.
    std::fs::rename(d.ini("v4"), d.vassals.join("v4.ini.disabled")).unwrap();
    wait_for("v4 to stop", Duration::from_secs(30), || {
        (!alive(v4_master) && !alive(v4_worker) && !d.sock("v4").exists()).then_some(())
    });

    // A removed file stops its vassal gracefully: vacuum removes its socket and
    // pidfile, its processes end; the others keep serving.
    std::fs::remove_file(d.ini("v2")).unwrap();
    wait_for("v2 to stop", Duration::from_secs(30), || {
        (!alive(masters[1])
            && !alive(workers[1])
            && !d.sock("v2").exists()
            && !d.pidfile("v2").exists())
        .then_some(())
    });
    assert!(d.serving_pid("v1").is_some());
    assert!(d.serving_pid("v3").is_some());

    // SIGTERM stops everything gracefully and exits 0.
    kill(emperor.pid(), libc::SIGTERM);
    assert_eq!(emperor.wait_exit(Duration::from_secs(60)), Some(0));
    for pid in masters.iter().chain(&workers) {
        assert!(!alive(*pid), "pid {pid} outlived the emperor");
    }
    for name in ["v1", "v3"] {
        assert!(!d.sock(name).exists(), "{name}'s socket was not vacuumed");
        assert!(!d.pidfile(name).exists(), "{name}'s pidfile was left");
    }
}

#[test]
fn a_killed_vassal_is_restarted_and_a_changed_one_reloads() {
    let d = dirs("restart");
    d.write_vassal("v1");
    let emperor = start_emperor(&d);
    let first_worker = d.wait_serving("v1");
    let first_master = d.master_pid("v1").unwrap();

    kill(first_master, libc::SIGKILL);
    let master = wait_for("a new v1 master", READY, || {
        d.master_pid("v1")
            .filter(|p| *p != first_master && alive(*p))
    });
    let worker = wait_for("v1 to serve from a new worker", READY, || {
        d.serving_pid("v1").filter(|p| *p != first_worker)
    });
    assert!(emperor.stderr().contains("vassal died, restarting"));

    // An edit is the vassal master's own business: a graceful reload in place.
    touch(&d.ini("v1"));
    let reloaded = wait_for("v1 to reload after the edit", READY, || {
        d.serving_pid("v1").filter(|p| *p != worker)
    });
    assert_eq!(
        d.master_pid("v1"),
        Some(master),
        "a reload keeps the master"
    );

    // SIGHUP to the emperor reloads every vassal.
    kill(emperor.pid(), libc::SIGHUP);
    wait_for("v1 to reload after SIGHUP", READY, || {
        d.serving_pid("v1").filter(|p| *p != reloaded)
    });
    assert_eq!(d.master_pid("v1"), Some(master));
}

#[test]
fn an_invalid_ini_is_reported_once_and_waits_for_a_fix() {
    let d = dirs("invalid");
    // No socket: what happens when a non-vassal ini lands in the directory.
    std::fs::write(d.ini("bad"), "[uwsgi]\nprocesses = 1\n").unwrap();
    // Not vassals: hidden files and editor backups.
    std::fs::write(d.vassals.join(".hidden.ini"), d.ini_text("hidden", "")).unwrap();
    std::fs::write(d.vassals.join("backup.ini~"), d.ini_text("backup", "")).unwrap();
    let emperor = start_emperor(&d);
    wait_for("the config error", Duration::from_secs(30), || {
        emperor
            .stderr()
            .contains("vassal config is invalid")
            .then_some(())
    });
    // Absence over time is the point here: a respawn loop (immediate, then 1 s,
    // then 2 s) would have printed the error three times by now.
    std::thread::sleep(Duration::from_secs(4));
    let err = emperor.stderr();
    assert_eq!(err.matches("no socket configured").count(), 1, "{err}");
    assert_eq!(err.matches("vassal config is invalid").count(), 1, "{err}");
    assert!(err.contains("bad.ini"), "{err}");
    assert!(!d.sock("hidden").exists() && !d.sock("backup").exists());

    // Fixing the file starts the vassal.
    std::fs::write(d.ini("bad"), d.ini_text("bad", "")).unwrap();
    d.wait_serving("bad");
}

#[test]
fn vassals_stop_when_the_emperor_is_killed() {
    let d = dirs("orphan");
    d.write_vassal("v1");
    let mut emperor = start_emperor(&d);
    let worker = d.wait_serving("v1");
    let master = d.master_pid("v1").unwrap();
    kill(emperor.pid(), libc::SIGKILL);
    assert_eq!(emperor.wait_exit(Duration::from_secs(10)), None);
    wait_for(
        "the orphaned vassal to stop",
        Duration::from_secs(30),
        || (!alive(master) && !alive(worker) && !d.sock("v1").exists()).then_some(()),
    );
}

#[test]
fn a_crashing_vassal_is_restarted_with_back_off() {
    let d = dirs("crash");
    std::fs::write(
        d.ini("v1"),
        d.ini_text("v1", "")
            .replace("module = hello", "module = broken_import"),
    )
    .unwrap();
    let emperor = start_emperor(&d);
    let deaths = |err: &str| {
        err.lines()
            .filter(|l| l.contains("vassal died, restarting"))
            .map(|l| l.split("restart_in=").nth(1).unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    let delays = wait_for("three deaths of v1", Duration::from_secs(60), || {
        let d = deaths(&emperor.stderr());
        (d.len() >= 3).then_some(d)
    });
    let secs: Vec<f64> = delays.iter().map(|d| debug_duration_secs(d)).collect();
    assert_eq!(secs[0], 0.0, "the first restart is immediate: {delays:?}");
    assert!((0.8..1.2).contains(&secs[1]), "then about 1 s: {delays:?}");
    assert!((1.6..2.4).contains(&secs[2]), "then about 2 s: {delays:?}");
}

/// Parses a `Duration`'s Debug form as tracing logs it (`0ns`, `970ms`, `2.148s`).
fn debug_duration_secs(text: &str) -> f64 {
    let text = text.split_whitespace().next().unwrap_or("");
    for (unit, scale) in [("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)] {
        if let Some(n) = text.strip_suffix(unit) {
            return n.parse::<f64>().unwrap_or(f64::NAN) * scale;
        }
    }
    f64::NAN
}
