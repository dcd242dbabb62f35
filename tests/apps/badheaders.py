"""Apps that emit response headers a server must refuse (issue item 6)."""


CASES = {
    "/name-space": [("Bad Name", "x")],
    "/name-colon": [("X-A:", "x")],
    "/name-empty": [("", "x")],
    "/name-nonlatin": [("X-\u20ac", "x")],
    "/value-lf": [("X-A", "a\nb")],
    "/value-cr": [("X-A", "a\rb")],
    "/value-nul": [("X-A", "a\x00b")],
    "/value-nonlatin": [("X-A", "\u20ac")],
    "/value-bytes": [("X-A", b"x")],
    "/name-bytes": [(b"X-A", "x")],
}


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/ok-latin1":
        start_response("200 OK", [("X-A", "caf\xe9"), ("Content-Length", "2")])
        return [b"ok"]
    start_response("200 OK", CASES[path])
    return [b"should never be sent"]
