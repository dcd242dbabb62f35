//! The request log's `req: a/b`, as uWSGI means it: `a` is the worker's own
//! request count (the worker writes it), `b` counts the requests of the whole
//! instance (`uwsgi.workers[0].requests`). A worker only knows its own count, so
//! it writes `a/a`, and the master's log pump, which sees every request line of
//! every worker, replaces `b` with its running total.

/// The request-line prefix the worker writes: `[pid: N|app: N|req: a/b] …`.
const PREFIX: &[u8] = b"[pid: ";
const REQ: &[u8] = b"|req: ";

/// Rewrites every request line in `data` (whole lines) into `out`, counting
/// them in `total`. Other lines are copied unchanged.
pub fn number_lines(data: &[u8], total: &mut u64, out: &mut Vec<u8>) {
    out.clear();
    for line in data.split_inclusive(|&b| b == b'\n') {
        match split_req(line) {
            Some((head, tail)) => {
                *total += 1;
                out.extend_from_slice(head);
                out.extend_from_slice(total.to_string().as_bytes());
                out.extend_from_slice(tail);
            }
            None => out.extend_from_slice(line),
        }
    }
}

/// `line` as (everything up to and including `req: a/`, from `]` on), when it
/// is a request line.
fn split_req(line: &[u8]) -> Option<(&[u8], &[u8])> {
    if !line.starts_with(PREFIX) {
        return None;
    }
    // The counter sits within the first few dozen bytes; never scan a long line.
    let window = &line[..line.len().min(96)];
    let at = window.windows(REQ.len()).position(|w| w == REQ)? + REQ.len();
    let slash = at + window[at..].iter().position(|&b| b == b'/')?;
    let close = slash + 1 + window[slash + 1..].iter().position(|&b| b == b']')?;
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    if !digits(&window[at..slash]) || !digits(&window[slash + 1..close]) {
        return None;
    }
    Some((&line[..=slash], &line[close..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, total: &mut u64) -> String {
        let mut out = Vec::new();
        number_lines(text.as_bytes(), total, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn b_counts_every_request_line_of_the_instance() {
        let mut total = 0;
        let text = "[pid: 10|app: 0|req: 1/1] 127.0.0.1 () {28 vars in 295 bytes} GET / => x\n\
                    worker output\n\
                    [pid: 11|app: 0|req: 1/1] 127.0.0.1 () GET /a => y\n\
                    [pid: 10|app: 0|req: 2/2] 127.0.0.1 () GET /b => z\n";
        assert_eq!(
            run(text, &mut total),
            "[pid: 10|app: 0|req: 1/1] 127.0.0.1 () {28 vars in 295 bytes} GET / => x\n\
             worker output\n\
             [pid: 11|app: 0|req: 1/2] 127.0.0.1 () GET /a => y\n\
             [pid: 10|app: 0|req: 2/3] 127.0.0.1 () GET /b => z\n"
        );
        assert_eq!(total, 3);
        assert_eq!(
            run("[pid: 12|app: 0|req: 1/1] x\n", &mut total),
            "[pid: 12|app: 0|req: 1/4] x\n"
        );
    }

    #[test]
    fn lines_that_only_look_alike_are_left_alone() {
        let mut total = 0;
        for line in [
            "[pid: 1|app: 0|req: x/1] a\n",
            "[pid: 1|app: 0|req: 1/] a\n",
            "pid: 1|app: 0|req: 1/1] a\n",
            "[pid: 1|app: 0|req 1/1] a\n",
            "[pid: 1",
            "",
        ] {
            assert_eq!(run(line, &mut total), line);
        }
        assert_eq!(total, 0);
    }
}
