"""Static files as uWSGI's core/static.c serves them: `static-map`,
`static-map2`, `check-static`, `check-static-docroot`, `static-index`,
`static-skip-ext`, `static-safe`, `static-expires*`, `static-gzip*`.

`find` runs before the app: it maps PATH_INFO to a file, resolves every
symlink (`os.path.realpath`) and refuses anything that does not stay under the
mapped folder (or a `static-safe` folder). A refused or missing file, a method
other than GET/HEAD, or a skipped extension falls through to the next map and
then to the app, as in uWSGI. `serve` answers with Content-Type (mimetypes),
Content-Length, Last-Modified, If-Modified-Since -> 304, a single Range ->
206/416, and sends the body with os.sendfile (wsgi.py `_sendfile`).

Differences from uWSGI: a single `Range` is honoured without `honour-range`;
an index file (`static-index`) is resolved and checked like any other path
(uWSGI does not re-check it); the docroot must be under the map (a prefix
match on a path boundary, not a string prefix); `Vary: Accept-Encoding` is
sent when a gzip rule could apply.
"""

import mimetypes
import os
import re
import stat
import time
from email.utils import formatdate

from .wsgi import FileWrapper


def http_date(t):
    return formatdate(t, usegmt=True)


_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


def parse_http_date(text):
    """RFC 1123 only, as uWSGI: `Sun, 06 Nov 1994 08:49:37 GMT`; None otherwise."""
    import calendar

    try:
        if len(text) != 29 or text[3] != "," or not text.endswith(" GMT"):
            return None
        day = int(text[5:7])
        month = _MONTHS[text[8:11]]
        year = int(text[12:16])
        hh, mm, ss = int(text[17:19]), int(text[20:22]), int(text[23:25])
        return calendar.timegm((year, month, day, hh, mm, ss, 0, 0, 0))
    except (KeyError, ValueError):
        return None


def parse_range(value, size):
    """One `bytes=` range as uWSGI's parser reads it (text after a comma is
    ignored). Returns None (serve 200), (start, end) inclusive, or "invalid"."""
    value = value.split(",", 1)[0].strip()
    if not value.startswith("bytes="):
        return None
    spec = value[6:]
    first, dash, last = spec.partition("-")
    if not dash:
        return None
    try:
        if first:
            start = int(first)
            end = int(last) if last else 1 << 62
            if end < start:
                return None
        else:
            n = int(last)
            if n <= 0:
                return None
            start = max(0, size - n)
            end = size - 1
    except ValueError:
        return None
    end = min(end, size - 1)
    if start == 0 and end == size - 1:
        return None
    if start > end:
        return "invalid"
    return (start, end)


def _under(path, root):
    return path == root or path.startswith(root if root.endswith("/") else root + "/")


class StaticFiles(object):
    def __init__(self, cfg):
        self.maps = []
        for m in cfg.get("static_maps") or []:
            self.maps.append((m["prefix"], m["docroot"], bool(m.get("append"))))
        self.checks = list(cfg.get("check_static") or [])
        self.check_docroot = bool(cfg.get("check_static_docroot"))
        self.index = list(cfg.get("static_index") or [])
        self.skip_ext = tuple(cfg.get("static_skip_ext") or ())
        self.safe = [os.path.realpath(p) for p in cfg.get("static_safe") or []]
        self.expires = []
        for e in cfg.get("static_expires") or []:
            pat = e["pattern"] if e["on"] == "type" else re.compile(e["pattern"])
            self.expires.append((e["on"], bool(e.get("mtime")), pat, int(e["seconds"])))
        self.gzip_all = bool(cfg.get("static_gzip_all"))
        self.gzip_dirs = tuple(cfg.get("static_gzip_dirs") or ())
        self.gzip_exts = tuple(cfg.get("static_gzip_exts") or ())
        self.gzip_res = [re.compile(r) for r in cfg.get("static_gzip_regexps") or []]
        self.gzip_any = bool(self.gzip_all or self.gzip_dirs or self.gzip_exts or self.gzip_res)
        # Docroots are resolved once, at first use (uWSGI: at the first request);
        # one that does not exist then is retried at most once a second.
        self._roots = {}
        self.mimes = mimetypes.MimeTypes()

    def _root(self, path):
        hit = self._roots.get(path)
        now = time.monotonic()
        if hit is not None and (hit[0] is not None or now - hit[2] < 1.0):
            return hit[0], hit[1]
        real = os.path.realpath(path)
        if os.path.exists(real):
            hit = (real, os.path.isfile(real), now)
        else:
            hit = (None, False, now)
        self._roots[path] = hit
        return hit[0], hit[1]

    def find(self, env):
        """The file to serve for this request as (path, stat, index), or None."""
        path_info = env.get("PATH_INFO", "")
        if self.skip_ext and path_info.endswith(self.skip_ext):
            return None
        if "\x00" in path_info:
            return None
        for d in self.checks:
            root, _ = self._root(d)
            if root is not None:
                hit = self._file(env, root, path_info, False)
                if hit is not None:
                    return hit
        for prefix, docroot, append in self.maps:
            if not path_info.startswith(prefix):
                continue
            root, is_file = self._root(docroot)
            if root is None:
                continue
            rest = path_info if append else path_info[len(prefix):]
            hit = self._file(env, root, rest, is_file)
            if hit is not None:
                return hit
        if self.check_docroot:
            doc = env.get("DOCUMENT_ROOT")
            if doc:
                root = os.path.realpath(doc)
                hit = self._file(env, root, path_info, False)
                if hit is not None:
                    return hit
        return None

    def one_file(self, env, path):
        """The `static:` route action's file, checked like a map whose docroot is it."""
        if "\x00" in path:
            return None
        return self._file(env, os.path.abspath(path), "", True)

    def _file(self, env, root, rest, is_file):
        name = root if is_file else root + "/" + rest
        try:
            real = os.path.realpath(name)
            st = os.stat(real)
        except (OSError, ValueError):
            return None
        if not self._allowed(real, root):
            return None
        index = None
        if stat.S_ISDIR(st.st_mode):
            for idx in self.index:
                try:
                    cand = os.path.realpath(real + "/" + idx)
                    cst = os.stat(cand)
                except (OSError, ValueError):
                    continue
                if stat.S_ISREG(cst.st_mode) and self._allowed(cand, root):
                    real, st, index = cand, cst, idx
                    break
            else:
                return None
        elif not stat.S_ISREG(st.st_mode):
            return None
        if env.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return None
        if self.skip_ext and real.endswith(self.skip_ext):
            return None
        return (real, st, index)

    def _allowed(self, real, root):
        if _under(real, root):
            return True
        for safe in self.safe:
            if _under(real, safe):
                return True
        return False

    def _want_gzip(self, env, real):
        enc = env.get("HTTP_ACCEPT_ENCODING", "")
        can_br = "br" in enc
        can_gz = "gzip" in enc
        if not (can_br or can_gz):
            return None
        if not (
            self.gzip_all
            or (self.gzip_dirs and real.startswith(self.gzip_dirs))
            or (self.gzip_exts and real.endswith(self.gzip_exts))
            or any(r.search(real) for r in self.gzip_res)
        ):
            return None
        for ok, suffix, coding in ((can_br, ".br", "br"), (can_gz, ".gz", "gzip")):
            if ok:
                try:
                    st = os.stat(real + suffix)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    return real + suffix, st, coding
        return None

    def serve(self, env, hit, start_response):
        real, st, index = hit
        if index is not None:
            pi = env.get("PATH_INFO", "")
            env["PATH_INFO"] = pi + ("" if pi.endswith("/") else "/") + index
        mime = self.mimes.guess_type(real, strict=False)[0]
        headers = []
        coding = None
        body_path = real
        if self.gzip_any:
            headers.append(("Vary", "Accept-Encoding"))
            gz = self._want_gzip(env, real)
            if gz is not None:
                body_path, st, coding = gz
        ims = env.get("HTTP_IF_MODIFIED_SINCE")
        if ims:
            t = parse_http_date(ims)
            if t is not None and int(st.st_mtime) <= t:
                start_response("304 Not Modified", headers)
                return []
        size = st.st_size
        rng = None
        if "HTTP_RANGE" in env:
            rng = parse_range(env["HTTP_RANGE"], size)
            if rng is not None and rng != "invalid" and "HTTP_IF_RANGE" in env:
                when = parse_http_date(env["HTTP_IF_RANGE"]) or 0
                if when < int(st.st_mtime):
                    pass
                else:
                    rng = None
        if rng == "invalid":
            start_response("416 Requested Range Not Satisfiable", headers + [("Content-Range", "bytes */%d" % size), ("Content-Length", "0")])
            return []
        now = time.time()
        for on, from_mtime, pat, secs in self.expires:
            if on == "type":
                hit_rule = mime is not None and mime == pat
            elif on == "file":
                hit_rule = pat.search(real) is not None
            elif on == "uri":
                hit_rule = pat.search(env.get("REQUEST_URI", "")) is not None
            else:
                hit_rule = pat.search(env.get("PATH_INFO", "")) is not None
            if hit_rule:
                headers.append(("Expires", http_date((st.st_mtime if from_mtime else now) + secs)))
                break
        if coding is not None:
            headers.append(("Content-Encoding", coding))
        if mime:
            headers.append(("Content-Type", mime))
        if rng is None:
            start, length, status = 0, size, "200 OK"
        else:
            start, length, status = rng[0], rng[1] - rng[0] + 1, "206 Partial Content"
        headers.append(("Content-Length", str(length)))
        if rng is not None:
            headers.append(("Content-Range", "bytes %d-%d/%d" % (rng[0], rng[1], size)))
        headers.append(("Last-Modified", http_date(st.st_mtime)))
        if env.get("REQUEST_METHOD") == "HEAD" or length == 0:
            start_response(status, headers)
            return []
        try:
            f = open(body_path, "rb")
        except OSError:
            start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
            return [b"Not Found\n"]
        if start:
            f.seek(start)
        start_response(status, headers)
        wrapper = FileWrapper(f)
        wrapper.length = length
        return wrapper
