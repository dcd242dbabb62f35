//! Process titles, so `ps` and `pgrep -f` tell the master, the emperor and the
//! workers apart: `amy-emperor master <ini>`, `amy-emperor emperor <dir>` (the
//! workers set `amy-emperor worker N gen G` themselves, `python/amy_worker/proctitle.py`).
//!
//! The argv area (`arg_start`..`arg_end`, fields 48 and 49 of `/proc/self/stat`)
//! is overwritten through `/proc/self/mem` with the title, NUL-padded: plain file
//! I/O, no pointer into our own memory. The kernel shows that area as
//! `/proc/PID/cmdline`. A title longer than the original command line is cut (the
//! environment that follows the area is not moved). After this, `std::env::args()`
//! would return the title: call it once the command line has been parsed.

use std::fs::OpenOptions;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum TitleError {
    #[error("cannot read /proc/self/stat: {0}")]
    Stat(io::Error),
    #[error("/proc/self/stat has no argv area")]
    Parse,
    #[error("cannot write /proc/self/mem: {0}")]
    Write(io::Error),
}

/// The master's title.
pub fn master(ini: &Path) -> String {
    format!("amy-emperor master {}", ini.display())
}

/// The emperor's title (for `start --emperor DIR`).
pub fn emperor(dir: &Path) -> String {
    format!("amy-emperor emperor {}", dir.display())
}

/// Sets the title, logging (at debug) rather than failing: a title is a
/// convenience, never a reason not to start.
pub fn set_or_log(title: &str) {
    match set(title) {
        Ok(written) if written < title.len() => {
            tracing::debug!(
                written,
                wanted = title.len(),
                "process title cut to the argv area"
            )
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "process title not set"),
    }
}

/// Overwrites this process's argv area with `title`; returns how many bytes of
/// it fit.
pub fn set(title: &str) -> Result<usize, TitleError> {
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(TitleError::Stat)?;
    let (start, end) = argv_area(&stat).ok_or(TitleError::Parse)?;
    let data = padded(title, (end - start) as usize);
    let written = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let mut mem = OpenOptions::new()
        .write(true)
        .open("/proc/self/mem")
        .map_err(TitleError::Write)?;
    mem.seek(SeekFrom::Start(start))
        .and_then(|_| mem.write_all(&data))
        .map_err(TitleError::Write)?;
    Ok(written)
}

/// `arg_start` and `arg_end` from a `/proc/PID/stat` line. The comm field is
/// parenthesised and may hold spaces and parentheses: fields count from the last `)`.
fn argv_area(stat: &str) -> Option<(u64, u64)> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // `after` starts at field 3 (state): field 48 is the 46th.
    let start: u64 = fields.nth(48 - 3)?.parse().ok()?;
    let end: u64 = fields.next()?.parse().ok()?;
    (end > start + 1).then_some((start, end))
}

/// `title` cut to leave one NUL, then NUL-padded to `size` bytes (stale
/// arguments would otherwise show after it).
fn padded(title: &str, size: usize) -> Vec<u8> {
    let mut cut = title.len().min(size.saturating_sub(1));
    while !title.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut data = title.as_bytes()[..cut].to_vec();
    data.resize(size, 0);
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_area_counts_fields_after_the_comm_even_with_spaces_and_parens() {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[48 - 3] = "1000".into();
        fields[49 - 3] = "1040".into();
        let stat = format!("42 (a) b (c) {}\n", fields.join(" "));
        assert_eq!(argv_area(&stat), Some((1000, 1040)));
        assert_eq!(argv_area("42 (x) S 1 2"), None);
    }

    #[test]
    fn padded_cuts_on_a_char_boundary_and_keeps_a_nul() {
        assert_eq!(padded("abc", 6), b"abc\0\0\0");
        assert_eq!(padded("abcdef", 4), b"abc\0");
        assert_eq!(padded("aé", 3), b"a\0\0");
    }

    #[test]
    fn sets_this_process_title() {
        // The test binary's own argv area: long enough for a short title.
        let written = set("amy-emperor unit-test").unwrap();
        let cmdline = std::fs::read("/proc/self/cmdline").unwrap();
        let shown = String::from_utf8_lossy(&cmdline);
        assert!(
            shown.starts_with(&"amy-emperor unit-test"[..written]),
            "{shown}"
        );
        assert!(written >= "amy-emperor".len(), "{shown}");
    }
}
