//! Emperor details a monitoring script or a migrating site depends on: what
//! `ps` shows for the emperor and each vassal master (also while a vassal's
//! config still loads), and a vassal file in another uWSGI format named once
//! in the log instead of being skipped silently.

use std::path::Path;
use std::time::Duration;

mod common;
#[path = "common/vassals.rs"]
mod vassals;

use common::{alive, child_pids, cmdline, wait_for};
use vassals::{dirs, Emperor};

#[test]
fn the_emperor_and_a_vassal_master_are_titled_by_role_even_while_the_config_loads() {
    let d = dirs("titles");
    d.write_vassal("v1");
    // v2's ini takes a few seconds to read (`@(exec://…)`): its master must be
    // titled from the start, not show `…/amy-emperor start <ini>` meanwhile.
    d.write_vassal_with("v2", "slow-value = @(exec://sleep 4; echo x)");
    let emperor = Emperor::start(&d);
    let v2 = d.ini("v2");
    let loading = wait_for("v2's master to run", Duration::from_secs(20), || {
        child_pids(emperor.pid())
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
    d.write_vassal("v1");
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

#[test]
fn emperor_stats_lists_the_vassals_on_a_0600_socket_one_document_per_connection() {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let d = dirs("estats");
    d.write_vassal("v1");
    let stats = d.run.join("estats.sock");
    let ini = d.write_emperor_ini(&format!("emperor-stats = {}", stats.display()));
    let emperor = Emperor::spawn(&d, &["start", ini.to_str().unwrap()]);
    d.wait_serving("v1");
    let master = wait_for("v1's pidfile", Duration::from_secs(10), || {
        d.master_pid("v1")
    });
    let mode = std::fs::metadata(&stats).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    for _ in 0..2 {
        let doc = wait_for("v1 in the stats", Duration::from_secs(20), || {
            let mut text = String::new();
            std::os::unix::net::UnixStream::connect(&stats)
                .ok()?
                .read_to_string(&mut text)
                .ok()?;
            let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
            let listed = doc["vassals"]
                .as_array()?
                .iter()
                .any(|v| v["id"] == "v1.ini" && v["pid"].as_i64() == Some(i64::from(master)));
            listed.then_some(doc)
        });
        assert_eq!(doc["pid"].as_i64(), Some(i64::from(emperor.pid())), "{doc}");
    }
}
