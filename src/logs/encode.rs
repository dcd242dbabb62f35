//! uWSGI's embedded log encoders (`log-encoder`, `log-req-encoder`; core/logging.c),
//! applied by the log pump to each line, in the order given: `prefix TEXT`,
//! `suffix TEXT`, `nl`, `format TEMPLATE`, `json TEMPLATE`. A template's
//! `${msg}` is the line without its newline, `${msgnl}` with it, `${unix}`,
//! `${micros}`, `${millis}` the time, `${strftime:FMT}` the local time; any
//! other name prints nothing. As in uWSGI the chain decides the newline: an
//! encoder that drops it (`format ${msg}`) needs an `nl` after it.
//!
//! `json` escapes as uWSGI's escape_json does (`"`, `\`, tab, CR, LF) and, where
//! uWSGI leaves them raw and breaks the JSON, every other control byte as `\u00XX`.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::logging::{Encoder, Piece};

/// `line` (one line, normally ending in `\n`) through every encoder.
pub fn encode(encoders: &[Encoder], line: &[u8]) -> Vec<u8> {
    let mut msg = line.to_vec();
    for encoder in encoders {
        msg = match encoder {
            Encoder::Prefix(p) => [p.as_bytes(), &msg].concat(),
            Encoder::Suffix(s) => [&msg, s.as_bytes()].concat(),
            Encoder::Nl => [&msg[..], b"\n"].concat(),
            Encoder::Format(pieces) => render(pieces, &msg, false),
            Encoder::Json(pieces) => render(pieces, &msg, true),
        };
    }
    msg
}

fn render(pieces: &[Piece], msg: &[u8], json: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 64);
    let value = |out: &mut Vec<u8>, v: &[u8]| {
        if json {
            escape_json(v, out)
        } else {
            out.extend_from_slice(v)
        }
    };
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.extend_from_slice(t.as_bytes()),
            Piece::Var(name) => match name.as_str() {
                "msg" => value(&mut out, msg.strip_suffix(b"\n").unwrap_or(msg)),
                "msgnl" => value(&mut out, msg),
                "unix" => out.extend_from_slice(now().as_secs().to_string().as_bytes()),
                "micros" => out.extend_from_slice(now().as_micros().to_string().as_bytes()),
                "millis" => out.extend_from_slice(now().as_millis().to_string().as_bytes()),
                other => {
                    if let Some(fmt) = other.strip_prefix("strftime:") {
                        let t = super::date::strftime_local(fmt, now().as_secs() as i64);
                        value(&mut out, t.as_bytes());
                    }
                }
            },
        }
    }
    out
}

fn now() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn escape_json(v: &[u8], out: &mut Vec<u8>) {
    for &b in v {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f | 0x7f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::logging::template_pieces;

    #[test]
    fn prefix_suffix_nl_chain_in_order() {
        let chain = [
            Encoder::Prefix("[app] ".into()),
            Encoder::Suffix(" <".into()),
            Encoder::Nl,
        ];
        assert_eq!(encode(&chain, b"hello\n"), b"[app] hello\n <\n");
    }

    #[test]
    fn format_takes_msg_without_and_msgnl_with_the_newline() {
        let chain = [Encoder::Format(template_pieces(
            "<${msg}> ${nope}$x ${msgnl}",
        ))];
        assert_eq!(encode(&chain, b"a b\n"), b"<a b> $x a b\n");
        let t = String::from_utf8(encode(
            &[Encoder::Format(template_pieces("${unix}|${strftime:%Y}"))],
            b"",
        ))
        .unwrap();
        let (unix, year) = t.split_once('|').unwrap();
        assert!(unix.parse::<u64>().unwrap() > 1_700_000_000, "{t}");
        assert_eq!(year.len(), 4, "{t}");
    }

    #[test]
    fn json_escapes_the_message_into_valid_json() {
        let chain = [
            Encoder::Json(template_pieces(r#"{"msg":"${msg}","at":${millis}}"#)),
            Encoder::Nl,
        ];
        let out = encode(&chain, b"say \"hi\" \\ \x01\ttab\n");
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("}\n"), "{text}");
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["msg"], "say \"hi\" \\ \u{1}\ttab");
        assert!(v["at"].as_u64().unwrap() > 1_700_000_000_000);
    }

    #[test]
    fn templates_split_as_uwsgi_parses_them() {
        assert_eq!(
            template_pieces("a ${msg} $b ${c"),
            vec![
                Piece::Text("a ".into()),
                Piece::Var("msg".into()),
                Piece::Text(" $b ${c".into()),
            ]
        );
    }
}
