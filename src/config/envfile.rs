//! `uwsgi_env`: one `NAME=value` per line, read the way uWSGI's `for-readline`
//! loop reads it, with the checks uWSGI never makes (DESIGN §4).
//!
//! Values are literal: quotes are kept (with a warning), an `export ` prefix is
//! stripped (with a warning; uWSGI would set a variable named `export NAME`),
//! lines may be of any length (uWSGI's `fgets` splits them at 1023 bytes). A line
//! without `=` or with an invalid name is an error. Nothing here ever puts a value
//! in a message: only file, line and variable name.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{ConfigError, EnvVar, Warning};

/// The items `for-readline` yields: each line with trailing `\r`/`\n` removed
/// (`uwsgi_chomp`), a last line without newline included.
pub fn readline_items(raw: &[u8]) -> Vec<String> {
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
        items.push(String::from_utf8_lossy(&line[..end]).into_owned());
        rest = next;
    }
    items
}

/// A world-writable env file is refused: anyone on the host could inject
/// variables into the app. A world-readable one exposes its secrets: warned.
pub fn check_permissions(path: &Path) -> Result<Vec<Warning>, ConfigError> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(Vec::new());
    };
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(ConfigError {
            path: path.to_path_buf(),
            line: None,
            message: format!(
                "env file is world-writable (mode {:03o}); refusing it: chmod o-w",
                mode & 0o777
            ),
        });
    }
    if mode & 0o004 != 0 {
        return Ok(vec![Warning {
            path: path.to_path_buf(),
            line: None,
            message: format!(
                "env file is world-readable (mode {:03o}) and may hold secrets: chmod o-r",
                mode & 0o777
            ),
        }]);
    }
    Ok(Vec::new())
}

/// What one env-file line means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineKind {
    /// Blank or `#` comment.
    Skip,
    /// `NAME=value`; `export_prefix` when the line started with `export `.
    Var {
        name: String,
        value: String,
        export_prefix: bool,
    },
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Classifies `line` (line number `lineno` of `path`), with warnings.
pub fn parse_line(
    line: &str,
    path: &Path,
    lineno: usize,
    warnings: &mut Vec<Warning>,
) -> Result<LineKind, ConfigError> {
    let at = |message: String| ConfigError {
        path: path.to_path_buf(),
        line: Some(lineno),
        message,
    };
    let trimmed = line.trim_start();
    if trimmed.trim_end().is_empty() || trimmed.starts_with('#') {
        return Ok(LineKind::Skip);
    }
    let (body, export_prefix) = match trimmed.strip_prefix("export ") {
        Some(rest) => (rest.trim_start(), true),
        None => (line, false),
    };
    let Some((name, value)) = body.split_once('=') else {
        return Err(at("line has no '=': expected NAME=value".into()));
    };
    if !valid_name(name) {
        let shown: String = name.chars().take(40).collect();
        return Err(at(format!(
            "invalid variable name {shown:?}: expected letters, digits and '_', not starting with a digit"
        )));
    }
    if export_prefix {
        warnings.push(Warning {
            path: path.to_path_buf(),
            line: Some(lineno),
            message: format!("'export ' prefix stripped from {name} (uWSGI would set a variable named \"export {name}\")"),
        });
    }
    let v = value.as_bytes();
    if v.len() >= 2 && (v[0] == b'"' || v[0] == b'\'') {
        warnings.push(Warning {
            path: path.to_path_buf(),
            line: Some(lineno),
            message: format!("value of {name} starts with a quote; quotes are kept as part of the value, as uWSGI does"),
        });
    }
    Ok(LineKind::Var {
        name: name.to_string(),
        value: value.to_string(),
        export_prefix,
    })
}

/// Reads a whole env file (`--env-file`, or the implicit `uwsgi_env`): values
/// literal, no expansion.
pub fn read(path: &Path) -> Result<(Vec<EnvVar>, Vec<Warning>), ConfigError> {
    let raw = std::fs::read(path).map_err(|e| ConfigError {
        path: path.to_path_buf(),
        line: None,
        message: format!("cannot read env file: {e}"),
    })?;
    let mut warnings = check_permissions(path)?;
    let mut vars = Vec::new();
    let text = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&raw);
    for (i, line) in readline_items(text).iter().enumerate() {
        if let LineKind::Var { name, value, .. } = parse_line(line, path, i + 1, &mut warnings)? {
            vars.push(EnvVar { name, value });
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
        (parse_line(line, &p(), 7, &mut w), w)
    }

    #[test]
    fn readline_chomps_cr_and_lf_and_keeps_an_unterminated_last_line() {
        assert_eq!(readline_items(b"A=1\r\n\nB=2"), vec!["A=1", "", "B=2"]);
        assert_eq!(readline_items(b""), Vec::<String>::new());
    }

    #[test]
    fn long_lines_are_not_split() {
        let line = format!("A={}", "x".repeat(5000));
        assert_eq!(readline_items(line.as_bytes()), vec![line]);
    }

    #[test]
    fn plain_line_keeps_spaces_and_equals() {
        let (r, w) = parse("AMY_D=with spaces   ");
        assert_eq!(
            r.unwrap(),
            LineKind::Var {
                name: "AMY_D".into(),
                value: "with spaces   ".into(),
                export_prefix: false
            }
        );
        assert!(w.is_empty());
        let (r, _) = parse("AMY_G=a=b=c");
        assert!(matches!(r.unwrap(), LineKind::Var { value, .. } if value == "a=b=c"));
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
        assert!(matches!(r.unwrap(), LineKind::Var { value, .. } if value == "\"s3cret\""));
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
                value: "s3cret".into(),
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
        assert_eq!(
            e.to_string(),
            "/srv/uwsgi_env:7: line has no '=': expected NAME=value"
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
    fn permissions_world_writable_refused_world_readable_warned() {
        let dir = std::env::temp_dir().join(format!("amy-envfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("uwsgi_env");
        std::fs::write(&f, "A=1\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = check_permissions(&f).unwrap_err();
        assert!(e.message.contains("world-writable"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check_permissions(&f).unwrap()[0]
            .message
            .contains("world-readable"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check_permissions(&f).unwrap().is_empty());
        let (vars, _) = read(&f).unwrap();
        assert_eq!(
            vars,
            vec![EnvVar {
                name: "A".into(),
                value: "1".into()
            }]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
