//! Cron jobs with the real binary: a job due every minute runs at start (as in
//! uWSGI) and again at the next minute, with the instance's environment, logged
//! with its exit status and duration; a `unique` job still running is skipped,
//! never run twice at once; `harakiri=` kills a job that runs too long; the
//! seed's SQLite backup job takes consistent snapshots while the app writes.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn jobs_fire_each_minute_and_a_unique_job_never_overlaps() {
    let site = Site::new("cron-unique", "hello", 1, "");
    let d = site.dir.display().to_string();
    // The slow job outlives the next minute boundary.
    std::fs::write(
        site.dir.join("slow.sh"),
        "#!/bin/sh\necho \"start $$\" >> \"$1\"\nsleep 75\necho \"end $$\" >> \"$1\"\n",
    )
    .unwrap();
    site.write_ini(
        "hello",
        1,
        &format!(
            "cron2 = minute=-1 sh -c 'echo \"tick $AMY_GREETING\" >> {d}/tick.out; exit 3'\n\
             unique-cron = -1 -1 -1 -1 -1 sh {d}/slow.sh {d}/slow.out\n"
        ),
    );
    let t0 = Instant::now();
    let mut inst = site.start();
    // Due at start (uWSGI looks at the current minute at once), maybe again if
    // a minute boundary passed meanwhile.
    wait_for("the first tick", Duration::from_secs(20), || {
        (!lines(&site.dir.join("tick.out")).is_empty()).then_some(())
    });
    assert_eq!(
        lines(&site.dir.join("tick.out"))[0],
        "tick hello",
        "uwsgi_env reaches the job"
    );
    wait_for("the slow job to start", Duration::from_secs(20), || {
        (lines(&site.dir.join("slow.out")).len() == 1).then_some(())
    });
    let status = site.status_json();
    assert_eq!(
        status["crons"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );
    assert_eq!(status["crons"][1]["unique"], true);
    assert_eq!(
        status["crons"][1]["running"].as_array().map(Vec::len),
        Some(1)
    );
    // The next minute: the plain job runs again, the unique one is skipped.
    wait_for("the skip to be logged", Duration::from_secs(65), || {
        site.log_text()
            .contains("unique cron job still running: skipped")
            .then_some(())
    });
    wait_for(
        "the plain job to run again",
        Duration::from_secs(10),
        || (lines(&site.dir.join("tick.out")).len() >= 2).then_some(()),
    );
    let slow = lines(&site.dir.join("slow.out"));
    assert_eq!(slow.len(), 1, "never two runs at once: {slow:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(75),
        "checked before the slow job ended"
    );
    let log = site.log_text();
    assert!(
        log.lines().any(|l| l.contains("cron job finished")
            && l.contains("status=exit 3")
            && l.contains("duration_s=")),
        "exit status and duration logged:\n{log}"
    );
    // A stop ends the running job with the instance.
    let slow_pid: i32 = slow[0].trim_start_matches("start ").parse().unwrap();
    inst.signal(15);
    assert_eq!(inst.wait_exit(Duration::from_secs(30)), 0);
    wait_for(
        "the slow job to be stopped",
        Duration::from_secs(10),
        || (!alive(slow_pid)).then_some(()),
    );
}

#[test]
fn cron_harakiri_kills_a_job_that_runs_too_long() {
    let site = Site::new("cron-harakiri", "hello", 1, "");
    let d = site.dir.display().to_string();
    site.write_ini(
        "hello",
        1,
        &format!(
            "cron-harakiri = 2\ncron = -1 -1 -1 -1 -1 sh -c 'echo $$ > {d}/h.pid; exec sleep 60'\n"
        ),
    );
    let _inst = site.start();
    let pid: i32 = wait_for("the job to start", Duration::from_secs(20), || {
        std::fs::read_to_string(site.dir.join("h.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    let t0 = Instant::now();
    wait_for("harakiri", Duration::from_secs(15), || {
        (!alive(pid)).then_some(())
    });
    assert!(t0.elapsed() < Duration::from_secs(10));
    wait_for("the kill to be logged", Duration::from_secs(10), || {
        let log = site.log_text();
        (log.contains("cron job harakiri")
            && log.contains("harakiri=true")
            && log.contains("status=signal 9"))
        .then_some(())
    });
}

fn sqlite_check(python: &Path, db: &Path) -> (String, i64, i64) {
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(
            "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\n\
             ok=c.execute('PRAGMA integrity_check').fetchall()\n\
             rows=c.execute('SELECT count(*) FROM rows').fetchone()[0]\n\
             total=c.execute('SELECT coalesce(sum(n),0) FROM total').fetchone()[0]\n\
             print(ok[0][0] if len(ok)==1 else repr(ok), rows, total)",
        )
        .arg(db)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut it = text.split_whitespace();
    (
        it.next().unwrap_or("").to_string(),
        it.next().and_then(|s| s.parse().ok()).unwrap_or(-1),
        it.next().and_then(|s| s.parse().ok()).unwrap_or(-1),
    )
}

#[test]
fn the_backup_job_snapshots_a_database_the_app_writes_to_consistently() {
    let site = Site::new("cron-backup", "sqlwriter", 2, "");
    let d = site.dir.display().to_string();
    let python = venv().join("bin/python");
    let script = repo().join("examples/amy_site/backup/sqlite_snapshot.py");
    let db = site.dir.join("db.sqlite3");
    site.write_env(&format!("SQLWRITER_DB={}\n", db.display()));
    // The live database exists before the instance starts (the cron run at start
    // snapshots it).
    let init = std::process::Command::new(&python)
        .arg("-c")
        .arg("import sqlite3,sys;c=sqlite3.connect(sys.argv[1]);c.execute('CREATE TABLE rows (id INTEGER PRIMARY KEY, pad BLOB)');c.execute('CREATE TABLE total (n INTEGER)');c.execute('INSERT INTO total VALUES (0)');c.commit()")
        .arg(&db)
        .status()
        .unwrap();
    assert!(init.success());
    // What examples/amy_site/README.md tells the site to add, every minute here.
    site.write_ini(
        "sqlwriter",
        2,
        &format!(
            "cron2 = minute=-1,unique=1,harakiri=120 {py} {script} {db} {d}/backups --keep 5\n",
            py = python.display(),
            script = script.display(),
            db = db.display()
        ),
    );
    let _inst = site.start();
    // Writers: two threads commit continuously through the app for the whole test.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            let sock = site.sock();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut ok = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline
                {
                    let packet = uwsgi_packet("POST", "/", &[], b"");
                    if let Ok(raw) = raw_unix(&sock, &packet) {
                        if parse_response(&raw).is_some_and(|r| r.status == 200) {
                            ok += 1;
                        }
                    }
                }
                ok
            })
        })
        .collect();
    // The cron run at start.
    wait_for("the cron snapshot", Duration::from_secs(30), || {
        site.dir
            .join("backups/amy-latest.sqlite3")
            .exists()
            .then_some(())
    });
    // And more snapshots while the writers go on, as the backup servers' hourly
    // fetch would see them.
    let mut previous_rows = 0;
    for _ in 0..8 {
        let out = std::process::Command::new(&python)
            .arg(&script)
            .arg(&db)
            .arg(site.dir.join("backups"))
            .arg("--keep")
            .arg("5")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let latest = site.dir.join("backups/amy-latest.sqlite3");
        let (check, rows, total) = sqlite_check(&python, &latest);
        assert_eq!(check, "ok", "integrity_check of {}", latest.display());
        assert_eq!(
            rows, total,
            "a snapshot is one transaction: rows match the running total"
        );
        assert!(
            rows >= previous_rows,
            "snapshots move forward: {rows} < {previous_rows}"
        );
        previous_rows = rows;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let committed: u32 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(
        committed > 20,
        "the app wrote during the snapshots ({committed} commits)"
    );
    assert!(previous_rows > 0, "snapshots hold data");
    // Every file the backup servers could fetch passes integrity_check; old ones are pruned.
    let mut snaps: Vec<_> = std::fs::read_dir(site.dir.join("backups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sqlite3"))
        .collect();
    snaps.sort();
    assert!(
        snaps.len() <= 6,
        "pruned to --keep 5 plus latest: {snaps:?}"
    );
    for snap in &snaps {
        let (check, rows, total) = sqlite_check(&python, snap);
        assert_eq!(check, "ok", "{}", snap.display());
        assert_eq!(rows, total, "{}", snap.display());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(snap).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "{}", snap.display());
    }
    assert!(
        !std::fs::read_dir(site.dir.join("backups"))
            .unwrap()
            .any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".partial")),
        "no partial file left"
    );
    assert!(
        site.log_text().contains("sqlite-snapshot: wrote"),
        "{}",
        site.log_text()
    );
}
