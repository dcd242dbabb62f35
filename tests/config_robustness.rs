//! Arbitrary ini and env-file text never panics the config loader: it returns a
//! config or an error. This matters more than it looks: the release build aborts
//! on panic, and the master runs `config::load` on every reload, so a panic here
//! would take a running site down (a bad config must only ever be refused).
//!
//! A bounded, seeded generator (no fuzzing toolchain on stable): lines built from
//! the dialect's own pieces — sections, keys, logic blocks, placeholders, magic
//! variables, `$()`/`@()`, odd bytes — so the parser's deep paths are reached.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use amy_emperor::config::{self, LoadOptions};

/// xorshift64*: deterministic, so a failure names its seed and can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const KEYS: &[&str] = &[
    "socket",
    "http-socket",
    "uwsgi-socket",
    "chmod-socket",
    "chown-socket",
    "listen",
    "chdir",
    "module",
    "wsgi-file",
    "callable",
    "home",
    "venv",
    "pythonpath",
    "processes",
    "workers",
    "threads",
    "master",
    "pidfile",
    "vacuum",
    "uid",
    "gid",
    "env",
    "harakiri",
    "max-requests",
    "reload-on-rss",
    "worker-reload-mercy",
    "buffer-size",
    "logto",
    "log-maxsize",
    "log-reopen",
    "disable-logging",
    "daemonize",
    "die-on-term",
    "touch-reload",
    "lazy-apps",
    "need-app",
    "stats",
    "strict",
    "ini",
    "include",
    "set",
    "set-placeholder",
    "for",
    "for-times",
    "for-glob",
    "for-readline",
    "endfor",
    "end-for",
    "if-env",
    "if-not-env",
    "if-exists",
    "if-not-exists",
    "if-opt",
    "if-file",
    "if-dir",
    "endif",
    "end",
    "base",
    "x",
    "",
    "reload-one-by-one",
    "declare-option",
    "inherit",
    "yaml",
    "json",
];

const VALUES: &[&str] = &[
    "",
    "1",
    "0",
    "-1",
    "00",
    "true",
    "false",
    "off",
    "yes",
    "99999999999999999999",
    "4 # four",
    "%d",
    "%p",
    "%n",
    "%c",
    "%s",
    "%e",
    "%x",
    "%o",
    "%h",
    "%k",
    "%v",
    "%%",
    "%Y",
    "%",
    "%(",
    "%(base)",
    "%(x)/y",
    "%(_)",
    "%(1 + 2 * 3)",
    "%(a + )",
    "%(%(x))",
    "$(HOME)",
    "$(NOPE)",
    "$(",
    "@(",
    "@(/nonexistent)",
    "@(/etc/hostname)",
    "/tmp/amy-fuzz.sock",
    ":0",
    "127.0.0.1:0",
    "[::1]:0",
    "@abstract",
    "a=b=c",
    "NAME=value",
    "=",
    "==",
    "660",
    "1",
    "777",
    "8888",
    "amy:www-data",
    "root",
    "nobody:nogroup",
    "app:application",
    "app:make()",
    "a b c",
    "*.ini",
    "/tmp/*",
    "uwsgi_env",
    "%duwsgi_env",
    "file.ini:sect",
    ":sect",
    "\u{feff}",
    "é",
    "\t",
    "x;y",
    "[uwsgi]",
];

const ENV_LINES: &[&str] = &[
    "A=1",
    "export B=2",
    "C=\"q\"",
    "D='q'",
    "#c",
    "",
    "  ",
    "NOEQ",
    "=v",
    "1BAD=x",
    "E=$(HOME)",
    "F=%(socket)",
    "G=@(/nonexistent)",
    "H=a=b",
    "I=\r",
    "J=%d",
    "K=\u{0}",
    "L=é",
];

fn random_ini(rng: &mut Rng) -> Vec<u8> {
    let mut text = Vec::new();
    if rng.below(20) == 0 {
        text.extend_from_slice("\u{feff}".as_bytes());
    }
    // Mostly a valid start, so that the typed layer (which refuses a config
    // without a socket) is reached as often as the refusals are.
    if rng.below(4) != 0 {
        text.extend_from_slice(b"[uwsgi]\nsocket = /tmp/amy-fuzz.sock\n");
    }
    let lines = 1 + rng.below(25);
    for _ in 0..lines {
        let line = match rng.below(12) {
            0 => rng
                .pick(&[
                    "[uwsgi]",
                    "[other]",
                    "[uwsgi",
                    "[ uwsgi ]",
                    "[UWSGI]",
                    "[]",
                    "[",
                ])
                .to_string(),
            1 => rng.pick(&["# comment", "; comment", "#", ";"]).to_string(),
            2 => rng.pick(KEYS).to_string(),
            3 => format!("{}={}", rng.pick(KEYS), rng.pick(VALUES)),
            4 => {
                let n = rng.below(40);
                (0..n).map(|_| (rng.below(256) as u8) as char).collect()
            }
            _ => format!(
                "{} = {}{}",
                rng.pick(KEYS),
                rng.pick(VALUES),
                rng.pick(VALUES)
            ),
        };
        text.extend_from_slice(line.as_bytes());
        text.extend_from_slice(if rng.below(8) == 0 { b"\r\n" } else { b"\n" });
    }
    text
}

#[test]
fn arbitrary_ini_and_env_text_never_panics_the_loader() {
    let dir = PathBuf::from(format!("/tmp/amy-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ini = dir.join("amy_uwsgi.ini");
    let env_file = dir.join("uwsgi_env");
    let options = LoadOptions {
        env_file: None,
        environment: vec![(OsString::from("HOME"), OsString::from("/home/amy"))],
        cwd: dir.clone(),
        ..LoadOptions::default()
    };
    let started = Instant::now();
    let (mut ok, mut errors) = (0, 0);
    for seed in 1..=3000u64 {
        // Bounded in time as well as in count.
        if started.elapsed() > Duration::from_secs(60) {
            break;
        }
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let text = random_ini(&mut rng);
        std::fs::write(&ini, &text).unwrap();
        let env: Vec<&str> = (0..rng.below(6)).map(|_| rng.pick(ENV_LINES)).collect();
        std::fs::write(&env_file, env.join("\n")).unwrap();
        std::fs::set_permissions(
            &env_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let t = Instant::now();
        match config::load(&ini, &options) {
            Ok(_) => ok += 1,
            Err(e) => {
                errors += 1;
                let message = e.to_string();
                assert!(
                    message.starts_with(&ini.display().to_string())
                        || message.contains("uwsgi_env")
                        || message.starts_with('/'),
                    "seed {seed}: an error must name its file: {message}"
                );
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "seed {seed}: load took {:?}",
            t.elapsed()
        );
        let _ = config::pidfile_of(&ini, &options);
    }
    std::fs::remove_dir_all(&dir).unwrap();
    // Both outcomes must be exercised, or the generator is not reaching the parser.
    assert!(ok > 100 && errors > 100, "ok {ok}, errors {errors}");
}

#[test]
fn a_placeholder_that_refers_to_itself_is_an_error_not_an_out_of_memory() {
    // Found by the generator above: `%(x)` inside x's own first definition doubled
    // the value at every pass until the process ran out of memory.
    let dir = PathBuf::from(format!("/tmp/amy-selfref-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ini = dir.join("amy_uwsgi.ini");
    let options = LoadOptions {
        env_file: None,
        environment: Vec::new(),
        cwd: dir.clone(),
        ..LoadOptions::default()
    };
    for text in ["x = %n%(%(x))", "x = 0123456789abcdef%(x)", "y = %(x)"] {
        let ini_text = format!("[uwsgi]\n{text}\nx = %(x)%(x)\nsocket = /tmp/s.sock\n");
        std::fs::write(&ini, ini_text).unwrap();
        let t = Instant::now();
        let err = config::load(&ini, &options).expect_err(text);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{text}: took {:?}",
            t.elapsed()
        );
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("{}:", ini.display())),
            "{message}"
        );
        assert!(message.contains("refers to itself"), "{message}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
