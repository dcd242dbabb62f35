"""Per-request log variables: `uwsgi.set_logvar(name, value)` stores one for
the request the calling thread is serving, `%(var.NAME)` in `log-format`
reads it back when the request line is written.

Kept in a thread-local so serving threads never see each other's variables;
the request log takes them (`take`) once per request, which also clears them,
so a variable never leaks into the next request on that thread. A request
that sets none costs one attribute lookup.
"""

import threading

_local = threading.local()


def set_var(name, value):
    d = getattr(_local, "vars", None)
    if d is None:
        d = _local.vars = {}
    d[str(name)] = str(value)


def get_var(name):
    d = getattr(_local, "vars", None)
    if d is None:
        return None
    return d.get(str(name))


def take():
    """The variables set during this request (an empty dict if none); clears them."""
    d = getattr(_local, "vars", None)
    if d is None:
        return {}
    _local.vars = None
    return d
