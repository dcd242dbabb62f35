//! The key table: which keys are uWSGI options, which run immediately while the
//! file is parsed, which are aliases of the keys we honour, and how flags read.
//!
//! uWSGI treats every key that is not one of its options as a placeholder, and
//! only `strict = true` makes that fatal. We keep that rule, so the option list
//! has to be uWSGI's own (`uwsgi_options.txt`, taken from `uwsgi --help`), not
//! the smaller list of keys amy-emperor acts on.

use std::collections::HashSet;
use std::sync::OnceLock;

static OPTIONS_TXT: &str = include_str!("uwsgi_options.txt");

fn options() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| {
        OPTIONS_TXT
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    })
}

/// Whether uWSGI 2.0.x knows `key` as an option (anything else is a placeholder).
pub fn is_uwsgi_option(key: &str) -> bool {
    options().contains(key)
}

/// amy-emperor's own keys (documented as such in the README): not uWSGI options,
/// so neither the classifier nor `strict = true` may treat them as unknown.
pub fn is_own_key(key: &str) -> bool {
    matches!(
        key,
        "reload-one-by-one"
            | "reload-check"
            | "reload-check-host"
            | "reload-check-timeout"
            | "prometheus"
            | "prometheus-public"
    )
}

/// Options uWSGI runs the moment they are parsed (`UWSGI_OPT_IMMEDIATE`). Their
/// values are never expanded by the `$()`, `@()` and `%()` passes.
pub fn is_immediate(key: &str) -> bool {
    matches!(
        key,
        "xmlconfig"
            | "xml"
            | "config"
            | "fallback-config"
            | "strict"
            | "set"
            | "set-placeholder"
            | "set-ph"
            | "declare-option"
            | "resolve"
            | "include"
            | "inject-before"
            | "inject-after"
            | "stop"
            | "reload"
            | "pause"
            | "suspend"
            | "resume"
            | "connect-and-read"
            | "extract"
            | "listen"
            | "umask"
            | "help"
            | "usage"
            | "print-sym"
            | "print-symbol"
            | "spooler-processes"
            | "signal"
            | "flock"
            | "flock-wait"
            | "flock2"
            | "flock-wait2"
            | "immediate-uid"
            | "immediate-gid"
            | "ini"
            | "yaml"
            | "yml"
            | "json"
            | "js"
            | "command-mode"
            | "pcre-jit"
            | "early-envdir"
            | "plugins"
            | "plugin"
            | "need-plugins"
            | "need-plugin"
            | "plugins-dir"
            | "plugin-dir"
            | "autoload"
            | "dlopen"
            | "binary-append-data"
            | "iprint"
            | "exit"
            | "cflags"
            | "dot-h"
            | "config-py"
            | "build-plugin"
            | "ini-paste"
            | "ini-paste-logged"
            | "python-version"
            | "blacklist"
            | "end-blacklist"
            | "whitelist"
            | "end-whitelist"
            | "endfor"
            | "end-for"
            | "endif"
            | "end-if"
    ) || logic_kind(key).is_some()
}

/// Keys that close a logic block (uWSGI checks them by name, `end` included,
/// although `end` is not an option).
pub fn is_logic_end(key: &str) -> bool {
    matches!(key, "end" | "endfor" | "endif" | "end-if" | "end-for")
}

/// The config-logic openers of uWSGI 2.0.x.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogicKind {
    For,
    ForGlob,
    ForTimes,
    ForReadline,
    IfOpt,
    IfNotOpt,
    IfEnv,
    IfNotEnv,
    IfReload,
    IfNotReload,
    IfHostname,
    IfNotHostname,
    IfExists,
    IfNotExists,
    IfPlugin,
    IfNotPlugin,
    IfFile,
    IfNotFile,
    IfDir,
    IfNotDir,
}

pub fn logic_kind(key: &str) -> Option<LogicKind> {
    use LogicKind::*;
    Some(match key {
        "for" => For,
        "for-glob" => ForGlob,
        "for-times" => ForTimes,
        "for-readline" => ForReadline,
        "if-opt" => IfOpt,
        "if-not-opt" => IfNotOpt,
        "if-env" | "ifenv" => IfEnv,
        "if-not-env" => IfNotEnv,
        "if-reload" => IfReload,
        "if-not-reload" => IfNotReload,
        "if-hostname" => IfHostname,
        "if-not-hostname" => IfNotHostname,
        "if-exists" | "ifexists" => IfExists,
        "if-not-exists" => IfNotExists,
        "if-plugin" | "ifplugin" => IfPlugin,
        "if-not-plugin" => IfNotPlugin,
        "if-file" => IfFile,
        "if-not-file" => IfNotFile,
        "if-dir" | "ifdir" | "if-directory" => IfDir,
        "if-not-dir" => IfNotDir,
        _ => return None,
    })
}

/// Plugins compiled into the pip build of uWSGI, for `if-plugin`.
pub fn plugin_is_embedded(name: &str) -> bool {
    matches!(
        name,
        "python"
            | "ping"
            | "cache"
            | "nagios"
            | "rrdtool"
            | "carbon"
            | "rpc"
            | "corerouter"
            | "fastrouter"
            | "http"
            | "ugreen"
            | "signal"
            | "syslog"
            | "rsyslog"
            | "logsocket"
            | "router_uwsgi"
            | "router_redirect"
            | "router_basicauth"
            | "zergpool"
            | "redislog"
            | "mongodblog"
            | "router_rewrite"
            | "router_http"
            | "logfile"
            | "router_cache"
            | "rawrouter"
            | "router_static"
            | "sslrouter"
            | "spooler"
            | "cheaper_busyness"
            | "symcall"
            | "transformation_tofile"
            | "transformation_gzip"
            | "transformation_chunked"
            | "transformation_offload"
            | "router_memcached"
            | "router_redis"
            | "router_hash"
            | "router_expires"
            | "router_metrics"
            | "transformation_template"
            | "stats_pusher_socket"
    )
}

/// The name amy-emperor uses for a key it honours, folding uWSGI's aliases.
pub fn canonical(key: &str) -> &str {
    match key {
        "uwsgi-socket" => "socket",
        "httprouter" => "http",
        "workers" => "processes",
        "venv" | "virtualenv" | "pyhome" => "home",
        "python-path" | "pp" => "pythonpath",
        "wsgi" => "module",
        "file" => "wsgi-file",
        "chmod" => "chmod-socket",
        "lazy" => "lazy-apps",
        "stats-server" => "stats",
        other => other,
    }
}

/// uWSGI's flag parsing (`uwsgi_opt_true`): anything but `false`/`off`/`no`
/// (any case) or exactly `0` is true, the empty value included.
pub fn flag_value(value: &str) -> bool {
    !(value.eq_ignore_ascii_case("false")
        || value.eq_ignore_ascii_case("off")
        || value.eq_ignore_ascii_case("no")
        || value == "0")
}

/// C `atoi`: leading blanks, optional sign, digits; anything else stops it.
pub fn atoi(s: &str) -> i64 {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let mut n: i64 = 0;
    for b in digits.bytes() {
        if !b.is_ascii_digit() {
            break;
        }
        n = n.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if neg {
        -n
    } else {
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_table_holds_uwsgi_options_and_not_placeholders() {
        for k in [
            "socket",
            "processes",
            "workers",
            "venv",
            "for-readline",
            "env",
            "strict",
        ] {
            assert!(is_uwsgi_option(k), "{k}");
        }
        for k in ["base", "proccesses", "Socket", "end", "else", ""] {
            assert!(!is_uwsgi_option(k), "{k}");
        }
    }

    #[test]
    fn immediate_options_include_logic_and_includes_but_not_env() {
        for k in [
            "ini",
            "for-readline",
            "endfor",
            "if-env",
            "strict",
            "listen",
            "set",
            "plugins",
        ] {
            assert!(is_immediate(k), "{k}");
        }
        for k in ["env", "socket", "chdir", "end"] {
            assert!(!is_immediate(k), "{k}");
        }
    }

    #[test]
    fn aliases_fold_to_the_honoured_key() {
        assert_eq!(canonical("workers"), "processes");
        assert_eq!(canonical("uwsgi-socket"), "socket");
        for k in ["venv", "virtualenv", "pyhome"] {
            assert_eq!(canonical(k), "home");
        }
        assert_eq!(canonical("socket"), "socket");
    }

    #[test]
    fn flags_are_true_unless_false_off_no_or_zero() {
        for v in ["", "true", "1", "yes", "on", "00", "disabled", "nope"] {
            assert!(flag_value(v), "{v:?}");
        }
        for v in ["false", "FALSE", "off", "No", "0"] {
            assert!(!flag_value(v), "{v:?}");
        }
    }

    #[test]
    fn atoi_reads_like_c() {
        assert_eq!(atoi("4 # four"), 4);
        assert_eq!(atoi("abc"), 0);
        assert_eq!(atoi(""), 0);
        assert_eq!(atoi("  -3x"), -3);
        assert_eq!(atoi("+7"), 7);
    }
}
