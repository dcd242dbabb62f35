//! `config::load` end to end on files in a temp dir: the typed `Config`, the env
//! file rules, error positions, and that env values never reach a message.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use amy_emperor::config::{load, EnvVar, LoadOptions, Protocol, SocketAddress};

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
        vassal: Default::default(),
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
            "ini = missing.ini: cannot read missing.ini",
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
        "[uwsgi]\nsocket = :1\nproccesses = 4\nproccesses = 5\nstatic-map = /s=/x\n",
        0o644,
    );
    let l = load(Path::new("a.ini"), &opts(&d)).unwrap();
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
        .any(|w| w.message.contains("static-map") && w.message.contains("not supported")));
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
    let l = load(Path::new("a.ini"), &opts(&d)).unwrap();
    let kv: Vec<(&str, &str)> = l
        .resolved
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
