"""`post-buffering = N`: the whole request body is read before the app is
called (uWSGI core/protocol.c, core/reader.c): in memory when shorter than N
bytes, in an unlinked temporary file otherwise. A slow upload then holds the
worker in a read loop with a deadline per read, never inside the app, and the
app reads `wsgi.input` from memory or disk at once."""

import io
import tempfile

from .errors import BadRequest


class Buffered(object):
    """wsgi.input over the buffered body; `unread()` is 0 (all of it was read)."""

    __slots__ = ("f", "read", "readline", "readlines", "__weakref__")

    def __init__(self, f):
        self.f = f
        self.read = f.read
        self.readline = f.readline
        self.readlines = f.readlines

    def __iter__(self):
        return iter(self.f)

    def unread(self):
        return 0


def buffer_body(env, limit):
    """Replace env['wsgi.input'] by the fully read body. The original Input
    stays accounted by run_app (its unread() is 0 afterwards)."""
    source = env["wsgi.input"]
    try:
        length = int(env.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length <= 0:
        return
    if length < limit:
        data = source.read(length)
        if len(data) < length:
            raise BadRequest(400, "client closed inside the request body")
        f = io.BytesIO(data)
    else:
        f = tempfile.TemporaryFile(prefix="amy-post-")
        left = length
        while left > 0:
            chunk = source.read(min(left, 1 << 16))
            if not chunk:
                f.close()
                raise BadRequest(400, "client closed inside the request body")
            f.write(chunk)
            left -= len(chunk)
        f.seek(0)
    env["wsgi.input"] = Buffered(f)
    env["amy.post_buffered"] = length
