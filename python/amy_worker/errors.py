"""Exceptions between the parsers, the app call and the server; canned error replies."""


def _reason(code):
    return {
        400: "Bad Request",
        408: "Request Timeout",
        411: "Length Required",
        413: "Content Too Large",
        414: "URI Too Long",
        431: "Request Header Fields Too Large",
        500: "Internal Server Error",
        501: "Not Implemented",
        504: "Gateway Timeout",
        505: "HTTP Version Not Supported",
    }.get(code, "Error")


def _error_response(code):
    reason = _reason(code)
    body = ("%d %s\n" % (code, reason)).encode("ascii")
    return (
        "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
        "Connection: close\r\n\r\n" % (code, reason, len(body))
    ).encode("ascii") + body


_ERRORS = {code: _error_response(code) for code in (400, 408, 411, 413, 414, 431, 500, 501, 504, 505)}


class ClientGone(Exception):
    """The peer went away while we wrote the response."""


class BadRequest(Exception):
    def __init__(self, code, why):
        Exception.__init__(self, why)
        self.code = code


class HeaderError(Exception):
    """The app gave a status or header we refuse to emit."""


class Abort(Exception):
    """A `break` route without a status: close the connection, send nothing (uWSGI)."""
