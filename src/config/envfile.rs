//! `uwsgi_env`: one `NAME=value` per line, read the way uWSGI's `for-readline`
//! loop reads it, with the checks uWSGI never makes (it is where the site's
//! secrets live, so a malformed or foreign-writable file must stop the load).
//!
//! Values are literal: quotes are kept (with a warning), an `export ` prefix is
//! stripped (with a warning; uWSGI would set a variable named `export NAME`),
//! lines may be of any length (uWSGI's `fgets` splits them at 1023 bytes). A line
//! without `=` or with an invalid name is an error. Nothing here ever puts a value
//! in a message: only file, line and variable name.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{ConfigError, EnvVar, ErrorKind, Warning};

/// An env file larger than this is refused before it is read: it is a list of
/// settings, not data, and every byte of it lands in each worker's environment.
pub const MAX_FILE_SIZE: u64 = 1024 * 1024;
/// Linux refuses one `NAME=value` string longer than `MAX_ARG_STRLEN` (32 pages)
/// at exec with E2BIG: refused at load instead, so no spawn ever fails on it.
pub const MAX_VAR_SIZE: usize = 128 * 1024 - 1;
/// Variables one env file may set.
pub const MAX_VARS: usize = 4096;
/// The whole worker environment (master's + env file + `env =`), in bytes of
/// `NAME=value\0`: a quarter of the usual 8 MiB stack `ARG_MAX` allows, leaving
/// room for argv.
pub const MAX_TOTAL_ENV: usize = 1024 * 1024;

/// Variables that change how the loader or Python runs: any of them in an env
/// file gets a warning (name and line, never the value).
const RISKY: &[(&str, &str)] = &[
    (
        "LD_PRELOAD",
        "the dynamic loader injects that library into every worker",
    ),
    (
        "LD_LIBRARY_PATH",
        "the dynamic loader searches those directories first",
    ),
    ("LD_AUDIT", "the dynamic loader runs that audit library"),
    (
        "PYTHONPATH",
        "Python imports from those directories before the venv",
    ),
    (
        "PYTHONSTARTUP",
        "harmless for workers, but a sign the file was written for a shell",
    ),
    (
        "PYTHONHOME",
        "Python looks for its standard library there instead of the venv's",
    ),
    (
        "PYTHONINSPECT",
        "Python drops into an interactive prompt when a worker exits",
    ),
    (
        "PYTHONWARNINGS",
        "warning filters change (an `error` filter turns warnings into exceptions)",
    ),
    ("PYTHONEXECUTABLE", "sys.executable changes"),
    (
        "PYTHONUSERBASE",
        "Python imports from that user site directory",
    ),
    ("PYTHONBREAKPOINT", "breakpoint() calls run that hook"),
    ("PYTHONMALLOC", "Python's memory allocator changes"),
    (
        "PYTHONDEVMODE",
        "Python's development mode slows every worker",
    ),
];

/// The items `for-readline` yields: each line with trailing `\r`/`\n` removed
/// (`uwsgi_chomp`), a last line without newline included. Bytes, unchanged.
pub fn readline_items(raw: &[u8]) -> Vec<Vec<u8>> {
    let mut items = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..=i], &rest[i + 1..]),
            None => (rest, &b""[..]),
        };
        let mut end = line.len();
        while end > 0 && matches!(line[end - 1], b'\r' | b'\n') {
            end -= 1;
        }
        items.push(line[..end].to_vec());
        rest = next;
    }
    items
}

/// Whether this process runs as root: the permission rules are stricter then,
/// because the files decide what a root-started master runs.
pub fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A file that decides what runs (the ini, an env file) and that someone else
/// may write: refused when the master runs as root, a warning otherwise.
/// World-writable is refused either way.
pub fn check_writable(path: &Path, what: &str, root: bool) -> Result<Vec<Warning>, ConfigError> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(Vec::new());
    };
    let mode = meta.permissions().mode() & 0o777;
    let refuse = |message: String| ConfigError::new(ErrorKind::Permission, path, None, message);
    if mode & 0o002 != 0 {
        return Err(refuse(format!(
            "{what} is world-writable (mode {mode:03o}); refusing it: chmod o-w"
        )));
    }
    if mode & 0o020 != 0 {
        if root {
            return Err(refuse(format!(
                "{what} is group-writable (mode {mode:03o}) and the master runs as root; refusing it: chmod g-w"
            )));
        }
        return Ok(vec![Warning {
            path: path.to_path_buf(),
            line: None,
            message: format!(
                "{what} is group-writable (mode {mode:03o}): refused when the master runs as root; chmod g-w"
            ),
        }]);
    }
    Ok(Vec::new())
}

/// An env file must not be writable by others (see [`check_writable`]); a
/// world-readable one exposes its secrets: warned.
pub fn check_permissions(path: &Path, root: bool) -> Result<Vec<Warning>, ConfigError> {
    let mut warnings = check_writable(path, "env file", root)?;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(warnings);
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o004 != 0 {
        warnings.push(Warning {
            path: path.to_path_buf(),
            line: None,
            message: format!(
                "env file is world-readable (mode {mode:03o}) and may hold secrets: chmod o-r"
            ),
        });
    }
    Ok(warnings)
}

/// What one env-file line means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineKind {
    /// Blank or `#` comment.
    Skip,
    /// `NAME=value`; `export_prefix` when the line started with `export `.
    /// The value is the bytes of the line, unchanged.
    Var {
        name: String,
        value: Vec<u8>,
        export_prefix: bool,
    },
}

fn valid_name(name: &[u8]) -> bool {
    let mut bytes = name.iter();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || *b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

fn trim_start(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    s
}

/// Checks one variable bound for the workers, wherever it came from: size,
/// NUL bytes, and the loader/Python variables. Messages name the variable and
/// the line, never the value.
pub fn check_var(
    name: &str,
    value: &[u8],
    path: &Path,
    lineno: Option<usize>,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    let at = |message: String| ConfigError::new(ErrorKind::EnvFile, path, lineno, message);
    if value.contains(&0) {
        return Err(at(format!(
            "value of {name} holds a NUL byte: an environment variable cannot carry it"
        )));
    }
    if name.len() + 1 + value.len() > MAX_VAR_SIZE {
        return Err(at(format!(
            "{name} is {} bytes long; the kernel refuses an environment string over {MAX_VAR_SIZE} bytes at exec",
            name.len() + 1 + value.len()
        )));
    }
    if let Some((_, effect)) = RISKY.iter().find(|(n, _)| *n == name) {
        warnings.push(Warning {
            path: path.to_path_buf(),
            line: lineno,
            message: format!("{name} is set for the workers: {effect}"),
        });
    }
    if name == "LD_PRELOAD" {
        let list = String::from_utf8_lossy(value);
        for lib in list.split([' ', ':']).filter(|s| !s.is_empty()) {
            let dir = Path::new(lib)
                .parent()
                .filter(|d| !d.as_os_str().is_empty());
            let writable = dir
                .and_then(|d| std::fs::metadata(d).ok())
                .is_some_and(|m| m.permissions().mode() & 0o002 != 0);
            if writable {
                return Err(at(format!(
                    "LD_PRELOAD names a library in a world-writable directory ({}): anyone on the host could replace it; refusing",
                    dir.map(|d| d.display().to_string()).unwrap_or_default()
                )));
            }
        }
    }
    Ok(())
}

/// Classifies `line` (line number `lineno` of `path`), with warnings.
pub fn parse_line(
    line: &[u8],
    path: &Path,
    lineno: usize,
    warnings: &mut Vec<Warning>,
) -> Result<LineKind, ConfigError> {
    let at = |message: String| ConfigError::new(ErrorKind::EnvFile, path, Some(lineno), message);
    let trimmed = trim_start(line);
    if trimmed.iter().all(|b| b.is_ascii_whitespace()) || trimmed.starts_with(b"#") {
        return Ok(LineKind::Skip);
    }
    let (body, export_prefix) = match trimmed.strip_prefix(b"export ") {
        Some(rest) => (trim_start(rest), true),
        None => (line, false),
    };
    let Some(eq) = body.iter().position(|&b| b == b'=') else {
        return Err(at("line has no '=': expected NAME=value".into()));
    };
    let (name, value) = (&body[..eq], &body[eq + 1..]);
    if !valid_name(name) {
        let shown: String = String::from_utf8_lossy(name).chars().take(40).collect();
        return Err(at(format!(
            "invalid variable name {shown:?}: expected letters, digits and '_', not starting with a digit"
        )));
    }
    let name = String::from_utf8_lossy(name).into_owned();
    if export_prefix {
        warnings.push(Warning {
            path: path.to_path_buf(),
            line: Some(lineno),
            message: format!("'export ' prefix stripped from {name} (uWSGI would set a variable named \"export {name}\")"),
        });
    }
    if value.len() >= 2 && (value[0] == b'"' || value[0] == b'\'') {
        warnings.push(Warning {
            path: path.to_path_buf(),
            line: Some(lineno),
            message: format!("value of {name} starts with a quote; quotes are kept as part of the value, as uWSGI does"),
        });
    }
    if value.last().is_some_and(|b| *b == b' ' || *b == b'\t') {
        warnings.push(Warning {
            path: path.to_path_buf(),
            line: Some(lineno),
            message: format!(
                "value of {name} ends with whitespace; it is kept as part of the value, as uWSGI does"
            ),
        });
    }
    check_var(&name, value, path, Some(lineno), warnings)?;
    Ok(LineKind::Var {
        name,
        value: value.to_vec(),
        export_prefix,
    })
}

/// Reads an env file's bytes: a regular file, at most [`MAX_FILE_SIZE`], never
/// blocking on a FIFO.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, ConfigError> {
    super::source::read_regular(path, MAX_FILE_SIZE, "env file")
}

/// Tracks variables set twice across env-file lines: a warning naming both.
#[derive(Default)]
pub struct Duplicates {
    seen: HashMap<String, (std::path::PathBuf, usize)>,
}

impl Duplicates {
    pub fn note(&mut self, name: &str, path: &Path, line: usize, warnings: &mut Vec<Warning>) {
        if let Some((first_path, first_line)) = self.seen.get(name) {
            let first = if first_path == path {
                format!("line {first_line}")
            } else {
                format!("{}:{first_line}", first_path.display())
            };
            warnings.push(Warning {
                path: path.to_path_buf(),
                line: Some(line),
                message: format!("{name} is set again (first at {first}); the last value wins"),
            });
        } else {
            self.seen
                .insert(name.to_string(), (path.to_path_buf(), line));
        }
    }
}

/// Reads a whole env file (`--env-file`, or the implicit `uwsgi_env`): values
/// literal bytes, no expansion. Each variable comes with its line.
/// The variables of an env file, each with its line.
pub type LinedVars = Vec<(EnvVar, usize)>;

pub fn read(path: &Path, root: bool) -> Result<(LinedVars, Vec<Warning>), ConfigError> {
    let raw = read_bytes(path)?;
    let mut warnings = check_permissions(path, root)?;
    let mut vars = Vec::new();
    let mut duplicates = Duplicates::default();
    let text = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&raw);
    for (i, line) in readline_items(text).iter().enumerate() {
        if let LineKind::Var { name, value, .. } = parse_line(line, path, i + 1, &mut warnings)? {
            duplicates.note(&name, path, i + 1, &mut warnings);
            vars.push((
                EnvVar {
                    name,
                    value: OsString::from_vec(value),
                },
                i + 1,
            ));
            if vars.len() > MAX_VARS {
                return Err(ConfigError::new(
                    ErrorKind::TooLarge,
                    path,
                    Some(i + 1),
                    format!("more than {MAX_VARS} variables in one env file"),
                ));
            }
        }
    }
    Ok((vars, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn p() -> PathBuf {
        PathBuf::from("/srv/uwsgi_env")
    }

    fn parse(line: &str) -> (Result<LineKind, ConfigError>, Vec<Warning>) {
        let mut w = Vec::new();
        (parse_line(line.as_bytes(), &p(), 7, &mut w), w)
    }

    fn var(name: &str, value: &str) -> LineKind {
        LineKind::Var {
            name: name.into(),
            value: value.as_bytes().to_vec(),
            export_prefix: false,
        }
    }

    #[test]
    fn readline_chomps_cr_and_lf_and_keeps_an_unterminated_last_line() {
        assert_eq!(
            readline_items(b"A=1\r\n\nB=2"),
            vec![b"A=1".to_vec(), b"".to_vec(), b"B=2".to_vec()]
        );
        assert_eq!(readline_items(b""), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn long_lines_are_not_split() {
        let line = format!("A={}", "x".repeat(5000));
        assert_eq!(readline_items(line.as_bytes()), vec![line.into_bytes()]);
    }

    #[test]
    fn plain_line_keeps_spaces_and_equals() {
        let (r, w) = parse("AMY_D=with spaces");
        assert_eq!(r.unwrap(), var("AMY_D", "with spaces"));
        assert!(w.is_empty());
        let (r, _) = parse("AMY_G=a=b=c");
        assert_eq!(r.unwrap(), var("AMY_G", "a=b=c"));
    }

    #[test]
    fn non_utf8_bytes_pass_through_unchanged() {
        let mut w = Vec::new();
        let r = parse_line(b"AMY_B=caf\xe9\xff", &p(), 1, &mut w).unwrap();
        assert_eq!(
            r,
            LineKind::Var {
                name: "AMY_B".into(),
                value: b"caf\xe9\xff".to_vec(),
                export_prefix: false
            }
        );
    }

    #[test]
    fn trailing_whitespace_is_kept_with_a_warning_naming_key_and_line() {
        let (r, w) = parse("AMY_D=s3cret   ");
        assert_eq!(r.unwrap(), var("AMY_D", "s3cret   "));
        assert_eq!(w.len(), 1);
        assert_eq!(
            w[0].to_string(),
            "/srv/uwsgi_env:7: warning: value of AMY_D ends with whitespace; it is kept as part of the value, as uWSGI does"
        );
    }

    #[test]
    fn blank_and_comment_lines_are_skipped() {
        assert_eq!(parse("").0.unwrap(), LineKind::Skip);
        assert_eq!(parse("   ").0.unwrap(), LineKind::Skip);
        assert_eq!(parse("# A=1").0.unwrap(), LineKind::Skip);
    }

    #[test]
    fn quotes_are_kept_with_a_warning_naming_line_and_key_not_value() {
        let (r, w) = parse("AMY_C=\"s3cret\"");
        assert_eq!(r.unwrap(), var("AMY_C", "\"s3cret\""));
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].line, Some(7));
        assert!(w[0].message.contains("AMY_C"));
        assert!(!w[0].to_string().contains("s3cret"));
    }

    #[test]
    fn export_prefix_is_stripped_with_a_warning() {
        let (r, w) = parse("export AMY_B=s3cret");
        assert_eq!(
            r.unwrap(),
            LineKind::Var {
                name: "AMY_B".into(),
                value: b"s3cret".to_vec(),
                export_prefix: true
            }
        );
        assert_eq!(w.len(), 1);
        assert!(w[0].message.contains("export"));
        assert!(!w[0].to_string().contains("s3cret"));
    }

    #[test]
    fn line_without_equals_is_an_error_with_its_line() {
        let (r, _) = parse("AMY_H");
        let e = r.unwrap_err();
        assert_eq!(e.kind, ErrorKind::EnvFile);
        assert_eq!(
            e.to_string(),
            "/srv/uwsgi_env:7: line has no '=': expected NAME=value"
        );
    }

    #[test]
    fn nul_byte_is_an_error_with_its_line_without_the_value() {
        let mut w = Vec::new();
        let e = parse_line(b"AMY_N=s3c\0ret", &p(), 3, &mut w).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/srv/uwsgi_env:3: value of AMY_N holds a NUL byte: an environment variable cannot carry it"
        );
    }

    #[test]
    fn a_value_the_kernel_would_refuse_at_exec_is_refused_at_load() {
        let line = format!("BIG={}", "x".repeat(MAX_VAR_SIZE));
        let e = parse(&line).0.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "/srv/uwsgi_env:7: BIG is {} bytes long; the kernel refuses an environment string over {MAX_VAR_SIZE} bytes at exec",
                MAX_VAR_SIZE + 4
            )
        );
    }

    #[test]
    fn loader_and_python_variables_are_warned_by_name() {
        let (r, w) = parse("PYTHONPATH=/opt/s3cret");
        assert!(r.is_ok());
        assert_eq!(
            w[0].to_string(),
            "/srv/uwsgi_env:7: warning: PYTHONPATH is set for the workers: Python imports from those directories before the venv"
        );
        assert!(!w[0].to_string().contains("s3cret"));
        for name in [
            "LD_LIBRARY_PATH",
            "PYTHONSTARTUP",
            "PYTHONHOME",
            "PYTHONINSPECT",
            "PYTHONWARNINGS",
        ] {
            let (_, w) = parse(&format!("{name}=x"));
            assert_eq!(w.len(), 1, "{name}");
        }
    }

    #[test]
    fn ld_preload_from_a_world_writable_directory_is_refused() {
        let e = parse("LD_PRELOAD=/tmp/evil.so").0.unwrap_err();
        assert_eq!(
            e.to_string(),
            "/srv/uwsgi_env:7: LD_PRELOAD names a library in a world-writable directory (/tmp): anyone on the host could replace it; refusing"
        );
        let (r, w) = parse("LD_PRELOAD=/usr/lib/libjemalloc.so.2");
        assert!(r.is_ok());
        assert!(w[0]
            .message
            .starts_with("LD_PRELOAD is set for the workers"));
    }

    #[test]
    fn duplicates_are_warned_with_both_lines() {
        let mut d = Duplicates::default();
        let mut w = Vec::new();
        d.note("A", &p(), 2, &mut w);
        d.note("A", &p(), 5, &mut w);
        assert_eq!(
            w[0].to_string(),
            "/srv/uwsgi_env:5: warning: A is set again (first at line 2); the last value wins"
        );
    }

    #[test]
    fn invalid_name_is_an_error_without_the_value() {
        let (r, _) = parse("1BAD=s3cret");
        let e = r.unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/srv/uwsgi_env:7: invalid variable name \"1BAD\""),
            "{e}"
        );
        assert!(!e.to_string().contains("s3cret"));
        assert!(parse("A-B=1").0.is_err());
    }

    #[test]
    fn permissions_others_writable_refused_world_readable_warned() {
        let dir = std::env::temp_dir().join(format!("amy-envfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("uwsgi_env");
        std::fs::write(&f, "A=1\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = check_permissions(&f, false).unwrap_err();
        assert!(e.message.contains("world-writable"));
        assert_eq!(e.kind, ErrorKind::Permission);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o620)).unwrap();
        let e = check_permissions(&f, true).unwrap_err();
        assert_eq!(
            e.message,
            "env file is group-writable (mode 620) and the master runs as root; refusing it: chmod g-w"
        );
        assert!(check_permissions(&f, false).unwrap()[0]
            .message
            .starts_with(
                "env file is group-writable (mode 620): refused when the master runs as root"
            ));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check_permissions(&f, true).unwrap()[0]
            .message
            .contains("world-readable"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check_permissions(&f, true).unwrap().is_empty());
        let (vars, _) = read(&f, true).unwrap();
        assert_eq!(
            vars,
            vec![(
                EnvVar {
                    name: "A".into(),
                    value: "1".into()
                },
                1
            )]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
