//! `log-date`: uWSGI prefixes its own lines with `ctime` (`Tue Dec  1 23:31:22
//! 2026`) or a strftime format, then ` - ` (core/logging.c `uwsgi_log`). Here the
//! master's tracing events get that prefix in place of tracing's own timestamp;
//! the workers prefix their own lines themselves (applog.py).

use std::sync::OnceLock;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

use crate::config::logging::LogDate;

static DATE: OnceLock<LogDate> = OnceLock::new();

/// Sets the master's `log-date` once, before its first event (a reload cannot
/// change it: the key is restart-only).
pub fn set_log_date(date: Option<&LogDate>) {
    if let Some(d) = date {
        let _ = DATE.set(d.clone());
    }
}

/// `strftime(fmt, localtime(secs))`; at most 256 bytes (uWSGI: 64).
pub fn strftime_local(fmt: &str, secs: i64) -> String {
    let Ok(cfmt) = std::ffi::CString::new(fmt) else {
        return String::new();
    };
    let t: libc::time_t = secs as libc::time_t;
    // SAFETY: `tm` is plain data filled by localtime_r; `t` outlives the call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return String::new();
    }
    let mut buf = [0u8; 256];
    // SAFETY: `buf` has the length passed; `cfmt` is NUL-terminated; `tm` is initialised.
    let n = unsafe { libc::strftime(buf.as_mut_ptr().cast(), buf.len(), cfmt.as_ptr(), &tm) };
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The prefix for a line written at `secs` (without the trailing space of ` - `).
pub fn prefix(date: &LogDate, secs: i64) -> String {
    match date {
        LogDate::Ctime => strftime_local("%a %b %e %H:%M:%S %Y -", secs),
        LogDate::Strftime(f) => format!("{} -", strftime_local(f, secs)),
    }
}

/// tracing's timer: the `log-date` prefix when set, else tracing's default.
#[derive(Debug, Clone, Copy, Default)]
pub struct UwsgiTime;

impl FormatTime for UwsgiTime {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        match DATE.get() {
            None => tracing_subscriber::fmt::time::SystemTime.format_time(w),
            Some(d) => {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                w.write_str(&prefix(d, secs))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctime_form_is_24_chars_like_c_ctime() {
        let p = prefix(&LogDate::Ctime, 0);
        // "Thu Jan  1 00:00:00 1970 -" in UTC; any zone keeps the shape.
        assert_eq!(p.len(), 26, "{p:?}");
        assert!(p.ends_with(" -"));
        assert_eq!(prefix(&LogDate::Strftime("[x]".into()), 0), "[x] -");
    }
}
