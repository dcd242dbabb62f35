//! `master-fifo` with the real binary: created 0600, `r` reloads (a new
//! generation serves), `l` reopens the log, an unknown command is logged and
//! ignored, `q` stops gracefully (exit 0); a path that is not a fifo is refused
//! and left alone.

mod common;

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::Duration;

use common::*;

fn send(path: &std::path::Path, cmd: &str) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all(cmd.as_bytes()).unwrap();
}

#[test]
fn fifo_commands_reload_and_stop() {
    let site = Site::new("fifo", "hello", 1, "");
    let fifo = site.dir.join("master.fifo");
    site.write_ini("hello", 1, &format!("master-fifo = {}\n", fifo.display()));
    let mut inst = site.start();
    let meta = std::fs::symlink_metadata(&fifo).unwrap();
    assert!(meta.file_type().is_fifo());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    send(&fifo, "r\n");
    wait_for("generation 2 to serve", Duration::from_secs(30), || {
        let s = site.status_json();
        (s["generation"] == 2 && s["reloading"] == false).then_some(())
    });
    assert_eq!(uwsgi_get(&site.sock(), "/").unwrap().status, 200);

    send(&fifo, "lf");
    wait_for(
        "the log reopen and the refusal",
        Duration::from_secs(10),
        || {
            let log = site.log_text();
            (log.contains("log reopened") && log.contains("master fifo command not supported"))
                .then_some(())
        },
    );

    send(&fifo, "q");
    assert_eq!(inst.wait_exit(Duration::from_secs(30)), 0);
}

#[test]
fn a_path_that_is_not_a_fifo_is_refused_and_left_alone() {
    let site = Site::new("fifo-file", "hello", 1, "");
    let path = site.dir.join("notafifo");
    std::fs::write(&path, "keep me").unwrap();
    site.write_ini("hello", 1, &format!("master-fifo = {}\n", path.display()));
    let mut inst = site.spawn();
    assert_eq!(inst.wait_exit(Duration::from_secs(30)), 1);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
    let said =
        site.log_text() + &std::fs::read_to_string(site.dir.join("stderr.txt")).unwrap_or_default();
    assert!(said.contains("is not a fifo"), "{said}");
    assert!(!site.pidfile().exists(), "cleaned up");
    assert!(!site.sock().exists(), "vacuumed");
}
