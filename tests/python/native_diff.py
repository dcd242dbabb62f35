"""The native uwsgi-vars parser against the stdlib one on one block, for the
fuzzer (fuzz_parsers.py) and scripts/native-check.py. Stdlib only: it runs under
any interpreter the worker supports."""

from amy_worker import protocol
from amy_worker.errors import BadRequest
from amy_worker.limits import MAX_VARS

# What protocol.py hands the native parser: the listener's wsgi.* entries (one
# dict per listener, so its shape cache sees the same dict request after request).
BASE = {"wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.run_once": False, "wsgi.multithread": False}


def stdlib(data, end):
    """(environ, pairs) of the stdlib parser for data[:end], None if it refuses it."""
    try:
        return protocol._parse_vars(data, data.decode("latin-1"), end)
    except BadRequest:
        return None


def disagreement(native, data, end, parsed):
    """Why the native parser's answer for data[:end] differs from the stdlib
    parser's `parsed` (see `stdlib`); "" when they agree. The native parser must
    answer every block the stdlib parser takes without repeated keys (more pairs
    than environ entries), with the same environ updated with BASE, and hand
    back (None) every other block."""
    got = native(bytearray(data), end, MAX_VARS, BASE)
    if parsed is None:
        return "" if got is None else "native parser accepted a block the stdlib parser refuses"
    env, pairs = parsed
    clean = pairs == len(env)
    if got is None:
        return "native parser handed back a clean block" if clean else ""
    if not clean:
        return "native parser accepted repeated keys"
    if got != (dict(env, **BASE), pairs):
        return "native environ differs from the stdlib one"
    return ""
