//! Real uWSGI 2.0 (`.venv-test/bin/uwsgi`, or `$AMY_TEST_UWSGI`) serving the
//! same ini side by side, so a test can assert "same request, same answer".
//! Included by path (`#[path = "common/oracle.rs"]`) by the tests that use it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn uwsgi_binary() -> PathBuf {
    std::env::var_os("AMY_TEST_UWSGI")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/uwsgi"))
}

/// A real uWSGI on `http-socket = 127.0.0.1:port`; killed (its process group) on drop.
pub struct Uwsgi {
    pub port: u16,
    child: Child,
    pub log: PathBuf,
}

impl Uwsgi {
    /// Starts uWSGI with `ini` (which must hold `http-socket = 127.0.0.1:port`)
    /// and waits until it answers.
    pub fn start(ini: &Path, port: u16) -> Uwsgi {
        let log = ini.with_extension("uwsgi.log");
        let mut cmd = Command::new(uwsgi_binary());
        cmd.arg("--ini")
            .arg(ini)
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::File::options().append(true).open(&log).unwrap(),
            ));
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("spawn uwsgi");
        let u = Uwsgi { port, child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "uwsgi did not listen: {}",
                std::fs::read_to_string(&u.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        u
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Uwsgi {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        // SIGINT to the group we created: uWSGI's master stops its workers.
        // SAFETY: signalling the process group of the child this test started.
        unsafe { kill(-pid, 2) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above.
        unsafe { kill(-pid, 9) };
        let _ = self.child.wait();
    }
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// Sends `raw` bytes to 127.0.0.1:port and reads the answer until EOF (10 s).
pub fn raw_http(port: u16, raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(raw)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}
