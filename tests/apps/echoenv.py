"""Echoes what routing, mounts and buffering did: one `KEY=value` line per var.

`application`, `app_a` and `app_b` differ only in their `APP=` line, so a
test can tell which mount served a request."""
import json


def _make(name):
    def app(environ, start_response):
        inp = environ["wsgi.input"]
        body = inp.read()
        lines = ["APP=" + name]
        for k in ("SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "REMOTE_USER", "REQUEST_URI"):
            lines.append("%s=%s" % (k, environ.get(k, "<unset>")))
        lines.append("BODY_LEN=%d" % len(body))
        lines.append("BUFFERED=%s" % (type(inp).__name__ == "Buffered"))
        out = ("\n".join(lines) + "\n").encode("latin-1")
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
        return [out]

    return app


application = _make("main")
app_a = _make("a")
app_b = _make("b")


def env_json(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({k: v for k, v in environ.items() if isinstance(v, str)}).encode()]


def timed(environ, start_response):
    """When the app was called, and what wsgi.input held (post-buffering tests)."""
    import time

    called = time.time()
    inp = environ["wsgi.input"]
    body = inp.read()
    out = ("CALLED=%.6f\nBODY_LEN=%d\nINPUT=%s\nFILE=%s\n" % (
        called, len(body), type(inp).__name__,
        type(getattr(inp, "f", None)).__name__)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]
