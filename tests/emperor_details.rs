//! Emperor details a monitoring script or a migrating site depends on: what
//! `ps` shows for the emperor and each vassal master (also while a vassal's
//! config still loads), and a vassal file in another uWSGI format named once
//! in the log instead of being skipped silently.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{alive, kill, repo, uwsgi_get, venv, wait_for, BIN};

const READY: Duration = Duration::from_secs(60);

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
    let base = PathBuf::from(format!("/tmp/amy-ed-{}-{name}", std::process::id()));
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
    fn write_vassal(&self, name: &str, extra: &str) {
        let text = format!(
            "[uwsgi]\nchdir = {apps}\nmodule = hello\nhome = {venv}\nmaster = true\nprocesses = 1\n\
             socket = {sock}\nvacuum = true\npidfile = {pid}\nlogto = {run}/{name}.log\n{extra}\n",
            apps = repo().join("tests/apps").display(),
            venv = venv().display(),
            sock = self.sock(name).display(),
            pid = self.pidfile(name).display(),
            run = self.run.display(),
        );
        std::fs::write(self.ini(name), text).unwrap();
    }
    fn master_pid(&self, name: &str) -> Option<i32> {
        std::fs::read_to_string(self.pidfile(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
    fn wait_serving(&self, name: &str) {
        wait_for(&format!("vassal {name} to serve"), READY, || {
            let r = uwsgi_get(&self.sock(name), "/").ok()?;
            (r.status == 200).then_some(())
        })
    }
}

struct Emperor {
    child: Child,
    err: PathBuf,
}

impl Emperor {
    fn start(d: &Dirs) -> Emperor {
        let err = d.run.join("emperor.err");
        let child = Command::new(BIN)
            .args(["start", "--emperor", d.vassals.to_str().unwrap()])
            .current_dir(&d.base)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&err).unwrap()))
            .spawn()
            .unwrap();
        Emperor { child, err }
    }
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }
}

impl Drop for Emperor {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- emperor stderr ---\n{}", self.stderr());
        }
        kill(self.pid(), libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && self.child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cmdline(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw)
        .trim_end_matches('\0')
        .replace('\0', " ")
}

/// The children of `parent`, from /proc.
fn children(parent: i32) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().nth(1))
            .and_then(|s| s.parse::<i32>().ok());
        if ppid == Some(parent) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn the_emperor_and_a_vassal_master_are_titled_by_role_even_while_the_config_loads() {
    let d = dirs("titles");
    d.write_vassal("v1", "");
    // v2's ini takes a few seconds to read (`@(exec://…)`): its master must be
    // titled from the start, not show `…/amy-emperor start <ini>` meanwhile.
    d.write_vassal("v2", "slow-value = @(exec://sleep 4; echo x)");
    let emperor = Emperor::start(&d);
    let v2 = d.ini("v2");
    let loading = wait_for("v2's master to run", Duration::from_secs(20), || {
        children(emperor.pid())
            .into_iter()
            .find(|&p| cmdline(p).ends_with(v2.to_str().unwrap()))
    });
    let title = format!("amy-emperor master {}", v2.display());
    wait_for("v2's master to be titled", Duration::from_secs(3), || {
        (cmdline(loading) == title).then_some(())
    });
    // Still reading its config (the pidfile comes after it).
    assert!(!d.pidfile("v2").exists(), "v2 loaded its config already");
    d.wait_serving("v1");
    assert_eq!(
        cmdline(emperor.pid()),
        format!("amy-emperor emperor {}", d.vassals.display())
    );
    let v1 = d.master_pid("v1").expect("v1's pidfile");
    assert_eq!(
        cmdline(v1),
        format!("amy-emperor master {}", d.ini("v1").display())
    );
    // The title is cosmetic: nothing else changed.
    d.wait_serving("v2");
    assert!(alive(v1));
}

#[test]
fn a_vassal_file_in_another_uwsgi_format_is_named_once_not_skipped_silently() {
    let d = dirs("formats");
    d.write_vassal("v1", "");
    std::fs::write(d.vassals.join("legacy.yml"), "uwsgi:\n  socket: x.sock\n").unwrap();
    std::fs::write(
        d.vassals.join("notes.txt"),
        "not a vassal for uWSGI either\n",
    )
    .unwrap();
    let emperor = Emperor::start(&d);
    d.wait_serving("v1");
    let warned = |text: &str, name: &str| {
        text.lines()
            .filter(|l| l.contains("vassal file not run") && l.contains(name))
            .count()
    };
    wait_for("the yaml file to be named", Duration::from_secs(20), || {
        (warned(&emperor.stderr(), "legacy.yml") == 1).then_some(())
    });
    // Rescans (files coming and going) do not repeat it; a new one is named.
    for i in 0..5 {
        let p = d.vassals.join(format!("scratch{i}.txt"));
        std::fs::write(&p, "x").unwrap();
        std::fs::remove_file(&p).unwrap();
    }
    std::fs::write(d.vassals.join("other.json"), "{}").unwrap();
    wait_for("the json file to be named", Duration::from_secs(20), || {
        (warned(&emperor.stderr(), "other.json") == 1).then_some(())
    });
    let text = emperor.stderr();
    assert_eq!(warned(&text, "legacy.yml"), 1, "{text}");
    assert_eq!(warned(&text, "notes.txt"), 0, "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("legacy.yml") && l.contains("format=yaml")),
        "{text}"
    );
    // The ini vassal kept serving; the yaml one was never started.
    d.wait_serving("v1");
    assert!(!Path::new(&d.run.join("x.sock")).exists());
}
