//! The `syslog` logger: what uWSGI's plugin does with `openlog(ident, 0,
//! facility)` + `syslog(LOG_INFO, line)`, written out: one datagram per line,
//! `<PRI>Mmm dd hh:mm:ss IDENT: LINE` (RFC 3164, as glibc sends it; no pid, as
//! uWSGI passes no LOG_PID), to `/dev/log`. `AMY_EMPEROR_SYSLOG_SOCKET` names
//! another socket (tests, containers with the socket elsewhere).
//!
//! A send that fails is retried once on a fresh socket (syslogd restarted),
//! then the line is counted as dropped: a missing syslogd costs log lines,
//! never requests.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

/// LOG_INFO, uWSGI's priority for every line.
const SEVERITY_INFO: u8 = 6;

pub struct Syslog {
    ident: String,
    pri: u8,
    path: PathBuf,
    socket: Option<UnixDatagram>,
}

impl Syslog {
    pub fn new(ident: &str, facility: u8) -> Syslog {
        let path = std::env::var_os("AMY_EMPEROR_SYSLOG_SOCKET")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/dev/log"));
        Syslog {
            ident: ident.to_string(),
            pri: facility * 8 + SEVERITY_INFO,
            path,
            socket: None,
        }
    }

    pub fn describe(&self) -> String {
        format!("syslog:{} via {}", self.ident, self.path.display())
    }

    /// Sends each line of `data`; returns how many bytes went out and whether
    /// some line could not be sent.
    pub fn send(&mut self, data: &[u8]) -> (usize, bool) {
        let stamp = super::date::strftime_local("%b %e %H:%M:%S", now());
        let mut done = 0;
        for line in data.split_inclusive(|&b| b == b'\n') {
            let text = line.strip_suffix(b"\n").unwrap_or(line);
            let mut msg = format!("<{}>{stamp} {}: ", self.pri, self.ident).into_bytes();
            msg.extend_from_slice(text);
            if !self.send_one(&msg) {
                return (done, true);
            }
            done += line.len();
        }
        (done, false)
    }

    fn send_one(&mut self, msg: &[u8]) -> bool {
        for _ in 0..2 {
            if self.socket.is_none() {
                self.socket = UnixDatagram::unbound().ok();
            }
            let Some(s) = &self.socket else {
                return false;
            };
            if s.send_to(msg, &self.path).is_ok() {
                return true;
            }
            self.socket = None;
        }
        false
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn each_line_is_one_tagged_datagram() {
        let dir = TempDir::new("syslog");
        let path = dir.0.join("log.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let mut s = Syslog::new("myapp", 16);
        s.path = path;
        assert_eq!(s.send(b"one\ntwo\n"), (8, false));
        let mut buf = [0u8; 512];
        for want in ["one", "two"] {
            let n = server.recv(&mut buf).unwrap();
            let got = std::str::from_utf8(&buf[..n]).unwrap();
            assert!(got.starts_with("<134>"), "{got}");
            assert!(got.ends_with(&format!(" myapp: {want}")), "{got}");
        }
    }

    #[test]
    fn no_syslogd_is_a_drop_not_an_error() {
        let dir = TempDir::new("syslog");
        let mut s = Syslog::new("x", 3);
        s.path = dir.0.join("absent.sock");
        assert_eq!(s.send(b"lost\n"), (0, true));
    }
}
