"""An app for the request-log tests: chosen statuses and body sizes, a log
variable set per request (uwsgi.set_logvar under uWSGI, amy_worker.logvars
under amy-emperor), and a line of its own output."""
import sys
from urllib.parse import parse_qs

try:
    import uwsgi

    _set_logvar = uwsgi.set_logvar
except Exception:
    try:
        from amy_worker import logvars

        _set_logvar = logvars.set_var
    except Exception:
        _set_logvar = None


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    qs = parse_qs(environ.get("QUERY_STRING", ""))
    if "lv" in qs and _set_logvar is not None:
        _set_logvar("foo", qs["lv"][0])
    if path == "/print":
        sys.stdout.write("app says hello\n")
        sys.stdout.flush()
    if path.startswith("/nf"):
        status, body = "404 Not Found", b"nope"
    elif path == "/err":
        status, body = "500 Internal Server Error", b"broken"
    elif path == "/big":
        status, body = "200 OK", b"x" * 5000
    elif path == "/empty":
        status, body = "204 No Content", b""
    else:
        status, body = "200 OK", b"hello world"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
