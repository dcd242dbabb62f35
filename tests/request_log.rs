//! The request log's `req: a/b` means what uWSGI means: `a` counts the
//! worker's requests, `b` the requests of the whole instance.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;

#[test]
fn req_a_counts_the_worker_and_b_the_whole_instance() {
    let site = Site::new("reqab", "pep3333", 2, "");
    let _inst = site.start();
    // Two requests at once: both workers serve one.
    let sock = site.sock();
    let both: Vec<_> = (0..2)
        .map(|_| {
            let sock = sock.clone();
            std::thread::spawn(move || uwsgi_get(&sock, "/sleep?s=1").unwrap().status)
        })
        .collect();
    for t in both {
        assert_eq!(t.join().unwrap(), 200);
    }
    for _ in 0..38 {
        assert_eq!(uwsgi_get(&site.sock(), "/pid").unwrap().status, 200);
    }
    let lines = wait_for("40 request lines", Duration::from_secs(20), || {
        let lines: Vec<String> = site
            .log_text()
            .lines()
            .filter(|l| l.starts_with("[pid: "))
            .map(String::from)
            .collect();
        (lines.len() >= 40).then_some(lines)
    });
    let mut per_worker: HashMap<String, u64> = HashMap::new();
    for (i, line) in lines.iter().enumerate() {
        let pid = line["[pid: ".len()..line.find('|').unwrap()].to_string();
        let req = &line[line.find("|req: ").unwrap() + 6..line.find(']').unwrap()];
        let (a, b) = req.split_once('/').unwrap();
        let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
        assert_eq!(b, i as u64 + 1, "b counts the instance's requests: {line}");
        let seen = per_worker.entry(pid).or_default();
        *seen += 1;
        assert_eq!(a, *seen, "a counts this worker's requests: {line}");
    }
    assert_eq!(per_worker.len(), 2, "both workers served: {per_worker:?}");
}
