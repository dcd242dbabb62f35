//! The whole dialect: includes, logic blocks, the $() @() %() passes and the
//! typed build, on an ini written to a private directory. Commands never run
//! (`ExecPolicy::Refuse`); the environment has a few fixed variables.
#![no_main]

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::OnceLock;

use amy_emperor::config::{self, ExecPolicy, LoadOptions};
use libfuzzer_sys::fuzz_target;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("amy-fuzz-expand-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        // Something for `ini =`, `@(file)` and `for-readline` to find.
        std::fs::write(d.join("other.ini"), "[uwsgi]\nprocesses = 2\n[x]\nk = %(processes)\n").unwrap();
        std::fs::write(d.join("uwsgi_env"), "A=1\nB=two words\n").unwrap();
        std::fs::write(d.join("value"), "hello\n").unwrap();
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let d = dir();
    let ini = d.join("main.ini");
    std::fs::write(&ini, data).unwrap();
    let options = LoadOptions {
        env_file: None,
        environment: vec![
            (OsString::from("HOME"), OsString::from("/root")),
            (OsString::from("X"), OsString::from("%(X)$(X)@(value)")),
        ],
        cwd: d.clone(),
        allow_unsupported: Vec::new(),
        allow_root_workers: false,
        exec: ExecPolicy::Refuse,
        as_root: Some(false),
        // Fields added later (vassal extras …) keep their defaults.
        ..LoadOptions::default()
    };
    let (_, outcome) = config::load_with_resolved(&ini, &options);
    if let Ok(loaded) = outcome {
        let _ = config::show::render(&loaded.resolved, false);
    }
});
