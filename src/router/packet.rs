//! The uwsgi request packet the router sends a worker: a 4-byte header
//! (modifier1, datasize as u16 LE, modifier2) and the CGI variables as
//! `u16 LE length, bytes` pairs — the same variables, in the same order, as
//! uWSGI's HTTP router builds them (`plugins/http/http.c`, `http_parse`).
//!
//! Pure: no I/O, unit-tested below.

use hyper::header::HeaderMap;
use thiserror::Error;

/// What uWSGI's router puts in every packet besides the headers.
pub struct RequestLine<'a> {
    pub method: &'a str,
    /// The request target as the client sent it (`/a%20b?x=1`).
    pub uri: &'a str,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub protocol: &'a str,
    pub remote_addr: &'a str,
    pub remote_port: &'a str,
}

/// The parts of the packet fixed by the router's config.
pub struct PacketConfig<'a> {
    pub modifier1: u8,
    pub modifier2: u8,
    /// `SERVER_NAME`: the host name, as uWSGI's router sends (not the Host header).
    pub server_name: &'a str,
    /// `http-server-name-as-http-host`: SERVER_NAME is the Host header instead.
    pub server_name_as_http_host: bool,
    /// `SERVER_PORT`: the port of the public address.
    pub server_port: &'a str,
    /// `http-var = KEY=VALUE` lines, appended after the headers.
    pub extra_vars: &'a [(String, String)],
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PacketError {
    /// The variables do not fit the protocol's 16-bit size (uWSGI refuses them too).
    #[error("request head too large for the uwsgi protocol ({0} bytes of variables)")]
    TooLarge(usize),
}

/// Builds the packet head (header + variables). `content_length` is the length
/// of the buffered body, sent as CONTENT_LENGTH whatever framing the client used
/// (a de-chunked body has a length too); `None` for a request without a body.
pub fn build(
    line: &RequestLine<'_>,
    headers: &HeaderMap,
    content_length: Option<u64>,
    config: &PacketConfig<'_>,
) -> Result<Vec<u8>, PacketError> {
    let mut out = Vec::with_capacity(512 + headers.len() * 48);
    out.extend_from_slice(&[config.modifier1, 0, 0, config.modifier2]);
    let (path, query) = match line.uri.split_once('?') {
        Some((p, q)) => (p, q),
        None => (line.uri, ""),
    };
    push(&mut out, b"REQUEST_METHOD", line.method.as_bytes());
    push(&mut out, b"REQUEST_URI", line.uri.as_bytes());
    push(&mut out, b"PATH_INFO", &percent_decode(path.as_bytes()));
    push(&mut out, b"QUERY_STRING", query.as_bytes());
    push(&mut out, b"SERVER_PROTOCOL", line.protocol.as_bytes());
    push(&mut out, b"SCRIPT_NAME", b"");
    let host = headers.get(hyper::header::HOST).map(|h| h.as_bytes());
    match (config.server_name_as_http_host, host) {
        (true, Some(h)) => push(&mut out, b"SERVER_NAME", h),
        (true, None) => {}
        (false, _) => push(&mut out, b"SERVER_NAME", config.server_name.as_bytes()),
    }
    push(&mut out, b"SERVER_PORT", config.server_port.as_bytes());
    push(&mut out, b"UWSGI_ROUTER", b"http");
    push(&mut out, b"REMOTE_ADDR", line.remote_addr.as_bytes());
    push(&mut out, b"REMOTE_PORT", line.remote_port.as_bytes());

    let mut name = Vec::with_capacity(64);
    for key in headers.keys() {
        let k = key.as_str();
        // Our framing replaces the client's: the body arrives de-chunked with a length.
        if k == "content-length" || k == "transfer-encoding" {
            continue;
        }
        // `X_Forwarded_For` and `X-Forwarded-For` would both become
        // HTTP_X_FORWARDED_FOR: drop the underscore form, as nginx does, so a
        // client cannot forge a header a proxy in front of us has set.
        if k.contains('_') {
            continue;
        }
        name.clear();
        if k != "content-type" {
            name.extend_from_slice(b"HTTP_");
        }
        name.extend(k.bytes().map(|b| {
            if b == b'-' {
                b'_'
            } else {
                b.to_ascii_uppercase()
            }
        }));
        // Repeated headers are merged into one variable, as uWSGI's router does
        // (`, `; a Cookie header joined with `; ` as browsers send it).
        let sep: &[u8] = if k == "cookie" { b"; " } else { b", " };
        let mut values = headers.get_all(key).iter();
        let first = values.next().map(|v| v.as_bytes()).unwrap_or_default();
        match values.next() {
            None => push(&mut out, &name, first),
            Some(second) => {
                let mut joined = first.to_vec();
                for v in std::iter::once(second).chain(values) {
                    joined.extend_from_slice(sep);
                    joined.extend_from_slice(v.as_bytes());
                }
                push(&mut out, &name, &joined);
            }
        }
    }
    if let Some(n) = content_length {
        push(&mut out, b"CONTENT_LENGTH", n.to_string().as_bytes());
    }
    for (k, v) in config.extra_vars {
        push(&mut out, k.as_bytes(), v.as_bytes());
    }
    let size = out.len() - 4;
    if size > usize::from(u16::MAX) {
        return Err(PacketError::TooLarge(size));
    }
    out[1..3].copy_from_slice(&(size as u16).to_le_bytes());
    Ok(out)
}

fn push(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    // A single key or value over 64 KiB makes the whole packet too large;
    // truncating the length here keeps the arithmetic sound until that check.
    let kl = key.len().min(usize::from(u16::MAX));
    let vl = value.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(kl as u16).to_le_bytes());
    out.extend_from_slice(&key[..kl]);
    out.extend_from_slice(&(vl as u16).to_le_bytes());
    out.extend_from_slice(&value[..vl]);
}

/// `%XX` → byte, as uWSGI's `http_url_decode`: an invalid escape stays as written.
/// `+` is not a space in a path.
pub fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' && i + 2 < input.len() {
            if let (Some(h), Some(l)) = (hex(input[i + 1]), hex(input[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The variables of a packet as (key, value) pairs, for tests and diagnostics.
pub fn parse_vars(packet: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut vars = Vec::new();
    let mut p = &packet[4..];
    let read = |p: &mut &[u8]| -> Option<Vec<u8>> {
        if p.len() < 2 {
            return None;
        }
        let n = usize::from(u16::from_le_bytes([p[0], p[1]]));
        let v = p.get(2..2 + n)?.to_vec();
        *p = &p[2 + n..];
        Some(v)
    };
    while let (Some(k), Some(v)) = (read(&mut p), read(&mut p)) {
        vars.push((k, v));
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn config() -> PacketConfig<'static> {
        PacketConfig {
            modifier1: 0,
            modifier2: 0,
            server_name: "vm",
            server_name_as_http_host: false,
            server_port: "8000",
            extra_vars: &[],
        }
    }

    fn line(uri: &str) -> RequestLine<'_> {
        RequestLine {
            method: "GET",
            uri,
            protocol: "HTTP/1.1",
            remote_addr: "127.0.0.1",
            remote_port: "5555",
        }
    }

    fn vars_of(packet: &[u8]) -> Vec<(String, String)> {
        parse_vars(packet)
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8(k).unwrap(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect()
    }

    fn get<'a>(vars: &'a [(String, String)], key: &str) -> Option<&'a str> {
        vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    #[test]
    fn request_line_vars_are_those_of_uwsgis_router() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("example.org:8000"));
        h.insert("x-foo", HeaderValue::from_static("bar"));
        let p = build(&line("/a%20b/c?x=1&y=%41"), &h, None, &config()).unwrap();
        assert_eq!(p[0], 0);
        assert_eq!(
            usize::from(u16::from_le_bytes([p[1], p[2]])),
            p.len() - 4,
            "datasize"
        );
        let v = vars_of(&p);
        assert_eq!(get(&v, "REQUEST_METHOD"), Some("GET"));
        assert_eq!(get(&v, "REQUEST_URI"), Some("/a%20b/c?x=1&y=%41"));
        assert_eq!(get(&v, "PATH_INFO"), Some("/a b/c"));
        assert_eq!(get(&v, "QUERY_STRING"), Some("x=1&y=%41"));
        assert_eq!(get(&v, "SERVER_PROTOCOL"), Some("HTTP/1.1"));
        assert_eq!(get(&v, "SCRIPT_NAME"), Some(""));
        assert_eq!(get(&v, "SERVER_NAME"), Some("vm"));
        assert_eq!(get(&v, "SERVER_PORT"), Some("8000"));
        assert_eq!(get(&v, "UWSGI_ROUTER"), Some("http"));
        assert_eq!(get(&v, "REMOTE_ADDR"), Some("127.0.0.1"));
        assert_eq!(get(&v, "REMOTE_PORT"), Some("5555"));
        assert_eq!(get(&v, "HTTP_HOST"), Some("example.org:8000"));
        assert_eq!(get(&v, "HTTP_X_FOO"), Some("bar"));
        assert_eq!(get(&v, "CONTENT_LENGTH"), None);
        assert_eq!(get(&v, "HTTPS"), None);
    }

    #[test]
    fn body_framing_is_ours_and_content_type_has_no_prefix() {
        let mut h = HeaderMap::new();
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        h.insert("content-length", HeaderValue::from_static("999"));
        let v = vars_of(&build(&line("/"), &h, Some(12), &config()).unwrap());
        assert_eq!(get(&v, "CONTENT_LENGTH"), Some("12"));
        assert_eq!(get(&v, "CONTENT_TYPE"), Some("text/plain"));
        assert_eq!(get(&v, "HTTP_TRANSFER_ENCODING"), None);
        assert_eq!(get(&v, "HTTP_CONTENT_LENGTH"), None);
        assert_eq!(get(&v, "HTTP_CONTENT_TYPE"), None);
    }

    #[test]
    fn repeated_headers_are_merged_and_underscored_names_dropped() {
        let mut h = HeaderMap::new();
        h.append("accept", HeaderValue::from_static("a"));
        h.append("accept", HeaderValue::from_static("b"));
        h.append("cookie", HeaderValue::from_static("x=1"));
        h.append("cookie", HeaderValue::from_static("y=2"));
        h.append("x_forwarded_for", HeaderValue::from_static("6.6.6.6"));
        let v = vars_of(&build(&line("/"), &h, None, &config()).unwrap());
        assert_eq!(get(&v, "HTTP_ACCEPT"), Some("a, b"));
        assert_eq!(get(&v, "HTTP_COOKIE"), Some("x=1; y=2"));
        assert_eq!(get(&v, "HTTP_X_FORWARDED_FOR"), None);
    }

    #[test]
    fn modifiers_server_name_as_host_and_extra_vars() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("site.example"));
        let extra = vec![("UWSGI_SCHEME".to_string(), "https".to_string())];
        let c = PacketConfig {
            modifier1: 30,
            modifier2: 2,
            server_name_as_http_host: true,
            extra_vars: &extra,
            ..config()
        };
        let p = build(&line("/"), &h, None, &c).unwrap();
        assert_eq!((p[0], p[3]), (30, 2));
        let v = vars_of(&p);
        assert_eq!(get(&v, "SERVER_NAME"), Some("site.example"));
        assert_eq!(get(&v, "UWSGI_SCHEME"), Some("https"));
    }

    #[test]
    fn a_head_over_64k_is_refused() {
        let mut h = HeaderMap::new();
        let big = "x".repeat(40_000);
        h.append("x-a", HeaderValue::from_str(&big).unwrap());
        h.append("x-b", HeaderValue::from_str(&big).unwrap());
        assert!(matches!(
            build(&line("/"), &h, None, &config()),
            Err(PacketError::TooLarge(_))
        ));
    }

    #[test]
    fn percent_decoding_keeps_invalid_escapes() {
        assert_eq!(percent_decode(b"/%2e%2E/x"), b"/../x");
        assert_eq!(percent_decode(b"/100%"), b"/100%");
        assert_eq!(percent_decode(b"/%4"), b"/%4");
        assert_eq!(percent_decode(b"/%zz%41"), b"/%zzA");
        assert_eq!(percent_decode(b"/a+b"), b"/a+b");
    }
}
