//! `config::load` end to end on files in a temp dir: the typed `Config`, the env
//! file rules, error positions, and that env values never reach a message.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use amy_emperor::config::{
    load, load_with_resolved, EnvVar, ErrorKind, LoadOptions, Protocol, SocketAddress,
};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("amy-config-load-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::canonicalize(&d).unwrap()
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn opts(cwd: &Path) -> LoadOptions {
    LoadOptions {
        env_file: None,
        environment: vec![("HOME".into(), "/home/amy".into())],
        cwd: cwd.to_path_buf(),
        ..LoadOptions::default()
    }
}

fn var(n: &str, v: &str) -> EnvVar {
    EnvVar {
        name: n.into(),
        value: v.into(),
    }
}

#[test]
fn amy_style_ini_builds_the_typed_config() {
    let d = dir("amy");
    std::fs::create_dir_all(d.join("app")).unwrap();
    std::fs::create_dir_all(d.join("venv/bin")).unwrap();
    write(&d.join("venv/bin/python"), "#!/bin/sh\n", 0o755);
    write(
        &d.join("uwsgi_env"),
        "A=1\n# c\n\nexport B=2\nC=\"q\"\nD=$(HOME)/x\n",
        0o600,
    );
    write(
        &d.join("amy_uwsgi.ini"),
        "[uwsgi]\nchdir = %dapp\nmodule = amy.wsgi\nvenv = %dvenv\nmaster\nworkers = 3\n\
         socket = amy.sock\nchmod-socket = 660\nvacuum = true\npidfile = amy.pid\n\
         for-readline = %duwsgi_env\nenv = %(_)\nendfor =\nenv = E=5\nlogto = amy.log\n\
         harakiri = 30\nmax-requests = 5000\nbuffer-size = 512000\ntouch-reload = %dreload\n",
        0o644,
    );
    let l = load(Path::new("amy_uwsgi.ini"), &opts(&d)).unwrap();
    let c = &l.config;
    assert_eq!(c.chdir, Some(d.join("app")));
    assert_eq!(c.module.as_deref(), Some("amy.wsgi"));
    assert_eq!(c.home, Some(d.join("venv")));
    assert_eq!(c.processes, 3);
    // A relative unix socket resolves after chdir; pidfile and logto against the start-up cwd.
    assert_eq!(
        c.sockets[0].address,
        SocketAddress::Unix(d.join("app/amy.sock"))
    );
    assert_eq!(c.sockets[0].protocol, Protocol::Uwsgi);
    assert_eq!(c.sockets[0].line, 7);
    assert_eq!(c.chmod_socket, Some(0o660));
    assert!(c.vacuum);
    assert_eq!(c.pidfile, Some(d.join("amy.pid")));
    assert_eq!(c.logto, Some(d.join("amy.log")));
    assert_eq!(c.harakiri, Some(Duration::from_secs(30)));
    assert_eq!(c.max_requests, 5000);
    assert_eq!(c.buffer_size, Some(65535));
    assert_eq!(
        c.env,
        vec![
            var("A", "1"),
            var("B", "2"),
            var("C", "\"q\""),
            var("D", "/home/amy/x"),
            var("E", "5")
        ]
    );
    assert_eq!(
        c.watch_paths,
        vec![
            d.join("amy_uwsgi.ini"),
            d.join("uwsgi_env"),
            d.join("reload")
        ]
    );
    let warnings: Vec<String> = l.warnings.iter().map(|w| w.to_string()).collect();
    let uwsgi_env = d.join("uwsgi_env");
    assert!(warnings
        .iter()
        .any(|w| w.starts_with(&format!("{}:4:", uwsgi_env.display())) && w.contains("export")));
    assert!(warnings
        .iter()
        .any(|w| w.starts_with(&format!("{}:5:", uwsgi_env.display())) && w.contains("C")));
    assert!(warnings.iter().all(|w| !w.contains("/home/amy/x")));
}

#[test]
fn implicit_uwsgi_env_beside_the_ini_comes_before_env_lines() {
    let d = dir("implicit");
    write(&d.join("uwsgi_env"), "A=from-file\n", 0o600);
    write(
        &d.join("app.ini"),
        "[uwsgi]\nsocket = :8000\nenv = B=ini\n",
        0o644,
    );
    let c = load(Path::new("app.ini"), &opts(&d)).unwrap().config;
    assert_eq!(c.env, vec![var("A", "from-file"), var("B", "ini")]);
    assert!(c.watch_paths.contains(&d.join("uwsgi_env")));
    assert_eq!(
        c.sockets[0].address,
        SocketAddress::Tcp {
            host: String::new(),
            port: 8000
        }
    );
}

#[test]
fn env_file_flag_replaces_the_implicit_file() {
    let d = dir("flag");
    write(&d.join("uwsgi_env"), "A=implicit\n", 0o600);
    write(&d.join("other_env"), "A=flag\n", 0o600);
    write(&d.join("app.ini"), "[uwsgi]\nsocket = :8000\n", 0o644);
    let mut o = opts(&d);
    o.env_file = Some(d.join("other_env"));
    let c = load(Path::new("app.ini"), &o).unwrap().config;
    assert_eq!(c.env, vec![var("A", "flag")]);
}

#[test]
fn env_file_line_without_equals_is_an_error_at_its_line_without_value() {
    let d = dir("noeq");
    write(&d.join("uwsgi_env"), "A=1\nSECRETVALUE\n", 0o600);
    write(
        &d.join("app.ini"),
        "[uwsgi]\nfor-readline = %duwsgi_env\nenv = %(_)\nendfor\n",
        0o644,
    );
    let e = load(Path::new("app.ini"), &opts(&d)).unwrap_err();
    assert_eq!(e.path, d.join("uwsgi_env"));
    assert_eq!(e.line, Some(2));
    assert!(!e.to_string().contains("SECRETVALUE"), "{e}");
}

#[test]
fn world_writable_env_file_is_refused() {
    let d = dir("ww");
    write(&d.join("uwsgi_env"), "A=1\n", 0o666);
    write(
        &d.join("app.ini"),
        "[uwsgi]\nfor-readline = %duwsgi_env\nenv = %(_)\nendfor\n",
        0o644,
    );
    let e = load(Path::new("app.ini"), &opts(&d)).unwrap_err();
    assert!(e.message.contains("world-writable"), "{e}");
}

#[test]
fn fatal_values_report_file_and_line() {
    let d = dir("fatal");
    let cases = [
        (
            "[uwsgi]\nsocket = :1\nchmod-socket =\n",
            3,
            "invalid chmod value: ",
        ),
        (
            "[uwsgi]\nsocket = :1\nprocesses = 4 # four\n",
            3,
            "\"processes = 4 # four\": not a whole number (uWSGI's atoi reads it as 4; there are no inline comments)",
        ),
        (
            "[uwsgi]\nsocket = :1\nharakiri = 30s\n",
            3,
            "unit suffixes are not understood",
        ),
        (
            "[uwsgi]\nsocket = :1\nprocesses = 5000\n",
            3,
            "\"processes = 5000\": out of range (1 to 1024)",
        ),
        (
            "[uwsgi]\nsocket = :1\nhttps = :8443,site.crt,site.key\n",
            3,
            "\"https\" is not supported: no HTTPS router: nothing listens on that address, the site is unreachable there",
        ),
        (
            "[uwsgi]\nprocesses = -1\n",
            2,
            "invalid value for option \"processes\": must be > 0",
        ),
        (
            "[uwsgi]\nstrict = true\nbogus = 1\n",
            3,
            "[strict-mode] unknown config directive: bogus",
        ),
        (
            "[uwsgi]\nx = @(/nonexistent/f)\n",
            2,
            "cannot read file \"/nonexistent/f\"",
        ),
        (
            "[uwsgi]\nfor = a\nfor = b\nendfor\n",
            3,
            "recursive logic in options is not supported (option = for)",
        ),
        (
            "[uwsgi]\nset = novalue\n",
            2,
            "invalid placeholder/--set value",
        ),
        (
            "[uwsgi]\nset-ph = socket=x\n",
            2,
            "you cannot use socket as a placeholder",
        ),
        (
            "[uwsgi]\nini = missing.ini\n",
            2,
            "ini = missing.ini: cannot read missing.ini: No such file",
        ),
    ];
    for (text, line, reason) in cases {
        write(&d.join("bad.ini"), text, 0o644);
        let e = load(Path::new("bad.ini"), &opts(&d)).unwrap_err();
        assert_eq!(
            (e.path.as_path(), e.line),
            (Path::new("bad.ini"), Some(line)),
            "{text:?}: {e}"
        );
        assert!(e.message.contains(reason), "{text:?}: {e}");
        assert!(e.to_string().starts_with(&format!("bad.ini:{line}: ")));
    }
}

#[test]
fn strict_applies_only_to_keys_after_it() {
    let d = dir("strict");
    write(
        &d.join("a.ini"),
        "[uwsgi]\nbefore = 1\nstrict = true\nsocket = :1\n",
        0o644,
    );
    assert!(load(Path::new("a.ini"), &opts(&d)).is_ok());
}

#[test]
fn strict_knows_amy_emperors_own_keys() {
    // uWSGI's strict refuses keys it does not know; ours are known to us (the
    // benchmark's probe met `[strict-mode] unknown config directive: reload-check`).
    let d = dir("strict-own");
    write(
        &d.join("a.ini"),
        "[uwsgi]\nstrict = true\nsocket = :1\nreload-check = /\nreload-check-host = example.org\n\
         reload-check-timeout = 5\nreload-one-by-one = true\nprometheus = 127.0.0.1:9\n",
        0o644,
    );
    let c = load(Path::new("a.ini"), &opts(&d)).unwrap();
    assert_eq!(c.config.reload_check, vec!["/".to_string()]);
    write(
        &d.join("b.ini"),
        "[uwsgi]\nstrict = true\nsocket = :1\nreload-chek = /\n",
        0o644,
    );
    let e = load(Path::new("b.ini"), &opts(&d)).unwrap_err();
    assert!(
        e.message.contains("unknown config directive: reload-chek"),
        "{e}"
    );
}

#[test]
fn missing_ini_is_an_error_without_line() {
    let d = dir("missing");
    let e = load(Path::new("nope.ini"), &opts(&d)).unwrap_err();
    assert_eq!(e.line, None);
    assert!(e.to_string().starts_with("nope.ini: cannot read"), "{e}");
}

#[test]
fn unknown_keys_warn_once_each() {
    let d = dir("unknown");
    write(
        &d.join("a.ini"),
        "[uwsgi]\nsocket = :1\nproccesses = 4\nproccesses = 5\nresponse-route = ^/x addheader:A: b\n",
        0o644,
    );
    let e = load(Path::new("a.ini"), &opts(&d)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert_eq!(
        e.to_string(),
        "a.ini:5: \"response-route\" is not supported: routing rules are not applied: requests reach the app unfiltered, rewrites and redirects do not happen (--allow-unsupported KEY accepts it)"
    );
    let allowed = LoadOptions {
        allow_unsupported: vec!["response-route".into()],
        ..opts(&d)
    };
    let l = load(Path::new("a.ini"), &allowed).unwrap();
    let typo: Vec<_> = l
        .warnings
        .iter()
        .filter(|w| w.message.contains("proccesses"))
        .collect();
    assert_eq!(typo.len(), 1);
    assert_eq!(typo[0].line, Some(3));
    assert!(l
        .warnings
        .iter()
        .any(|w| w.message.contains("response-route") && w.message.contains("not supported")));
}

#[test]
fn bom_is_skipped_with_a_warning() {
    let d = dir("bom");
    write(&d.join("a.ini"), "\u{feff}[uwsgi]\nsocket = :1\n", 0o644);
    let l = load(Path::new("a.ini"), &opts(&d)).unwrap();
    assert_eq!(l.config.sockets.len(), 1);
    assert!(l
        .warnings
        .iter()
        .any(|w| w.message.contains("byte-order mark") && w.line == Some(1)));
}

#[test]
fn resolved_list_keeps_uwsgi_order_and_expansion() {
    let d = dir("resolved");
    write(
        &d.join("a.ini"),
        "[uwsgi]\nph = a\nph = b\nx = %(ph)\nfor = 1 2\ny = %(_)\nendfor\n",
        0o644,
    );
    // No socket: the typed config is refused, but the list is still uWSGI's.
    let (resolved, outcome) = load_with_resolved(Path::new("a.ini"), &opts(&d));
    assert_eq!(outcome.unwrap_err().kind, ErrorKind::NoSocket);
    let resolved = resolved.unwrap();
    let kv: Vec<(&str, &str)> = resolved
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        kv,
        vec![
            ("ini", "a.ini"),
            ("ph", "a"),
            ("ph", "b"),
            ("x", "a"),
            ("for", "1 2"),
            ("y", "1"),
            ("y", "2"),
            ("endfor", "")
        ]
    );
}

fn warning_texts(l: &amy_emperor::config::Loaded) -> Vec<String> {
    l.warnings.iter().map(|w| w.to_string()).collect()
}

#[test]
fn keys_uwsgi_accumulates_repeat_without_a_last_value_wins_warning() {
    // Seen on real inis: two static-maps, crons, daemons, mounts and routes all
    // run, so a warning that "the last value wins" would be false.
    let d = dir("repeats");
    std::fs::create_dir_all(d.join("static")).unwrap();
    write(&d.join("app.py"), "def application(e, s): pass\n", 0o644);
    write(
        &d.join("a.ini"),
        "[uwsgi]\nsocket = s.sock\nstatic-map = /a=static\nstatic-map = /b=static\n\
         cron = -1 -1 -1 -1 -1 true\ncron = -5 -1 -1 -1 -1 true\n\
         attach-daemon = sleep 100\nattach-daemon = sleep 200\n\
         mount = /x=app.py\nmount = /y=app.py\n\
         route = ^/old redirect:/new\nroute = ^/older redirect:/new\n\
         static-expires-type = text/css=3600\nstatic-expires-type = image/png=3600\n\
         processes = 2\nprocesses = 3\n",
        0o644,
    );
    let l = load(Path::new("a.ini"), &opts(&d)).unwrap();
    let w = warning_texts(&l);
    let again: Vec<&String> = w.iter().filter(|w| w.contains("is given again")).collect();
    assert_eq!(again.len(), 1, "{again:#?}");
    assert!(
        again[0].contains("\"processes\" is given again"),
        "{again:#?}"
    );
}

#[test]
fn ipv6_addresses_in_brackets_bind_as_uwsgi_binds_them() {
    let d = dir("ipv6");
    write(
        &d.join("a.ini"),
        "[uwsgi]\nsocket = [::1]:18124\nhttp-socket = [::]:18125 # web\n",
        0o644,
    );
    let l = load(Path::new("a.ini"), &opts(&d)).unwrap();
    let addrs: Vec<&SocketAddress> = l.config.sockets.iter().map(|s| &s.address).collect();
    assert_eq!(
        addrs,
        [
            &SocketAddress::Tcp {
                host: "[::1]".into(),
                port: 18124
            },
            &SocketAddress::Tcp {
                host: "[::]".into(),
                port: 18125
            }
        ]
    );
}

#[test]
fn protocol_sets_plain_sockets_only_wherever_it_is_written() {
    let d = dir("protocol");
    write(
        &d.join("a.ini"),
        "[uwsgi]\nsocket = s.sock\nuwsgi-socket = u.sock\nhttp-socket = h.sock\nprotocol = http\nsocket = t.sock\n",
        0o644,
    );
    let l = load(Path::new("a.ini"), &opts(&d)).unwrap();
    let protocols: Vec<Protocol> = l.config.sockets.iter().map(|s| s.protocol).collect();
    assert_eq!(
        protocols,
        [
            Protocol::Http,
            Protocol::Uwsgi,
            Protocol::Http,
            Protocol::Http
        ]
    );
}

#[test]
fn dialect_warnings_have_exact_text_and_the_full_path() {
    let d = dir("dialect");
    write(
        &d.join("a.ini"),
        "[uwsgi]\nprocesses = 2\nsocket = 127.0.0.1:18123 # web\nsocket = s.sock ; note\nprocesses = 3\nbuffer-size = 100000\nlisten = 64\nbuffer-size = 100\n",
        0o644,
    );
    let l = load(Path::new("a.ini"), &opts(&d)).unwrap();
    let ini = d.join("a.ini");
    let at = |line: usize, m: &str| format!("{}:{line}: warning: {m}", ini.display());
    let w = warning_texts(&l);
    for expected in [
        at(3, "socket = 127.0.0.1:18123 # web: uWSGI has no inline comments; it binds port 18123 and ignores \"# web\", and so does amy-emperor: remove the comment"),
        at(4, "socket = s.sock ; note: uWSGI has no inline comments; the socket file is named \"s.sock ; note\", \"; note\" included, as uWSGI names it: remove the comment"),
        at(5, "\"processes\" is given again (first at line 2); the last value wins, as in uWSGI"),
        at(6, "buffer-size = 100000: clamped to 65535 (uWSGI stores it in 16 bits)"),
        at(8, "\"buffer-size\" is given again (first at line 6); the last value wins, as in uWSGI"),
        at(8, "buffer-size = 100: below 512 bytes most requests from nginx do not fit and get a 431"),
    ] {
        assert!(w.contains(&expected), "missing {expected:?} in {w:#?}");
    }
    let c = &l.config;
    assert_eq!(
        c.sockets[0].address,
        SocketAddress::Tcp {
            host: "127.0.0.1".into(),
            port: 18123
        }
    );
    assert_eq!(
        c.sockets[1].address,
        SocketAddress::Unix(d.join("s.sock ; note"))
    );
    assert_eq!(c.processes, 3);
    assert_eq!(c.buffer_size, Some(100));
}

#[test]
fn a_nul_byte_in_any_value_is_an_error_with_its_line() {
    let d = dir("nul");
    write(
        &d.join("a.ini"),
        "[uwsgi]\nsocket = :1\nmodule = app\0x\n",
        0o644,
    );
    let e = load(Path::new("a.ini"), &opts(&d)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidValue);
    assert_eq!(
        e.to_string(),
        "a.ini:3: \"module\": the value holds a NUL byte"
    );
}

#[test]
fn an_allowance_for_a_key_that_needs_none_is_reported() {
    let d = dir("allowtypo");
    write(&d.join("a.ini"), "[uwsgi]\nsocket = :1\n", 0o644);
    let o = LoadOptions {
        allow_unsupported: vec!["htp".into()],
        ..opts(&d)
    };
    let l = load(Path::new("a.ini"), &o).unwrap();
    assert!(warning_texts(&l).contains(&format!(
        "{}: warning: --allow-unsupported htp: not an unsupported uWSGI option, nothing to allow",
        d.join("a.ini").display()
    )));
}

#[test]
fn env_file_values_are_bytes_and_duplicates_name_both_lines() {
    use std::os::unix::ffi::OsStrExt;
    let d = dir("envbytes");
    std::fs::write(d.join("uwsgi_env"), b"A=caf\xe9\nB=1\nA=2\n").unwrap();
    std::fs::set_permissions(
        d.join("uwsgi_env"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    write(
        &d.join("a.ini"),
        "[uwsgi]\nsocket = :1\nfor-readline = %duwsgi_env\nenv = %(_)\nendfor =\n",
        0o644,
    );
    let l = load(Path::new("a.ini"), &opts(&d)).unwrap();
    assert_eq!(l.config.env[0].value.as_bytes(), b"caf\xe9");
    assert!(warning_texts(&l).contains(&format!(
        "{}:3: warning: A is set again (first at line 1); the last value wins",
        d.join("uwsgi_env").display()
    )));
    // The same through --env-file.
    let o = LoadOptions {
        env_file: Some(d.join("uwsgi_env")),
        ..opts(&d)
    };
    write(&d.join("b.ini"), "[uwsgi]\nsocket = :1\n", 0o644);
    let l = load(Path::new("b.ini"), &o).unwrap();
    assert_eq!(l.config.env[0].value.as_bytes(), b"caf\xe9");
    assert_eq!(l.config.env.len(), 3);
}
