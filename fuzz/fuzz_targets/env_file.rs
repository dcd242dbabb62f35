//! The env-file reader: line splitting, classification, duplicates and the
//! limits, both line by line and through `envfile::read` on a real file.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use amy_emperor::config::envfile;
use libfuzzer_sys::fuzz_target;

fn file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("amy-fuzz-env-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d.join("uwsgi_env")
    })
}

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/fuzz/uwsgi_env");
    let mut warnings = Vec::new();
    for (i, line) in envfile::readline_items(data).iter().enumerate() {
        let _ = envfile::parse_line(line, path, i + 1, &mut warnings);
    }
    let f = file();
    std::fs::write(f, data).unwrap();
    let _ = envfile::read(f, false);
});
