"""Per-request log variables: `uwsgi.set_logvar(name, value)` stores one for
the request the calling thread is serving, `%(NAME)` in `log-format` reads
it back when the request line is written (as in uWSGI's core/logging.c, an
unknown `%(NAME)` is a logvar; `%(var.NAME)` is the request variable NAME).

Kept in a thread-local so serving threads never see each other's variables;
the request log takes them (`take`) once per request, which also clears them,
so a variable never leaks into the next request on that thread. A request
that sets none costs one attribute lookup.
"""

import threading



class _Local(threading.local):
    # A class default, so a request that set nothing costs a plain attribute
    # read (getattr with a default on a missing attribute raises inside: ~5000
    # instructions per request on the hot path).
    vars = None


_local = _Local()
# True once any thread set a variable: until then `take` (once per request)
# is one global read, so an app that never calls set_logvar pays nothing.
_used = False


def set_var(name, value):
    global _used
    _used = True
    d = _local.vars
    if d is None:
        d = _local.vars = {}
    d[str(name)] = str(value)


def get_var(name):
    d = _local.vars
    if d is None:
        return None
    return d.get(str(name))


def take():
    """The variables set during this request (an empty dict if none); clears them."""
    if not _used:
        return {}
    d = _local.vars
    if d is None:
        return {}
    _local.vars = None
    return d


# The route action `donotlog` marks its request with this variable (a name no
# ini or app can write: set_logvar names are text without NUL); the request
# log then writes no line for it, whatever log-slow/log-4xx… say (uWSGI's
# do_not_log wins over every condition too).
DONOTLOG = "\x00donotlog"


def donotlog():
    set_var(DONOTLOG, "1")
