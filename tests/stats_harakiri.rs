//! uWSGI's stats `harakiri_count`: the harakiris of each worker slot, kept
//! across the respawn that replaces the killed worker (uWSGI's
//! `uwsgi.workers[i].harakiri_count`, which `uwsgi_respawn_worker` does not
//! reset), read from the stats socket as uwsgitop reads it.

mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn read_stats(path: &Path) -> Option<Value> {
    let mut stream = UnixStream::connect(path).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// `(id, harakiri_count, respawn_count)` of every worker in the document.
fn slots(doc: &Value) -> Vec<(u64, u64, u64)> {
    let mut v: Vec<(u64, u64, u64)> = doc["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            (
                w["id"].as_u64().unwrap(),
                w["harakiri_count"].as_u64().unwrap(),
                w["respawn_count"].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn harakiri_count_counts_the_harakiris_of_each_slot_across_its_respawns() {
    let site = Site::new(
        "stats-harakiri",
        "metricsapp",
        2,
        "harakiri = 2\nstats = %dstats.sock\n",
    );
    let inst = site.start();
    let stats = site.dir.join("stats.sock");
    let before = read_stats(&stats).expect("stats");
    assert_eq!(slots(&before), vec![(1, 0, 1), (2, 0, 1)], "{before}");

    // One request stuck past harakiri: its worker is cut, its slot refilled.
    let port = site.http_port;
    let r = http_get(port, "/sleep?s=30").expect("an answer for the stuck request");
    assert_eq!(r.status, 504, "{}", inst.tail());
    let after = wait_for(
        "the harakiri to be counted and its slot refilled",
        Duration::from_secs(30),
        || {
            let doc = read_stats(&stats)?;
            let s = slots(&doc);
            (s.len() == 2 && s.iter().all(|w| w.2 >= 1) && s.iter().map(|w| w.1).sum::<u64>() == 1)
                .then_some(s)
        },
    );
    // The slot that was cut shows it on its new worker (respawn_count 2);
    // the other slot has none.
    let cut: Vec<_> = after.iter().filter(|w| w.1 == 1).collect();
    assert_eq!(cut.len(), 1, "{after:?}");
    wait_for(
        "the new worker of the cut slot",
        Duration::from_secs(30),
        || {
            let s = slots(&read_stats(&stats)?);
            s.iter()
                .any(|w| w.0 == cut[0].0 && w.1 == 1 && w.2 == 2)
                .then_some(())
        },
    );
    let other = after.iter().find(|w| w.0 != cut[0].0).unwrap();
    assert_eq!((other.1, other.2), (0, 1), "{after:?}");
    // status --json says the same of every worker of each slot (the cut
    // one may still be listed, killed, beside its replacement).
    let status = site.status_json();
    for w in status["workers"].as_array().unwrap() {
        let expected = u64::from(w["id"].as_u64() == Some(cut[0].0));
        assert_eq!(w["harakiri_count"].as_u64(), Some(expected), "{status}");
    }
}
