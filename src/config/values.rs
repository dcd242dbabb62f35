//! Numbers in the typed config, read whole.
//!
//! uWSGI reads integers with `atoi`: `20 # seconds` is 20, `abc` and the empty
//! value are 0, `30s` is 30, `1e3` is 1. `--show-config` keeps printing the text
//! (parity), but a value that is not wholly a number is an error here, with the
//! number uWSGI would have used, so nobody runs with an atoi'd 0 by accident.

use super::keys;

/// Why a value is not a usable number. Displays as the reason part of a
/// `path:line: reason` message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("\"{key}\" needs a number, the value is empty (uWSGI would read 0)")]
    Empty { key: String },
    #[error("\"{key}\": the value holds a NUL byte")]
    Nul { key: String },
    #[error("invalid value for option \"{key}\": must be > 0")]
    Negative { key: String },
    #[error("\"{key} = {value}\": unit suffixes are not understood (uWSGI's atoi reads {atoi} and drops \"{suffix}\"); write the plain number")]
    Suffix {
        key: String,
        value: String,
        atoi: i64,
        suffix: String,
    },
    #[error("\"{key} = {value}\": not a whole number (uWSGI's atoi reads it as {atoi}; there are no inline comments)")]
    NotANumber {
        key: String,
        value: String,
        atoi: i64,
    },
    #[error("\"{key} = {value}\": out of range ({min} to {max})")]
    Range {
        key: String,
        value: String,
        min: u64,
        max: u64,
    },
}

/// Unit suffixes people write by habit (systemd, nginx): `30s`, `5m`, `512M`.
fn is_unit_suffix(s: &str) -> bool {
    matches!(
        s.to_ascii_lowercase().as_str(),
        "s" | "sec"
            | "secs"
            | "second"
            | "seconds"
            | "ms"
            | "m"
            | "min"
            | "h"
            | "d"
            | "k"
            | "kb"
            | "kib"
            | "mb"
            | "mib"
            | "g"
            | "gb"
            | "gib"
            | "b"
    )
}

/// A non-negative decimal integer, all of `value`, within `min..=max`.
pub fn parse_u64(key: &str, value: &str, min: u64, max: u64) -> Result<u64, NumberError> {
    let key_s = || key.to_string();
    if value.contains('\0') {
        return Err(NumberError::Nul { key: key_s() });
    }
    if value.is_empty() {
        return Err(NumberError::Empty { key: key_s() });
    }
    if value.starts_with('-')
        && value[1..]
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_digit())
    {
        return Err(NumberError::Negative { key: key_s() });
    }
    let digits = value.strip_prefix('+').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        let lead = digits.bytes().take_while(u8::is_ascii_digit).count();
        let rest = &digits[lead..];
        if lead > 0 && is_unit_suffix(rest.trim()) {
            return Err(NumberError::Suffix {
                key: key_s(),
                value: value.to_string(),
                atoi: keys::atoi(value),
                suffix: rest.trim().to_string(),
            });
        }
        return Err(NumberError::NotANumber {
            key: key_s(),
            value: value.to_string(),
            atoi: keys::atoi(value),
        });
    }
    let range = || NumberError::Range {
        key: key_s(),
        value: value.to_string(),
        min,
        max,
    };
    let n: u64 = digits.parse().map_err(|_| range())?;
    if n < min || n > max {
        return Err(range());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(value: &str) -> String {
        parse_u64("harakiri", value, 0, 86_400)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn whole_numbers_pass() {
        assert_eq!(parse_u64("processes", "4", 1, 1024), Ok(4));
        assert_eq!(parse_u64("processes", "+4", 1, 1024), Ok(4));
        assert_eq!(parse_u64("processes", "007", 1, 1024), Ok(7));
    }

    #[test]
    fn every_refusal_has_its_message() {
        assert_eq!(
            msg(""),
            "\"harakiri\" needs a number, the value is empty (uWSGI would read 0)"
        );
        assert_eq!(msg("2\u{0}0"), "\"harakiri\": the value holds a NUL byte");
        assert_eq!(
            msg("-3"),
            "invalid value for option \"harakiri\": must be > 0"
        );
        assert_eq!(
            msg("30s"),
            "\"harakiri = 30s\": unit suffixes are not understood (uWSGI's atoi reads 30 and drops \"s\"); write the plain number"
        );
        assert_eq!(
            msg("20 # seconds"),
            "\"harakiri = 20 # seconds\": not a whole number (uWSGI's atoi reads it as 20; there are no inline comments)"
        );
        assert_eq!(
            msg("abc"),
            "\"harakiri = abc\": not a whole number (uWSGI's atoi reads it as 0; there are no inline comments)"
        );
        assert_eq!(
            msg("1e3"),
            "\"harakiri = 1e3\": not a whole number (uWSGI's atoi reads it as 1; there are no inline comments)"
        );
        assert_eq!(msg("2.5").split(':').next(), Some("\"harakiri = 2.5\""));
        assert_eq!(
            msg("99999999999999999999999"),
            "\"harakiri = 99999999999999999999999\": out of range (0 to 86400)"
        );
        assert_eq!(
            parse_u64("processes", "0", 1, 1024)
                .unwrap_err()
                .to_string(),
            "\"processes = 0\": out of range (1 to 1024)"
        );
    }
}
