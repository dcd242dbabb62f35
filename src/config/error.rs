//! What a config load reports: fatal [`ConfigError`]s (`path:line: reason`, with a
//! [`ErrorKind`] callers and tests match on) and survivable [`Warning`]s
//! (`path:line: warning: …`). Neither ever holds an env value.

use std::path::PathBuf;

/// Why a config cannot be used. The message says it for people; the kind says
/// it for code (`check`'s callers, the tests, the emperor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A file (ini, include, env file, `@()` source) cannot be read.
    Read,
    /// The path is not a regular file (a FIFO, a device, a directory).
    NotAFile,
    /// A documented size or count limit is exceeded.
    TooLarge,
    /// The ini holds no `[uwsgi]` section or no line at all.
    Empty,
    /// uWSGI's dialect refuses it (logic, placeholders, includes, `set`).
    Syntax,
    /// `strict = true` and a key that is not a uWSGI option.
    Strict,
    /// A uWSGI option that changes behaviour and that amy-emperor does not implement.
    Unsupported,
    /// A value that is not what the key takes (not a number, a NUL byte, …).
    InvalidValue,
    /// A number outside the range the key allows.
    OutOfRange,
    /// An env-file line that is not `NAME=value`, or a refused variable.
    EnvFile,
    /// A file mode or owner that lets someone else change what runs.
    Permission,
    /// Something the app needs is absent on this host (chdir, wsgi-file, venv python).
    Missing,
    /// No socket at all: nothing could reach the app.
    NoSocket,
    /// `uid`/`gid`/`chown-socket` names no user or group of this host.
    UnknownUser,
    /// Workers would run as root without the operator's opt-in.
    RootWorkers,
    /// `@(exec://…)`: refused in `check`, or the command failed.
    Exec,
}

/// A config that cannot be used. Displays as `path:line: reason`.
/// Never contains an env value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub kind: ErrorKind,
    pub message: String,
}

impl ConfigError {
    pub fn new(
        kind: ErrorKind,
        path: impl Into<PathBuf>,
        line: Option<usize>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            path: path.into(),
            line,
            kind,
            message: message.into(),
        }
    }
}

/// A survivable remark about the config (unknown key, quoted env value, …).
/// Displays as `path:line: warning: message`, the same from `check`, `start` and
/// a reload. Never contains an env value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(
                f,
                "{}:{}: warning: {}",
                self.path.display(),
                line,
                self.message
            ),
            None => write!(f, "{}: warning: {}", self.path.display(), self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_and_warning_formats() {
        let e = ConfigError::new(ErrorKind::InvalidValue, "/srv/a.ini", Some(3), "bad");
        assert_eq!(e.to_string(), "/srv/a.ini:3: bad");
        let e = ConfigError::new(ErrorKind::Read, "/srv/a.ini", None, "gone");
        assert_eq!(e.to_string(), "/srv/a.ini: gone");
        let w = Warning {
            path: "/srv/a.ini".into(),
            line: Some(4),
            message: "odd".into(),
        };
        assert_eq!(w.to_string(), "/srv/a.ini:4: warning: odd");
        let w = Warning { line: None, ..w };
        assert_eq!(w.to_string(), "/srv/a.ini: warning: odd");
    }
}
