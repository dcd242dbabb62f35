//! The Prometheus endpoint (`prometheus = ADDR`) and harakiri's stack dump,
//! against the real binary and real Python workers. Every scrape is parsed by
//! `prometheus_client`'s own text parser (the reference Python client).

mod common;
#[path = "common/vassals.rs"]
mod vassals;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The secret `Site` puts in `uwsgi_env`.
const CANARY: &str = "canary-secret-7f3a9";
/// Request data: in a query string and a header, never in the metrics.
const REQUEST_TOKEN: &str = "request-token-5c1e";

/// One sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

struct Scraped {
    text: String,
    samples: Vec<Sample>,
}

impl Scraped {
    /// The value of `name` with exactly `labels` (panics if absent).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && *l == want)
            .map(|(_, _, v)| *v)
            .unwrap_or_else(|| panic!("no sample {name}{want:?} in\n{}", self.text))
    }
}

/// Parses exposition text with prometheus_client's parser; fails on any
/// syntax it rejects.
fn parse(text: &str) -> Vec<Sample> {
    let mut child = Command::new(venv().join("bin/python"))
        .arg("-c")
        .arg(
            "import sys, json\n\
             from prometheus_client.parser import text_string_to_metric_families\n\
             out = []\n\
             for fam in text_string_to_metric_families(sys.stdin.read()):\n\
             \x20   for s in fam.samples:\n\
             \x20       out.append([s.name, s.labels, s.value])\n\
             print(json.dumps(out))\n",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejected the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn scrape(port: u16) -> Scraped {
    let r = http_get(port, "/metrics").expect("scrape");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text();
    assert!(!text.contains(CANARY), "a secret in the metrics:\n{text}");
    assert!(
        !text.contains(REQUEST_TOKEN) && !text.contains("/ok") && !text.contains("/stuck"),
        "request data in the metrics:\n{text}"
    );
    Scraped {
        samples: parse(&text),
        text,
    }
}

fn metrics_site(name: &str, processes: u32, extra: &str) -> (Site, u16) {
    let port = free_port();
    let site = Site::new(
        name,
        "metricsapp",
        processes,
        &format!("prometheus = 127.0.0.1:{port}\n{extra}"),
    );
    (site, port)
}

/// The histogram's own consistency: cumulative buckets, +Inf == _count.
fn assert_histogram_consistent(s: &Scraped) {
    let mut buckets: Vec<(f64, f64)> = s
        .samples
        .iter()
        .filter(|(n, _, _)| n == "amy_request_duration_seconds_bucket")
        .map(|(_, l, v)| {
            let le = &l["le"];
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (le, *v)
        })
        .collect();
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    let count = s.get("amy_request_duration_seconds_count", &[]);
    assert_eq!(buckets.last().unwrap().1, count);
}

#[test]
fn counters_match_a_known_mix_and_survive_a_worker_kill_and_a_reload() {
    let (site, port) = metrics_site("metrics-mix", 2, "");
    let inst = site.start();
    for _ in 0..12 {
        assert_eq!(http_get(site.http_port, "/ok").unwrap().status, 200);
    }
    // Through the uwsgi socket too (the other listener), with a token in the
    // query string and a header: neither may reach the metrics.
    for _ in 0..5 {
        let raw = raw_unix(
            &site.sock(),
            &uwsgi_packet(
                "GET",
                &format!("/ok?token={REQUEST_TOKEN}"),
                &[("X-Token", REQUEST_TOKEN)],
                b"",
            ),
        )
        .unwrap();
        assert_eq!(parse_response(&raw).unwrap().status, 200);
    }
    for _ in 0..7 {
        assert_eq!(http_get(site.http_port, "/missing").unwrap().status, 404);
    }
    for _ in 0..3 {
        assert_eq!(http_get(site.http_port, "/boom").unwrap().status, 500);
    }
    let s = scrape(port);
    assert_eq!(s.get("amy_requests_total", &[("status", "2xx")]), 17.0);
    assert_eq!(s.get("amy_requests_total", &[("status", "4xx")]), 7.0);
    assert_eq!(s.get("amy_requests_total", &[("status", "5xx")]), 3.0);
    assert_eq!(s.get("amy_requests_total", &[("status", "other")]), 0.0);
    assert_eq!(s.get("amy_request_duration_seconds_count", &[]), 27.0);
    assert_histogram_consistent(&s);
    let sock = site.sock().display().to_string();
    assert_eq!(
        s.get("amy_listener_requests_total", &[("listener", &sock)]),
        5.0
    );
    assert_eq!(
        s.get(
            "amy_listener_requests_total",
            &[("listener", &format!("127.0.0.1:{}", site.http_port))]
        ),
        22.0
    );
    assert_eq!(s.get("amy_app_exceptions_total", &[]), 3.0);
    assert!(s.get("amy_response_bytes_total", &[]) > 0.0);
    assert_eq!(s.get("amy_workers", &[("state", "idle")]), 2.0);
    assert_eq!(s.get("amy_worker_spawns_total", &[]), 2.0);
    assert_eq!(s.get("amy_generation", &[]), 1.0);
    assert_eq!(s.get("amy_requests_in_flight", &[]), 0.0);
    assert!(s.get("amy_master_rss_bytes", &[]) > 0.0);
    // The http-socket is TCP: the kernel reports its queue.
    let http = format!("127.0.0.1:{}", site.http_port);
    assert_eq!(
        s.get(
            "amy_listen_queue",
            &[("listener", &http), ("proto", "http")]
        ),
        0.0
    );
    assert!(
        s.get(
            "amy_listen_queue_max",
            &[("listener", &http), ("proto", "http")]
        ) > 0.0
    );
    // The unix socket too (sock_diag), with its backlog.
    assert_eq!(
        s.get(
            "amy_listen_queue",
            &[("listener", &sock), ("proto", "uwsgi")]
        ),
        0.0
    );
    assert!(
        s.get(
            "amy_listen_queue_max",
            &[("listener", &sock), ("proto", "uwsgi")]
        ) > 0.0
    );

    // A worker killed: its counts stay in the instance's totals.
    let victim = inst.worker_pids()[0];
    assert!(kill(victim, 9));
    wait_for(
        "the killed worker to be replaced",
        Duration::from_secs(30),
        || {
            let s = scrape(port);
            (s.get("amy_worker_spawns_total", &[]) == 3.0
                && s.get("amy_workers", &[("state", "idle")]) == 2.0)
                .then_some(())
        },
    );
    let s = scrape(port);
    assert_eq!(s.get("amy_worker_exits_total", &[("reason", "crash")]), 1.0);
    assert_eq!(s.get("amy_requests_total", &[("status", "2xx")]), 17.0);
    assert_eq!(s.get("amy_requests_total", &[("status", "4xx")]), 7.0);
    assert_eq!(s.get("amy_requests_total", &[("status", "5xx")]), 3.0);
    assert_eq!(s.get("amy_request_duration_seconds_count", &[]), 27.0);

    // A reload: a new generation of workers, the same counters.
    let out = site.cli(&["reload", site.ini().to_str().unwrap()]);
    assert!(out.status.success(), "{}", inst.tail());
    wait_for(
        "the old generation to leave",
        Duration::from_secs(30),
        || {
            let s = scrape(port);
            (s.get("amy_worker_exits_total", &[("reason", "reload")]) == 2.0).then_some(())
        },
    );
    let s = scrape(port);
    assert_eq!(s.get("amy_generation", &[]), 2.0);
    assert_eq!(s.get("amy_reloads_total", &[("outcome", "ok")]), 1.0);
    assert_eq!(s.get("amy_reloads_total", &[("outcome", "rejected")]), 0.0);
    assert_eq!(s.get("amy_requests_total", &[("status", "2xx")]), 17.0);
    assert_eq!(s.get("amy_request_duration_seconds_count", &[]), 27.0);
    for _ in 0..4 {
        assert_eq!(http_get(site.http_port, "/ok").unwrap().status, 200);
    }
    let s = scrape(port);
    assert_eq!(s.get("amy_requests_total", &[("status", "2xx")]), 21.0);
    assert_eq!(s.get("amy_request_duration_seconds_count", &[]), 31.0);
    assert_histogram_consistent(&s);
    let log = site.log_text();
    assert!(!log.contains(CANARY));
    // The retired workers left on SIGTERM, not through an escaped `_Stop`
    // (the harakiri thread once took SIGTERM from the main thread).
    assert!(
        !log.contains("_Stop") && !log.contains("reason=Crashed"),
        "{log}"
    );
}

#[test]
fn harakiri_dumps_the_stuck_stack_answers_504_and_spares_the_other_threads() {
    let (site, port) = metrics_site("metrics-harakiri", 1, "threads = 4\nharakiri = 2\n");
    let inst = site.start();
    // The default: workers forked from the preloaded app's template.
    assert_eq!(site.status_json()["templates"][0]["state"], "ready");
    let pid = inst.worker_pids()[0];
    let http_port = site.http_port;
    let stuck = std::thread::spawn(move || http_get(http_port, "/stuck?s=30&token=q"));
    // The other three threads get requests that are in flight when harakiri
    // fires (the stuck one is 1.5 s old; harakiri looks once a second past 2 s)
    // and end well before the kill.
    wait_for(
        "the stuck request to be 1.5 s old",
        Duration::from_secs(20),
        || {
            let s = site.status_json();
            let age = s["workers"][0]["request_age_s"].as_f64()?;
            (age >= 1.5).then_some(())
        },
    );
    let others: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || http_get(http_port, "/sleep?s=2")))
        .collect();
    let started = Instant::now();
    let r = stuck
        .join()
        .unwrap()
        .expect("the stuck client gets an answer");
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the 504 came before the kill"
    );
    for o in others {
        let r = o
            .join()
            .unwrap()
            .expect("the other threads' requests complete");
        assert_eq!(
            (r.status, r.text()),
            (200, "slept".to_string()),
            "{}",
            inst.tail()
        );
    }
    let log = wait_for("the kill", Duration::from_secs(20), || {
        let log = site.log_text();
        log.contains("harakiri: killing the worker").then_some(log)
    });
    let dump = log
        .find("HARAKIRI: worker 1")
        .unwrap_or_else(|| panic!("no dump in the log:\n{log}"));
    let killed = log.find("harakiri: killing the worker").unwrap();
    assert!(dump < killed, "the dump comes before the kill:\n{log}");
    let dump_text = &log[dump..killed];
    assert!(
        dump_text.contains(&format!(
            "HARAKIRI: worker 1 (pid {pid}) request GET /stuck stuck for"
        )),
        "worker, pid, method and path: {dump_text}"
    );
    let age: f64 = dump_text
        .split("stuck for ")
        .nth(1)
        .and_then(|t| t.split(" s").next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("the age: {dump_text}"));
    assert!((2.0..4.0).contains(&age), "age {age} for harakiri = 2");
    assert!(
        dump_text.contains("in handle_stuck_report")
            && dump_text.contains("in wait_for_the_lock_that_never_comes"),
        "the stack names the stuck functions:\n{dump_text}"
    );
    assert!(
        !dump_text.contains("token=q"),
        "no query string: {dump_text}"
    );

    let s = wait_for(
        "the harakiri'd worker's exit",
        Duration::from_secs(20),
        || {
            let s = scrape(port);
            (s.get("amy_worker_exits_total", &[("reason", "harakiri")]) == 1.0).then_some(s)
        },
    );
    assert_eq!(s.get("amy_harakiri_total", &[]), 1.0);
    assert_eq!(s.get("amy_requests_total", &[("status", "5xx")]), 1.0);
    assert_eq!(s.get("amy_requests_total", &[("status", "2xx")]), 3.0);
    assert_eq!(s.get("amy_request_duration_seconds_count", &[]), 4.0);
    assert_histogram_consistent(&s);
    // The slot was refilled and serves.
    assert_eq!(http_get(site.http_port, "/ok").unwrap().status, 200);
}

#[test]
fn the_endpoint_answers_within_10ms_while_every_worker_is_busy() {
    let (site, port) = metrics_site("metrics-busy", 2, "");
    let inst = site.start();
    let http_port = site.http_port;
    let busy: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || http_get(http_port, "/sleep?s=10")))
        .collect();
    wait_for("both workers busy", Duration::from_secs(30), || {
        let s = scrape(port);
        let (n, busy) = (
            s.get("amy_requests_in_flight", &[]),
            s.get("amy_workers", &[("state", "busy")]),
        );
        eprintln!("in flight {n}, busy workers {busy}");
        (n == 2.0 && busy == 2.0).then_some(())
    });
    let mut took = Vec::new();
    let mut last = String::new();
    for _ in 0..20 {
        let t = Instant::now();
        let r = http_get(port, "/metrics").unwrap();
        took.push(t.elapsed());
        assert_eq!(r.status, 200);
        last = r.text();
    }
    assert!(
        last.contains("\namy_requests_in_flight 2\n")
            && last.contains("\namy_workers{state=\"busy\"} 2\n"),
        "the workers were still busy at the last timed scrape:\n{last}"
    );
    took.sort();
    let median = took[took.len() / 2];
    assert!(
        median < Duration::from_millis(10),
        "median scrape {median:?} while busy: {took:?}"
    );
    // What a scrape costs the master: its CPU time over many scrapes.
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", inst.pid())).unwrap();
        let f: Vec<u64> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|v| v.parse().unwrap())
            .collect();
        f[0] + f[1]
    };
    let n = 500;
    let before = cpu();
    for _ in 0..n {
        http_get(port, "/metrics").unwrap();
    }
    let ticks = cpu() - before;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    eprintln!(
        "master CPU per scrape: {:.3} ms over {n} scrapes (2 workers, median latency {median:?})",
        ticks as f64 / hz * 1000.0 / n as f64
    );
    for b in busy {
        assert_eq!(b.join().unwrap().unwrap().status, 200);
    }
}

#[test]
fn log_slow_logs_slow_requests_with_logging_disabled_and_counts_them() {
    let (site, port) = metrics_site(
        "metrics-slow",
        1,
        "disable-logging = true\nlog-slow = 300\n",
    );
    let _inst = site.start();
    assert_eq!(
        http_get(site.http_port, "/sleep?s=0.5").unwrap().status,
        200
    );
    assert_eq!(http_get(site.http_port, "/ok").unwrap().status, 200);
    let log = wait_for("the slow request's line", Duration::from_secs(10), || {
        let log = site.log_text();
        log.contains("GET /sleep?s=0.5 =>").then_some(log)
    });
    assert!(
        !log.contains("GET /ok =>"),
        "a fast request was logged:\n{log}"
    );
    // With its duration, as uWSGI's line has it ("in N msecs").
    let line = log
        .lines()
        .find(|l| l.contains("GET /sleep?s=0.5 =>"))
        .unwrap();
    let msecs: u64 = line
        .split(" msecs")
        .next()
        .and_then(|t| t.rsplit(' ').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no duration in {line}"));
    assert!((500..2000).contains(&msecs), "{line}");
    let s = scrape(port);
    assert_eq!(s.get("amy_slow_requests_total", &[]), 1.0);
    assert_eq!(s.get("amy_log_slow_seconds", &[]), 0.3);
    // The threshold sits between buckets the histogram shows.
    assert_eq!(
        s.get("amy_request_duration_seconds_bucket", &[("le", "0.25")]),
        1.0
    );
    assert_eq!(
        s.get("amy_request_duration_seconds_bucket", &[("le", "0.5")]),
        1.0
    );
    assert_eq!(
        s.get("amy_request_duration_seconds_bucket", &[("le", "1")]),
        2.0
    );
}

#[test]
fn a_public_metrics_address_needs_prometheus_public() {
    let site = Site::new("metrics-public", "metricsapp", 1, "prometheus = 0.0.0.0:9");
    let out = site.cli(&["check", site.ini().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("amy_uwsgi.ini:") && err.contains("prometheus-public"),
        "{err}"
    );
    site.write_ini(
        "metricsapp",
        1,
        "prometheus = 0.0.0.0:9\nprometheus-public = true",
    );
    let out = site.cli(&["check", site.ini().to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn only_get_metrics_is_served() {
    let (site, port) = metrics_site("metrics-404", 1, "");
    let _inst = site.start();
    assert_eq!(http_get(port, "/").unwrap().status, 404);
    assert_eq!(http(port, "POST", "/metrics", b"x").unwrap().status, 404);
    assert_eq!(http_get(port, "/metrics?x=1").unwrap().status, 200);
}

#[test]
fn harakiri_dumps_a_request_stuck_on_the_main_thread() {
    harakiri_on_the_main_thread("metrics-harakiri-main", "");
}

#[test]
fn harakiri_dumps_the_stuck_stack_with_lazy_apps_too() {
    // Without the preloaded template: the app imported in the worker itself.
    harakiri_on_the_main_thread("metrics-harakiri-lazy", "lazy-apps = true\n");
}

fn harakiri_on_the_main_thread(name: &str, extra: &str) {
    // One thread per listener; the uwsgi socket is served by the main thread,
    // the one that runs Python signal handlers: the dump must not need it.
    let (site, port) = metrics_site(name, 1, &format!("harakiri = 1\n{extra}"));
    let _inst = site.start();
    let templates = site.status_json()["templates"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(
        templates,
        usize::from(extra.is_empty()),
        "preload unless lazy-apps"
    );
    let sock = site.sock();
    let stuck = std::thread::spawn(move || uwsgi_get(&sock, "/stuck?s=30"));
    let r = stuck.join().unwrap().expect("an answer");
    assert_eq!(r.status, 504, "{}", r.text());
    let log = wait_for("the dump", Duration::from_secs(20), || {
        let log = site.log_text();
        log.contains("in wait_for_the_lock_that_never_comes")
            .then_some(log)
    });
    assert!(log.contains("request GET /stuck stuck for"), "{log}");
    let s = wait_for("the exit", Duration::from_secs(20), || {
        let s = scrape(port);
        (s.get("amy_worker_exits_total", &[("reason", "harakiri")]) == 1.0).then_some(s)
    });
    assert_eq!(s.get("amy_requests_total", &[("status", "5xx")]), 1.0);
    let sock = site.sock().display().to_string();
    assert_eq!(
        s.get("amy_listener_requests_total", &[("listener", &sock)]),
        1.0
    );
    assert_eq!(uwsgi_get(&site.sock(), "/ok").unwrap().status, 200);
}

#[test]
fn daemons_and_cron_jobs_are_counted_and_their_command_lines_never_shown() {
    const SECRET: &str = "daemon-secret-91b2";
    let d = temp_dir("metrics-around-files").display().to_string();
    let (site, port) = metrics_site(
        "metrics-around",
        1,
        &format!(
            // One daemon that keeps ending (and is started again), one that stays.
            "attach-daemon = sh -c ': {SECRET}; echo start >> {d}/short.out; sleep 0.3'\n\
             attach-daemon = sleep 300\n\
             unique-cron = -1 -1 -1 -1 -1 sh -c ': {SECRET}; sleep 120'\n"
        ),
    );
    let _inst = site.start();
    let s = wait_for(
        "the short daemon's second start and the cron run",
        Duration::from_secs(30),
        || {
            let s = scrape(port);
            (s.get("amy_daemon_starts_total", &[("daemon", "1")]) >= 2.0
                && s.get("amy_cron_running", &[]) == 1.0)
                .then_some(s)
        },
    );
    assert!(
        !s.text.contains(SECRET),
        "a command line in the metrics:\n{}",
        s.text
    );
    assert!(
        !s.text.contains("sleep"),
        "a command line in the metrics:\n{}",
        s.text
    );
    assert_eq!(s.get("amy_daemon_starts_total", &[("daemon", "2")]), 1.0);
    assert!(
        s.get("amy_daemons", &[("state", "running")]) >= 1.0,
        "{}",
        s.text
    );
    let by_state: f64 = ["down", "spawning", "running", "detaching", "stopping"]
        .iter()
        .map(|k| s.get("amy_daemons", &[("state", k)]))
        .sum();
    assert_eq!(by_state, 2.0, "{}", s.text);
    assert_eq!(s.get("amy_cron_jobs", &[]), 1.0);
    let starts = std::fs::read_to_string(format!("{d}/short.out")).unwrap();
    assert!(starts.lines().count() >= 2, "{starts}");
}

/// `requests` answered by one worker under the recycling key `extra`, then
/// the scrape once at least `exits` exits of `reason` are counted: the
/// requests are all there, and no recycle is counted as a crash.
fn recycles_counted(name: &str, extra: &str, requests: usize, reason: &str, exits: f64) -> Scraped {
    let (site, port) = metrics_site(name, 1, extra);
    let _inst = site.start();
    for _ in 0..requests {
        assert_eq!(http_get(site.http_port, "/ok").unwrap().status, 200);
    }
    let s = wait_for(reason, Duration::from_secs(30), || {
        let s = scrape(port);
        (s.get("amy_worker_exits_total", &[("reason", reason)]) >= exits).then_some(s)
    });
    assert_eq!(
        s.get("amy_requests_total", &[("status", "2xx")]),
        requests as f64
    );
    assert_eq!(s.get("amy_worker_exits_total", &[("reason", "crash")]), 0.0);
    s
}

#[test]
fn a_worker_recycled_by_max_requests_is_counted_and_keeps_its_requests() {
    let s = recycles_counted(
        "metrics-maxreq",
        "max-requests = 3\n",
        7,
        "max-requests",
        2.0,
    );
    assert_eq!(
        s.get("amy_worker_exits_total", &[("reason", "max-requests")]),
        2.0
    );
    assert_eq!(s.get("amy_request_duration_seconds_count", &[]), 7.0);
    assert_eq!(s.get("amy_worker_spawns_total", &[]), 3.0);
}

#[test]
fn harakiri_graceful_timeout_signals_the_app_and_kills_after_the_grace() {
    // SIGUSR1 (10) reaches a handler the app installs at import; SIGKILL
    // comes 5 s later, not at the default 3 s.
    let (site, port) = metrics_site(
        "metrics-harakiri-graceful",
        1,
        "harakiri = 1\nharakiri-graceful-timeout = 5\nharakiri-graceful-signal = 10\n\
         env = METRICSAPP_GRACEFUL=1\n",
    );
    let _inst = site.start();
    let http_port = site.http_port;
    let r = http_get(http_port, "/stuck?s=60").expect("an answer");
    let cut = Instant::now();
    assert_eq!(r.status, 504, "{}", r.text());
    wait_for(
        "the app's graceful handler",
        Duration::from_secs(10),
        || {
            site.log_text()
                .contains("metricsapp: graceful signal 10")
                .then_some(())
        },
    );
    // The graceful signal waits for the dump (its head start): the stack is
    // logged whole before the app's handler runs.
    let log = wait_for("the dump", Duration::from_secs(10), || {
        let log = site.log_text();
        log.contains("in wait_for_the_lock_that_never_comes")
            .then_some(log)
    });
    assert!(log.contains("request GET /stuck stuck for"), "{log}");
    let dumped = log.find("in wait_for_the_lock_that_never_comes").unwrap();
    let handled = log.find("metricsapp: graceful signal 10").unwrap();
    assert!(
        dumped < handled,
        "the dump comes before the graceful signal:\n{log}"
    );
    wait_for("the kill", Duration::from_secs(20), || {
        let s = scrape(port);
        (s.get("amy_worker_exits_total", &[("reason", "harakiri")]) == 1.0).then_some(())
    });
    let grace = cut.elapsed();
    assert!(
        grace >= Duration::from_millis(4500),
        "killed {grace:?} after the cut: harakiri-graceful-timeout = 5 not honoured"
    );
    assert!(grace < Duration::from_secs(9), "{grace:?}");
    assert_eq!(http_get(http_port, "/ok").unwrap().status, 200);
}

#[test]
fn in_emperor_mode_each_vassal_serves_its_own_counts() {
    let d = vassals::dirs("metrics-emperor");
    let ports = [free_port(), free_port()];
    for (name, port) in ["v1", "v2"].iter().zip(ports) {
        d.write_vassal_with(name, &format!("prometheus = 127.0.0.1:{port}"));
    }
    let _emperor = vassals::Emperor::start(&d);
    d.wait_serving("v1");
    d.wait_serving("v2");
    let before = [
        scrape(ports[0]).get("amy_requests_total", &[("status", "2xx")]),
        scrape(ports[1]).get("amy_requests_total", &[("status", "2xx")]),
    ];
    for _ in 0..3 {
        assert_eq!(uwsgi_get(&d.sock("v1"), "/").unwrap().status, 200);
    }
    assert_eq!(uwsgi_get(&d.sock("v2"), "/").unwrap().status, 200);
    let (v1, v2) = (scrape(ports[0]), scrape(ports[1]));
    assert_eq!(
        v1.get("amy_requests_total", &[("status", "2xx")]),
        before[0] + 3.0
    );
    assert_eq!(
        v2.get("amy_requests_total", &[("status", "2xx")]),
        before[1] + 1.0
    );
    let sock = d.sock("v1").display().to_string();
    assert_eq!(
        v1.get("amy_listener_requests_total", &[("listener", &sock)]),
        before[0] + 3.0
    );
    assert!(
        !v2.text.contains(&sock),
        "v2 shows v1's listener:\n{}",
        v2.text
    );
}

#[test]
fn reloads_are_counted_by_outcome_and_the_request_counts_stay() {
    let (site, port) = metrics_site("metrics-reloads", 1, "");
    let _inst = site.start();
    for _ in 0..2 {
        assert_eq!(http_get(site.http_port, "/ok").unwrap().status, 200);
    }
    let metrics = format!("prometheus = 127.0.0.1:{port}\n");
    // Each write below is seen by the config watcher, which reloads: the
    // counter must equal the outcomes the log reports.
    let settled = |outcome: &str, line: &str| {
        wait_for(outcome, Duration::from_secs(60), || {
            let n = site.log_text().matches(line).count();
            let s = scrape(port);
            (n >= 1
                && site.status_json()["reloading"] == false
                && s.get("amy_reloads_total", &[("outcome", outcome)]) == n as f64)
                .then_some(s)
        })
    };
    let mut bad = site.ini_text("metricsapp", 1, &metrics);
    bad.push_str("chmod-socket =\n");
    std::fs::write(site.ini(), bad).unwrap();
    let s = settled("rejected", "reload rejected");
    assert_eq!(s.get("amy_generation", &[]), 1.0);
    assert_eq!(s.get("amy_reloads_total", &[("outcome", "ok")]), 0.0);

    site.write_ini("broken_import", 1, &metrics);
    let s = settled("failed", "new generation failed to boot");
    assert_eq!(s.get("amy_generation", &[]), 1.0);
    assert_eq!(s.get("amy_reloads_total", &[("outcome", "ok")]), 0.0);
    assert_eq!(s.get("amy_requests_total", &[("status", "2xx")]), 2.0);

    site.write_ini("metricsapp", 1, &metrics);
    let s = wait_for("a reload that serves", Duration::from_secs(60), || {
        let s = scrape(port);
        (s.get("amy_reloads_total", &[("outcome", "ok")]) >= 1.0).then_some(s)
    });
    assert!(s.get("amy_generation", &[]) > 1.0);
    assert_eq!(s.get("amy_requests_total", &[("status", "2xx")]), 2.0);
    assert_eq!(http_get(site.http_port, "/ok").unwrap().status, 200);
    assert_eq!(
        scrape(port).get("amy_requests_total", &[("status", "2xx")]),
        3.0
    );
}

#[test]
fn the_readme_lists_every_metric_family_the_endpoint_serves() {
    // harakiri and log-slow set: their threshold gauges appear too.
    let (site, port) = metrics_site("metrics-readme", 1, "harakiri = 30\nlog-slow = 1000\n");
    let _inst = site.start();
    let text = scrape(port).text;
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme
        .split("\n## Monitoring\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a Monitoring section");
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(families.len() >= 20, "{text}");
    let missing: Vec<&&str> = families
        .iter()
        .filter(|f| !section.contains(&format!("`{f}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "not in README's Monitoring table: {missing:?}"
    );
}

#[test]
fn workers_recycled_by_reload_on_rss_and_lifetime_are_counted_by_reason() {
    // Any Python worker is over 1 MB: each leaves after its request.
    let s = recycles_counted(
        "metrics-rss",
        "reload-on-rss = 1\n",
        3,
        "reload-on-rss",
        3.0,
    );
    assert_eq!(
        s.get("amy_worker_exits_total", &[("reason", "reload-on-rss")]),
        3.0
    );
    let s = recycles_counted(
        "metrics-lifetime",
        "max-worker-lifetime = 2\n",
        1,
        "max-worker-lifetime",
        1.0,
    );
    assert!(s.get("amy_worker_spawns_total", &[]) >= 2.0);
}

#[test]
fn a_request_cut_after_its_head_went_out_is_counted_under_that_status() {
    let (site, port) = metrics_site("metrics-harakiri-streaming", 1, "harakiri = 1\n");
    let _inst = site.start();
    // The head (200, Content-Length 100) and 5 bytes went out: no 504 can
    // follow; the connection ends with the worker.
    let r = http_get(site.http_port, "/stuck-streaming?s=60").expect("the head");
    assert_eq!((r.status, r.text()), (200, "start".to_string()));
    let s = wait_for(
        "the harakiri'd worker's exit",
        Duration::from_secs(20),
        || {
            let s = scrape(port);
            (s.get("amy_worker_exits_total", &[("reason", "harakiri")]) == 1.0).then_some(s)
        },
    );
    assert!(site.log_text().contains("in handle_stuck_report"));
    assert_eq!(s.get("amy_harakiri_total", &[]), 1.0);
    assert_eq!(s.get("amy_requests_total", &[("status", "2xx")]), 1.0);
    assert_eq!(s.get("amy_requests_total", &[("status", "5xx")]), 0.0);
    assert_eq!(s.get("amy_request_duration_seconds_count", &[]), 1.0);
    // Its age at the cut: past harakiri = 1, within its check period.
    assert_eq!(
        s.get("amy_request_duration_seconds_bucket", &[("le", "0.5")]),
        0.0
    );
    assert_eq!(
        s.get("amy_request_duration_seconds_bucket", &[("le", "2.5")]),
        1.0
    );
    assert_eq!(http_get(site.http_port, "/ok").unwrap().status, 200);
    assert_eq!(
        scrape(port).get("amy_request_duration_seconds_count", &[]),
        2.0
    );
}
