//! amy-emperor next to another server on the same files: a refused start must
//! leave every file as it found it. The other server is real uWSGI 2.0.31 run
//! on the same ini (the switch-over moment of a real site).

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// uWSGI runs on the site's own ini (same `amy.sock`, `amy.pid`); it is stopped
/// and reaped when the test ends, pass or fail.
struct Uwsgi(std::process::Child);

impl Drop for Uwsgi {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_start_refused_by_a_running_uwsgi_leaves_its_pidfile_and_socket_alone() {
    let site = Site::new("foreign", "hello", 1, "");
    let uwsgi_log = std::fs::File::create(site.dir.join("uwsgi.out")).unwrap();
    let mut uwsgi = Uwsgi(
        Command::new(venv().join("bin/uwsgi"))
            .arg("--ini")
            .arg(site.ini())
            // uWSGI's own logto would share amy.log; keep its output apart.
            .arg("--logto")
            .arg(site.dir.join("uwsgi.log"))
            .current_dir(&site.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(uwsgi_log.try_clone().unwrap()))
            .stderr(Stdio::from(uwsgi_log))
            .spawn()
            .unwrap(),
    );
    let uwsgi_pid = uwsgi.0.id() as i32;
    wait_for(
        "uWSGI to answer on amy.sock",
        Duration::from_secs(30),
        || {
            uwsgi_get(&site.sock(), "/")
                .ok()
                .filter(|r| r.status == 200)
        },
    );
    let pid_text = wait_for("uWSGI's pidfile", Duration::from_secs(10), || {
        std::fs::read_to_string(site.pidfile())
            .ok()
            .filter(|t| !t.trim().is_empty())
    });
    let sock_inode = std::fs::metadata(site.sock()).unwrap().ino();

    let out = site.cli(&["start", site.ini().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("amy.sock"),
        "the refusal names the socket: {stderr}"
    );

    // Everything as uWSGI left it: its pidfile, its socket, no control socket.
    assert_eq!(std::fs::read_to_string(site.pidfile()).unwrap(), pid_text);
    assert_eq!(std::fs::metadata(site.sock()).unwrap().ino(), sock_inode);
    let leftovers: Vec<String> = std::fs::read_dir(&site.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".ctl") || n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    assert_eq!(uwsgi_get(&site.sock(), "/").unwrap().status, 200);

    // status does not call a live uWSGI "dead": 4 (unknown), with the reason.
    let status = site.cli(&["status", site.ini().to_str().unwrap()]);
    assert_eq!(status.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&status.stdout).contains("not an amy-emperor master"));

    // And uWSGI's own stop still works through its untouched pidfile.
    let stop = Command::new(venv().join("bin/uwsgi"))
        .arg("--stop")
        .arg(site.pidfile())
        .output()
        .unwrap();
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let code = wait_for(
        "uWSGI to exit after --stop",
        Duration::from_secs(30),
        || uwsgi.0.try_wait().unwrap(),
    );
    assert!(
        code.success() || code.code().is_some(),
        "uWSGI exited: {code:?}"
    );
    assert!(!alive(uwsgi_pid) || uwsgi.0.try_wait().unwrap().is_some());
}
