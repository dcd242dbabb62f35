//! Process titles: `ps`/`pgrep -f` tell the master and each worker apart.

mod common;

use std::time::Duration;

use common::*;

fn cmdline(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw)
        .trim_end_matches('\0')
        .to_string()
}

#[test]
fn master_and_workers_show_their_role_worker_number_and_generation() {
    let site = Site::new("proctitle", "hello", 2, "");
    let inst = site.start();
    let master = cmdline(inst.pid());
    assert_eq!(
        master,
        format!("amy-emperor master {}", site.ini().display()),
        "master cmdline"
    );
    let generation = site.status_json()["generation"]
        .as_u64()
        .expect("status --json has the generation");
    let mut titles: Vec<String> = wait_for("both workers titled", Duration::from_secs(30), || {
        let pids = inst.worker_pids();
        let titles: Vec<String> = pids.iter().map(|&p| cmdline(p)).collect();
        (titles.len() == 2 && titles.iter().all(|t| t.starts_with("amy-emperor worker ")))
            .then_some(titles)
    });
    titles.sort();
    assert_eq!(
        titles,
        vec![
            format!("amy-emperor worker 1 gen {generation}"),
            format!("amy-emperor worker 2 gen {generation}"),
        ]
    );
    for pid in inst.worker_pids() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert!(comm.starts_with("amy-worker "), "worker comm {comm:?}");
    }
    // Titles are cosmetic: the workers still serve.
    assert_eq!(uwsgi_get(&site.sock(), "/").unwrap().status, 200);
}
