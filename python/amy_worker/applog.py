"""The worker's own log lines (the request log line is built in wsgi.run_app,
on the hot path)."""

import os


def log(msg):
    """One line to the log pipe, in a single write so lines never interleave."""
    try:
        os.write(2, ("amy-worker[%d]: %s\n" % (os.getpid(), msg)).encode("utf-8", "replace"))
    except OSError:
        pass
