//! A reload reads the ini off the master's loop: an `@(exec://…)` that takes
//! seconds never stops the master answering `status`, signals and its
//! workers, and a stop in the middle of it neither waits for the command nor
//! leaves it running.

use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::*;

/// Seconds the slow command takes: far longer than any answer may.
const SLOW: u64 = 8;

fn slow_ini(site: &Site, marker: &Path) -> String {
    site.ini_text(
        "hello",
        1,
        &format!(
            "slow-value = @(exec://touch {}; sleep {SLOW}; echo x)",
            marker.display()
        ),
    )
}

/// The pids whose command line is `sleep SLOW` and whose environment says
/// they belong to the master `master`.
fn slow_commands_of(master: i32) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmd != format!("sleep\0{SLOW}\0").as_bytes() {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let mark = format!("AMY_EMPEROR_INSTANCE={master}-");
        if env
            .split(|b| *b == 0)
            .any(|e| e.starts_with(mark.as_bytes()))
        {
            found.push(pid);
        }
    }
    found
}

#[test]
fn a_slow_exec_in_the_ini_at_reload_does_not_block_the_master() {
    let site = Site::new("reload-offloop", "hello", 1, "");
    let _inst = site.start();
    let marker = site.dir.join("exec-began");
    std::fs::write(site.ini(), slow_ini(&site, &marker)).unwrap();
    wait_for(
        "the reload's command to run",
        Duration::from_secs(30),
        || marker.exists().then_some(()),
    );
    // While the command runs: status answers at once, and requests are served.
    let t = Instant::now();
    let status = site.status_json();
    let took = t.elapsed();
    assert_eq!(status["phase"], "running", "{status}");
    assert!(
        took < Duration::from_secs(SLOW / 2),
        "status took {took:?} while the reload's config was read"
    );
    assert_eq!(uwsgi_get(&site.sock(), "/").unwrap().status, 200);
    // And the reload completes when the command does.
    wait_for(
        "generation 2 to serve",
        Duration::from_secs(SLOW + 30),
        || {
            let s = site.status_json();
            (s["generation"] == 2 && s["phase"] == "running").then_some(())
        },
    );
    assert_eq!(uwsgi_get(&site.sock(), "/").unwrap().status, 200);
}

#[test]
fn a_stop_during_a_slow_reload_read_is_prompt_and_leaves_no_command_behind() {
    let site = Site::new("reload-offloop-stop", "hello", 1, "");
    let mut inst = site.start();
    let master = inst.pid();
    let marker = site.dir.join("exec-began");
    std::fs::write(site.ini(), slow_ini(&site, &marker)).unwrap();
    wait_for(
        "the reload's command to run",
        Duration::from_secs(30),
        || marker.exists().then_some(()),
    );
    wait_for("its sleep to show", Duration::from_secs(5), || {
        (!slow_commands_of(master).is_empty()).then_some(())
    });
    let t = Instant::now();
    inst.signal(libc::SIGTERM);
    assert_eq!(inst.wait_exit(Duration::from_secs(SLOW + 30)), 0);
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(SLOW / 2),
        "the stop waited {took:?} for the reload's command"
    );
    wait_for(
        "the reload's command to be stopped with the master",
        Duration::from_secs(5),
        || slow_commands_of(master).is_empty().then_some(()),
    );
}
