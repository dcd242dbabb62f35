//! The four classes every uWSGI option falls into, read from
//! `key_classes.txt`: data a person reviews and edits one line at a time.
//!
//! - honoured: works as uWSGI documents it;
//! - equivalent: nothing to do, amy-emperor always behaves that way;
//! - tuning: ignored with a warning, harmless to lose;
//! - unsupported: behaviour-changing; `check`, `start` and a reload fail unless
//!   the operator allows the key (`--allow-unsupported KEY`).
//!
//! A few keys are equivalent only for one value (`hook-master-start`, `plugins`):
//! [`classify`] decides those, on the key and its value.

use std::collections::HashMap;
use std::sync::OnceLock;

static TABLE_TXT: &str = include_str!("key_classes.txt");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyClass {
    Honoured,
    Equivalent,
    Tuning,
    Unsupported,
}

impl KeyClass {
    fn parse(s: &str) -> Option<KeyClass> {
        Some(match s {
            "honoured" => KeyClass::Honoured,
            "equivalent" => KeyClass::Equivalent,
            "tuning" => KeyClass::Tuning,
            "unsupported" => KeyClass::Unsupported,
            _ => return None,
        })
    }
}

/// One line of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub class: KeyClass,
    /// What it does here (honoured), why nothing is needed (equivalent), what
    /// happens instead (tuning) or what the site would lose (unsupported).
    pub reason: &'static str,
}

/// The parsed table. A malformed line is a bug in the source tree: the unit
/// test below fails on it, and at run time it panics on first use.
fn table() -> &'static HashMap<&'static str, Entry> {
    static TABLE: OnceLock<HashMap<&'static str, Entry>> = OnceLock::new();
    TABLE.get_or_init(|| parse_table(TABLE_TXT).unwrap_or_else(|e| panic!("key_classes.txt: {e}")))
}

fn parse_table(text: &'static str) -> Result<HashMap<&'static str, Entry>, String> {
    let mut map = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split('\t');
        let (Some(key), Some(class), Some(reason), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(format!("line {}: expected key<TAB>class<TAB>reason", i + 1));
        };
        let class = KeyClass::parse(class)
            .ok_or_else(|| format!("line {}: unknown class {class:?}", i + 1))?;
        if reason.is_empty() {
            return Err(format!("line {}: {key} has no reason", i + 1));
        }
        if map.insert(key, Entry { class, reason }).is_some() {
            return Err(format!("line {}: {key} is classified twice", i + 1));
        }
    }
    Ok(map)
}

/// The table's line for `key` (a uWSGI option name as written), if any.
pub fn entry(key: &str) -> Option<Entry> {
    table().get(key).copied()
}

/// The one value of `hook-master-start` that is our own SIGTERM behaviour.
const GRACEFUL_SIGTERM_HOOK: &str = "unix_signal:15 gracefully_kill_them_all";

/// The class of `key = value`, with the few value-dependent cases decided here.
/// `None` for a key that is not a uWSGI option (a placeholder).
pub fn classify(key: &str, value: &str) -> Option<Entry> {
    let entry = entry(key)?;
    match key {
        "hook-master-start" if value.trim() == GRACEFUL_SIGTERM_HOOK => Some(Entry {
            class: KeyClass::Equivalent,
            reason: "SIGTERM already stops gracefully",
        }),
        "plugins" | "plugin" | "need-plugin" | "need-plugins"
            if !value.split([',', ' ']).all(is_python_plugin) =>
        {
            Some(Entry {
                class: KeyClass::Unsupported,
                reason: "only the Python plugin is built in: what that plugin provides is missing",
            })
        }
        _ => Some(entry),
    }
}

/// `python`, `python3`, `python311`, `python3.11`, or an empty list item.
fn is_python_plugin(item: &str) -> bool {
    let item = item.trim();
    item.is_empty()
        || item
            .strip_prefix("python")
            .is_some_and(|v| v.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn options() -> HashSet<&'static str> {
        include_str!("uwsgi_options.txt")
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    }

    #[test]
    fn the_table_parses() {
        parse_table(TABLE_TXT).unwrap();
    }

    #[test]
    fn every_option_has_exactly_one_class_and_every_line_names_an_option() {
        let options = options();
        let table = parse_table(TABLE_TXT).unwrap();
        let missing: Vec<_> = options.iter().filter(|k| !table.contains_key(*k)).collect();
        assert!(missing.is_empty(), "options without a class: {missing:?}");
        let stray: Vec<_> = table.keys().filter(|k| !options.contains(*k)).collect();
        assert!(stray.is_empty(), "class lines for non-options: {stray:?}");
        assert!(table.len() >= 943, "{}", table.len());
    }

    #[test]
    fn the_table_is_sorted_so_people_can_find_a_key() {
        let keys: Vec<&str> = TABLE_TXT
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.split('\t').next().unwrap())
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn malformed_lines_are_refused() {
        assert!(parse_table("a\thonoured\n").is_err());
        assert!(parse_table("a\tmaybe\tx\n").is_err());
        assert!(parse_table("a\ttuning\t\n").is_err());
        assert!(parse_table("a\ttuning\tx\na\ttuning\ty\n").is_err());
    }

    #[test]
    fn keys_that_do_nothing_yet_are_not_called_honoured() {
        for k in [
            "py-autoreload",
            "https",
            "http-websockets",
            "response-route",
            "legion-cron",
            "hook-accepting1",
            "log-route",
            "cheaper-busyness-max",
            "ugreen",
            "emperor",
        ] {
            assert_eq!(entry(k).unwrap().class, KeyClass::Unsupported, "{k}");
        }
        assert_eq!(entry("lazy-apps").unwrap().class, KeyClass::Honoured);
        // Implemented in config/serving.rs and the worker (tests/static_files.rs,
        // tests/mounts_routes.rs); http by src/router/; gevent by the worker's
        // gevent_loop.py (tests/gevent.rs).
        for k in [
            "add-header",
            "post-buffering",
            "static-map",
            "route",
            "mount",
            "http",
            "httprouter",
            "http-to",
            "http-keepalive",
            "http-timeout",
            "gevent",
            "gevent-monkey-patch",
            "async",
            "loop",
        ] {
            assert_eq!(entry(k).unwrap().class, KeyClass::Honoured, "{k}");
        }
        assert_eq!(entry("enable-threads").unwrap().class, KeyClass::Equivalent);
        assert_eq!(entry("cpu-affinity").unwrap().class, KeyClass::Tuning);
    }

    #[test]
    fn value_dependent_classes() {
        let c = |k, v| classify(k, v).unwrap().class;
        assert_eq!(
            c(
                "hook-master-start",
                "unix_signal:15 gracefully_kill_them_all"
            ),
            KeyClass::Equivalent
        );
        assert_eq!(c("hook-master-start", "exec:/bin/true"), KeyClass::Honoured);
        assert_eq!(c("plugins", "python3"), KeyClass::Equivalent);
        assert_eq!(c("plugins", "python311,python"), KeyClass::Equivalent);
        assert_eq!(c("plugins", "python3,router_cache"), KeyClass::Unsupported);
        assert!(classify("not-an-option", "").is_none());
    }
}
