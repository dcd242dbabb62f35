//! The ini lexer: uWSGI's `uwsgi_ini_config` line rules, with line numbers.
//!
//! Written by hand rather than on `serde_ini`: its `Parser` drops line numbers,
//! rejects or reinterprets lines uWSGI accepts (a header without `]` such as
//! `[uwsgi` is, for uWSGI, the section `uwsg`: the text after `[` minus its last
//! character; a line without `=` is a key with an empty value), and its typed
//! deserialisation cannot express repeated keys in order or uWSGI's booleans. The
//! typed layer is ours (`build.rs`); this file only reproduces the lines.
//!
//! Rules (uwsgi.md §1.1): split on `\n`; trim space, tab and `\r` on both sides;
//! skip empty lines; `[` starts a header; `;` or `#` first is a comment (there are
//! no inline comments); otherwise the key runs to the first `=` (right-trimmed) and
//! the value is the rest, trimmed. Only lines of the requested section are kept;
//! several blocks of the same section all count.

/// One `key = value` line of the requested section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniEntry {
    pub key: String,
    pub value: String,
    /// 1-based line number in the file.
    pub line: usize,
}

/// The lines of one section of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub entries: Vec<IniEntry>,
    /// uWSGI warns (and carries on) when the section never appears.
    pub found: bool,
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Whether the raw file starts with a UTF-8 byte-order mark.
pub fn has_bom(raw: &[u8]) -> bool {
    raw.starts_with(UTF8_BOM)
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t' || b == b'\r'
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_blank(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_blank(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// Splits `text` (already magic-substituted) into the entries of `section`.
pub fn parse(text: &[u8], section: &str) -> Section {
    let mut entries = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    let mut found = false;
    for (idx, raw_line) in text.split(|&b| b == b'\n').enumerate() {
        let line = trim(raw_line);
        if line.is_empty() {
            continue;
        }
        if line[0] == b'[' {
            // uWSGI cuts the last character whatever it is: `[uwsgi` is `uwsg`.
            let inner = &line[1..];
            current = inner[..inner.len().saturating_sub(1)].to_vec();
            continue;
        }
        if line[0] == b';' || line[0] == b'#' {
            continue;
        }
        if current != section.as_bytes() {
            continue;
        }
        found = true;
        let (key, value) = match line.iter().position(|&b| b == b'=') {
            Some(eq) => (trim(&line[..eq]), trim(&line[eq + 1..])),
            None => (line, &b""[..]),
        };
        entries.push(IniEntry {
            key: String::from_utf8_lossy(key).into_owned(),
            value: String::from_utf8_lossy(value).into_owned(),
            line: idx + 1,
        });
    }
    Section { entries, found }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(s: &Section) -> Vec<(&str, &str, usize)> {
        s.entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str(), e.line))
            .collect()
    }

    #[test]
    fn only_the_requested_section_and_all_its_blocks() {
        let s = parse(
            b"a=0\n[other]\nsocket=/x\n[uwsgi]\nb = 1\n[x]\nc=2\n[uwsgi]\nd=3\n",
            "uwsgi",
        );
        assert!(s.found);
        assert_eq!(kv(&s), vec![("b", "1", 5), ("d", "3", 9)]);
    }

    #[test]
    fn comments_are_full_line_only() {
        let s = parse(b"[uwsgi]\n; c\n  # c\nkey = v ; not comment\n", "uwsgi");
        assert_eq!(kv(&s), vec![("key", "v ; not comment", 4)]);
    }

    #[test]
    fn key_splits_on_first_equals_and_bare_key_is_empty_value() {
        let s = parse(b"[uwsgi]\na=b=c\nmaster\n=x\n  k  =  v  \n", "uwsgi");
        assert_eq!(
            kv(&s),
            vec![
                ("a", "b=c", 2),
                ("master", "", 3),
                ("", "x", 4),
                ("k", "v", 5)
            ]
        );
    }

    #[test]
    fn crlf_and_missing_final_newline() {
        let s = parse(b"[uwsgi]\r\na = 1\r\nb = 2", "uwsgi");
        assert_eq!(kv(&s), vec![("a", "1", 2), ("b", "2", 3)]);
    }

    #[test]
    fn header_drops_its_last_character_whatever_it_is() {
        assert!(!parse(b"[uwsgi\na=1\n", "uwsgi").found);
        assert!(parse(b"[uwsgi\na=1\n", "uwsg").found);
        assert!(!parse(b"[ uwsgi ]\na=1\n", "uwsgi").found);
        assert!(!parse(b"[uwsgi] ; c\na=1\n", "uwsgi").found);
        assert!(!parse(b"[UWSGI]\na=1\n", "uwsgi").found);
    }

    #[test]
    fn bom_hides_the_first_header() {
        let raw = b"\xEF\xBB\xBF[uwsgi]\na=1\n";
        assert!(has_bom(raw));
        assert!(!parse(raw, "uwsgi").found);
        assert!(parse(&raw[3..], "uwsgi").found);
    }

    #[test]
    fn tabs_trim_but_other_whitespace_does_not() {
        let s = parse(b"[uwsgi]\n\tk\t=\tv\x0b\n", "uwsgi");
        assert_eq!(kv(&s), vec![("k", "v\x0b", 2)]);
    }
}
