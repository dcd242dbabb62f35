"""The request log line: uWSGI's default line, or `log-format` compiled once
per worker, and which requests are logged (`disable-logging` with `log-slow`,
`log-4xx`, `log-5xx`, `log-big`, `log-zero`, `log-sendfile`, `log-ioerror`,
as uWSGI's log_request).

A line is one `os.write` to the log pipe (fd 2): a write of up to PIPE_BUF
(4096) bytes into a pipe is atomic, so lines of different workers never
interleave. A longer line is re-rendered with each value cut to 200
characters, then cut whole, so it stays one atomic write (and a JSON line
stays JSON in all but pathological formats).

`log-format` follows core/logging.c: `%(name)` is a variable, anything else is
literal text; an empty value prints as `-`; `%(var.NAME)` is the request
variable NAME (the uwsgi packet's, i.e. the WSGI environ's); a name that is not
one of uWSGI's variables is a log variable set by `uwsgi.set_logvar`
(`logvars.take()`), `-` when unset. uWSGI inserts values raw, so a quote in a
URI breaks a JSON-shaped format; here values in a format that starts with `{`
and ends with `}` are JSON-string-escaped, and in any format control
characters are escaped (`\\xNN`) so a value can never split a line.

With `req-logger` the master routes request lines by their first byte, MARK.
"""

import json
import os
import re
import time

from . import logvars

# Keep in step with src/logs.rs REQUEST_MARK.
MARK = "\x1e"
# One atomic pipe write.
PIPE_BUF = 4096
_CUT = 200

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_JSON_RE = re.compile(r'["\\\x00-\x1f\x7f]')


def _escape_control(v):
    return _CONTROL_RE.sub(lambda m: "\\x%02x" % ord(m.group()), v)


def _escape_json(v):
    return json.dumps(v, ensure_ascii=False)[1:-1]


class _Clock(object):
    """strftime of the request's start, memoised per second (localtime may stat
    /etc/localtime)."""

    __slots__ = ("fmt", "sec", "text")

    def __init__(self, fmt):
        self.fmt = fmt
        self.sec = -1
        self.text = ""

    def __call__(self, t):
        sec = int(t)
        if sec != self.sec:
            self.text = time.strftime(self.fmt, time.localtime(sec))
            self.sec = sec
        return self.text


class Ctx(object):
    """What a log-format variable may read; filled once per logged request."""

    __slots__ = ("env", "req", "t0", "took", "pairs", "block", "count", "logvars", "status")


def _env(name):
    return lambda c: c.env.get(name, "")


def _memory(field, div):
    def get(c):
        try:
            with open("/proc/self/statm", "rb") as f:
                pages = int(f.read().split()[field])
        except (OSError, ValueError, IndexError):
            return "0"
        return str(pages * os.sysconf("SC_PAGE_SIZE") // div)

    return get


def _variables(worker, lg, x_forwarded_for):
    """name -> getter(ctx) -> str, for uWSGI's registered log chunks."""
    ltime = _Clock("%d/%b/%Y:%H:%M:%S %z")
    strftime = lg.get("strftime")
    ftime = _Clock(strftime) if (lg.get("format_strftime") and strftime) else ltime
    pid = str(worker.pid)
    wid = str(worker.cfg.get("id", 0))

    def addr(c):
        if x_forwarded_for:
            xff = c.env.get("HTTP_X_FORWARDED_FOR")
            if xff:
                return xff
        return c.env.get("REMOTE_ADDR", "")

    def cl(c):
        v = c.env.get("CONTENT_LENGTH", "")
        return v if v.isdigit() else "0"

    def ctime(c):
        return worker.ctime(c.t0)

    return {
        "uri": _env("REQUEST_URI"),
        "method": _env("REQUEST_METHOD"),
        "user": _env("REMOTE_USER"),
        "addr": addr,
        "host": _env("HTTP_HOST"),
        "proto": _env("SERVER_PROTOCOL"),
        "uagent": _env("HTTP_USER_AGENT"),
        "referer": _env("HTTP_REFERER"),
        "status": lambda c: c.status,
        "rsize": lambda c: str(c.req.body_bytes),
        "hsize": lambda c: str(c.req.head_len),
        "size": lambda c: str(c.req.head_len + c.req.body_bytes),
        "cl": cl,
        "micros": lambda c: str(int(c.took * 1000000)),
        "msecs": lambda c: str(int(c.took * 1000)),
        "secs": lambda c: "%f" % c.took,
        "tmsecs": lambda c: str(int(c.t0 * 1000)),
        "tmicros": lambda c: str(int(c.t0 * 1000000)),
        "time": lambda c: str(int(c.t0)),
        "ltime": lambda c: ltime(c.t0),
        "ftime": lambda c: ftime(c.t0),
        "ctime": ctime,
        "epoch": lambda c: str(int(time.time())),
        "pid": lambda c: pid,
        "wid": lambda c: wid,
        "switches": lambda c: "1",
        "vars": lambda c: str(c.pairs * 2),
        "core": lambda c: str(c.req.core),
        "vsz": _memory(0, 1),
        "rss": _memory(1, 1),
        "vszM": _memory(0, 1024 * 1024),
        "rssM": _memory(1, 1024 * 1024),
        "pktsize": lambda c: str(c.block),
        "modifier1": lambda c: "0",
        "modifier2": lambda c: "0",
        "headers": lambda c: str(c.req.head_count),
        "werr": lambda c: str(getattr(c.req, "werr", 0)),
        "rerr": lambda c: str(getattr(c.req, "rerr", 0)),
        "ioerr": lambda c: str(getattr(c.req, "rerr", 0) + getattr(c.req, "werr", 0)),
    }


def parse_format(fmt):
    """[(literal, name or None)]: the text before each `%(name)` and the name;
    the last item holds the trailing text. As uWSGI: `%(` up to the next `)`
    is a variable, an unterminated `%(` is text."""
    out = []
    pos = 0
    text = []
    while True:
        at = fmt.find("%(", pos)
        if at < 0:
            text.append(fmt[pos:])
            break
        close = fmt.find(")", at + 2)
        if close < 0 or close == at + 2:
            text.append(fmt[pos : at + 2])
            pos = at + 2
            continue
        text.append(fmt[pos:at])
        out.append(("".join(text), fmt[at + 2 : close]))
        text = []
        pos = close + 1
    out.append(("".join(text), None))
    return out


def compile_format(worker, lg, fmt, x_forwarded_for):
    """A function ctx -> line (str, newline included), built once."""
    variables = _variables(worker, lg, x_forwarded_for)
    stripped = fmt.strip()
    escape = _escape_json if stripped.startswith("{") and stripped.endswith("}") else _escape_control
    needs = _JSON_RE if escape is _escape_json else _CONTROL_RE
    template = []
    getters = []
    for literal, name in parse_format(fmt):
        template.append(literal.replace("%", "%%"))
        if name is None:
            continue
        template.append("%s")
        if name in variables:
            getters.append(variables[name])
        elif name.startswith("var."):
            getters.append(_env(name[4:]))
        else:
            getters.append(lambda c, n=name: c.logvars.get(n, ""))
    template = "".join(template) + "\n"

    def render(c, cut=0):
        values = []
        for g in getters:
            v = g(c)
            if not v:
                v = "-"
            elif needs.search(v) is not None:
                v = escape(v)
            if cut and len(v) > cut:
                v = v[:cut] + "..."
            values.append(v)
        return template % tuple(values)

    return render


class RequestLog(object):
    """Per worker: which requests are logged and how their line is made."""

    def __init__(self, worker, cfg):
        lg = cfg.get("logging") or {}
        self.enabled = not cfg.get("disable_logging")
        self.log_4xx = bool(lg.get("log_4xx"))
        self.log_5xx = bool(lg.get("log_5xx"))
        self.big = int(lg.get("big") or 0)
        self.zero = bool(lg.get("zero"))
        self.sendfile = bool(lg.get("sendfile"))
        self.ioerror = bool(lg.get("ioerror"))
        # Anything that logs a request despite disable-logging (log-slow aside).
        self.conditional = (not self.enabled) and (
            self.log_4xx or self.log_5xx or self.big > 0 or self.zero or self.sendfile or self.ioerror
        )
        self.unit = "micros" if lg.get("micros") else "msecs"
        self.scale = 1000000 if lg.get("micros") else 1000
        self.xff = bool(lg.get("x_forwarded_for"))
        self.mark = MARK if lg.get("mark") else ""
        fmt = lg.get("format")
        self.render = compile_format(worker, lg, fmt, self.xff) if fmt else None
        self.write = self._formatted if self.render is not None else _default_writer(self)

    def wanted(self, code, body_bytes, via=" ", read_errors=0, write_errors=0):
        """log_request's conditions, for a request disable-logging would skip."""
        if self.zero and body_bytes == 0:
            return True
        if self.sendfile and "sendfile" in via:
            return True
        # As core/logging.c: both kinds of error, not either (a client that
        # hangs up after sending its whole request is not logged).
        if self.ioerror and read_errors > 0 and write_errors > 0:
            return True
        if self.log_4xx and code[:1] == "4":
            return True
        if self.log_5xx and code[:1] == "5":
            return True
        return bool(self.big and body_bytes >= self.big)

    def _formatted(self, worker, env, req, count, pairs, block_size, end, took, via, code, lvars):
        c = Ctx()
        c.env = env
        c.req = req
        c.t0 = time.time() - took
        c.took = took
        c.pairs = pairs
        c.block = block_size
        c.count = count
        c.logvars = lvars
        c.status = code
        data = (self.mark + self.render(c)).encode("latin-1", "replace")
        if len(data) > PIPE_BUF:
            data = (self.mark + self.render(c, _CUT)).encode("latin-1", "replace")
            if len(data) > PIPE_BUF:
                data = data[: PIPE_BUF - 4] + b"...\n"
        try:
            os.write(2, data)
        except OSError:
            pass


def _default_writer(rl):
    """uWSGI's default line; a closure so the hot path reads its settings as
    cell variables, not attributes."""
    mark = rl.mark
    unit = rl.unit
    scale = rl.scale
    xff = rl.xff
    now = time.time
    write = os.write
    fmt = mark.replace("%", "%%") + (
        "[pid: %d|app: 0|req: %d/%d] %s (%s) {%d vars in %d bytes} [%s] %s %s => generated %d bytes in %d "
        + unit
        + "%s(%s %s) %d headers in %d bytes (1 switches on core %d)\n"
    )

    def default(worker, env, req, count, pairs, block_size, end, took, via, code, lvars):
        addr = env.get("REMOTE_ADDR", "")
        if xff:
            addr = env.get("HTTP_X_FORWARDED_FOR") or addr
        line = fmt % (
            worker.pid,
            count,
            count,
            addr,
            env.get("REMOTE_USER", ""),
            pairs * 2,
            block_size,
            worker.ctime(now() - took),
            env["REQUEST_METHOD"],
            env.get("REQUEST_URI", ""),
            req.body_bytes,
            int(took * scale),
            via,
            req.proto,
            code,
            req.head_count,
            req.head_len,
            req.core,
        )
        if len(line) > 4096:
            line = line[:3996] + "...\n"
        try:
            write(2, line.encode("latin-1", "replace"))
        except OSError:
            pass

    return default


def take_logvars():
    return logvars.take()
