"""What sits between the parsed request and the app when the ini asks for it:
post-buffering, mounts, routes, static files (the `"serving"` object of the
worker config, src/config/serving.rs).

`build` returns the app itself when none of them is configured, so a site
without `static-map`/`mount`/`route`/`post-buffering` runs exactly the plain
app call (`run_app` in wsgi.py calls `worker.app`). Otherwise it returns a
`Site`, a WSGI callable `run_app` calls in the app's place; its responses go
through the same start_response, head building, sendfile and request log.

Order, as uWSGI 2.0: the body is buffered (post-buffering), SCRIPT_NAME and
PATH_INFO are fixed (manage-script-name), the static file is looked up; if one
is found, the routes run and then the file is sent; if not, the routes run and
then the app chosen by SCRIPT_NAME is called.

`add-header` does not need the Site: its headers are part of every response
head (Request.extra, wsgi.py), and `socket-timeout` sets the I/O deadlines.
"""

import socket
import struct

from .applog import log
from .errors import BadRequest


def apply_socket_timeout(cfg):
    """`socket-timeout`: the deadline of every read and write on a client
    socket (uWSGI: 4 s by default; ours stays 10 s when unset)."""
    t = (cfg.get("serving") or {}).get("socket_timeout")
    if not t:
        return
    t = float(t)
    from . import http, limits, protocol, server, wsgi

    limits.HEADER_TIMEOUT = limits.BODY_TIMEOUT = limits.SEND_TIMEOUT = t
    http.HEADER_TIMEOUT = protocol.HEADER_TIMEOUT = server.HEADER_TIMEOUT = t
    wsgi.BODY_TIMEOUT = t
    for spec in cfg.get("listeners") or []:
        s = socket.socket(fileno=int(spec["fd"]))
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(t), 0))
        except OSError:
            pass
        finally:
            s.detach()


def extra_headers(cfg):
    """The `add-header` lines, ready to go into every response head."""
    lines = []
    for name, value in (cfg.get("serving") or {}).get("add_headers") or []:
        lines.append("%s: %s\r\n" % (name, value))
    return "".join(lines)


def build(cfg, main_app, load_mount):
    """The callable the worker serves: `main_app` (may be None when only
    mounts are configured) or a Site around it."""
    s = cfg.get("serving") or {}
    mounts = s.get("mounts") or []
    apps = []
    if main_app is not None:
        apps.append(("", main_app))
    for m in mounts:
        apps.append((m["mountpoint"], load_mount(m["app"])))
    if not apps:
        raise ImportError("neither module, wsgi_file nor mount is configured")
    static = None
    routes = s.get("routes") or []
    if (
        s.get("static_maps")
        or s.get("check_static")
        or s.get("check_static_docroot")
        or any(r.get("action") == "static" for r in routes)
    ):
        from .static import StaticFiles

        static = StaticFiles(s)
    router = None
    if s.get("routes"):
        from .routes import Router

        router = Router(s["routes"])
    selector = None
    if mounts:
        from .mounts import Mounts

        selector = Mounts(apps, bool(s.get("manage_script_name")))
    buffering = int(s.get("post_buffering") or 0)
    if static is None and router is None and selector is None and not buffering:
        return apps[0][1]
    return Site(apps[0][1], selector, static, router, buffering)


class Site(object):
    def __init__(self, app, selector, static, router, buffering):
        self.app = app
        self.selector = selector
        self.static = static
        self.router = router
        self.buffering = buffering
        if buffering:
            from .buffering import buffer_body

            self.buffer_body = buffer_body

    def __call__(self, env, start_response):
        if self.buffering:
            try:
                self.buffer_body(env, self.buffering)
            except (OSError, BadRequest) as e:
                log("post-buffering: %s" % e)
                code = getattr(e, "code", 408)
                status = "408 Request Timeout" if code == 408 else "400 Bad Request"
                start_response(status, [("Content-Type", "text/plain"), ("Content-Length", "0"), ("Connection", "close")])
                return []
        app = self.app
        if self.selector is not None:
            app = self.selector.select(env)
        hit = None
        if self.static is not None:
            hit = self.static.find(env)
        if self.router is not None:
            added = []
            answer = self.router.apply(env, added)
            if answer is not None and len(answer) == 2:
                # `static:FILE`: that file (symlinks only into static-safe), or,
                # as uWSGI, no answer at all when it cannot be served.
                found = self.static.one_file(env, answer[1])
                if found is None:
                    from .errors import Abort

                    raise Abort()
                if added:
                    start_response = _adding(start_response, added)
                return self.static.serve(env, found, start_response)
            if answer is not None:
                status, headers, body = answer
                headers = headers + added
                if env.get("REQUEST_METHOD") == "HEAD":
                    body = b""
                if not any(k.lower() == "content-length" for k, _ in headers):
                    headers.append(("Content-Length", str(len(answer[2]))))
                start_response(status, headers)
                return [body]
            if added:
                start_response = _adding(start_response, added)
        if hit is not None:
            return self.static.serve(env, hit, start_response)
        return app(env, start_response)


def _adding(start_response, added):
    def sr(status, headers, exc_info=None):
        return start_response(status, list(headers) + added, exc_info)

    return sr
