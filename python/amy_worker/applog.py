"""The worker's own log lines (uWSGI's uwsgi_log), with `log-date`'s prefix when
set; the request log line is reqlog.py's, and the app's own output is never
prefixed (as in uWSGI)."""

import os
import time

# None: no prefix; "": uWSGI's ctime form; else a strftime format.
_date = None


def configure(logging):
    """The worker JSON's `logging` object (config/logging.rs RequestLog)."""
    global _date
    _date = ((logging.get("strftime") or "") if logging.get("date") else None)


def prefix():
    """`log-date`'s prefix for a line written now, "" without it."""
    if _date is None:
        return ""
    now = time.time()
    if not _date:
        return time.ctime(now) + " - "
    return time.strftime(_date, time.localtime(now)) + " - "


def log(msg):
    """One line to the log pipe, in a single write so lines never interleave."""
    try:
        os.write(2, ("%samy-worker[%d]: %s\n" % (prefix(), os.getpid(), msg)).encode("utf-8", "replace"))
    except OSError:
        pass
