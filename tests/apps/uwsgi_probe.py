"""Reports what `import uwsgi` and `uwsgidecorators` show, run under
amy-emperor and under real uWSGI by tests/uwsgi_module.rs.

`PROBE_DIR` (from the env file) receives one line per `@postfork` run
(`postfork <pid> <wid>`, `postfork2 <pid> <wid>` for `@postfork(2)`) and per
`@timer(1)` tick (`timer <pid> <wid> <signum>`)."""

import json
import os
import subprocess
import sys

import uwsgi

AT_IMPORT = {
    "pid": os.getpid(),
    "wid": uwsgi.worker_id(),
    "masterpid": uwsgi.masterpid(),
    "in_sys_modules": "uwsgi" in sys.modules,
}

from uwsgidecorators import postfork, timer  # noqa: E402

PROBE_DIR = os.environ.get("PROBE_DIR", "/nonexistent")


def _note(line):
    with open(os.path.join(PROBE_DIR, "events"), "a") as f:
        f.write(line + "\n")


@postfork
def _each_worker():
    _note("postfork %d %d" % (os.getpid(), uwsgi.worker_id()))


@postfork(2)
def _worker_two():
    _note("postfork2 %d %d" % (os.getpid(), uwsgi.worker_id()))


if os.environ.get("PROBE_TIMER"):

    @timer(1)
    def _tick(signum):
        _note("timer %d %d %d" % (os.getpid(), uwsgi.worker_id(), signum))


def _shown(value):
    """A JSON-able view that keeps the type: bytes as {"b": text}."""
    if isinstance(value, bytes):
        return {"b": value.decode("utf-8", "replace")}
    if isinstance(value, (list, tuple)):
        return [_shown(v) for v in value]
    if value is True or value is False or value is None or isinstance(value, (int, str)):
        return value
    return {"repr": repr(value)}


def info():
    set_result = uwsgi.set_logvar("probe", "v1")
    try:
        uwsgi.cache_get("x")
        unsupported = "no error"
    except NotImplementedError as e:
        unsupported = "NotImplementedError: %s" % e
    except Exception as e:
        unsupported = "%s: %s" % (type(e).__name__, e)
    import uwsgidecorators

    return {
        "at_import": AT_IMPORT,
        "pid": os.getpid(),
        "wid": uwsgi.worker_id(),
        "masterpid": uwsgi.masterpid(),
        "numproc": uwsgi.numproc,
        "mule_id": uwsgi.mule_id(),
        "opt": {k: _shown(v) for k, v in uwsgi.opt.items()},
        "version": _shown(uwsgi.version),
        "hostname": _shown(uwsgi.hostname),
        "started_on": _shown(uwsgi.started_on),
        "request_id": uwsgi.request_id(),
        "logvar": _shown([set_result, uwsgi.get_logvar("probe"), uwsgi.get_logvar("unset")]),
        "log": uwsgi.log("probe log line from worker %d" % uwsgi.worker_id()),
        "has_cache_get": hasattr(uwsgi, "cache_get"),
        "has_magic_table": hasattr(uwsgi, "magic_table"),
        "unsupported": unsupported,
        "spool": [uwsgi.SPOOL_OK, uwsgi.SPOOL_RETRY, uwsgi.SPOOL_IGNORE],
        "decorators_ours": hasattr(uwsgidecorators, "_postfork_chain_hook"),
        "child_import": subprocess.run(
            [sys.executable, "-c", "import uwsgi"], stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        ).returncode,
    }


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/reload":
        body = json.dumps({"reload": uwsgi.reload()})
    elif path == "/locked":
        import threading
        import time

        with_lock = uwsgi.lock
        with_lock()
        try:
            assert uwsgi.is_locked()
            _note("enter %d %d" % (os.getpid(), threading.get_ident()))
            time.sleep(0.2)
            _note("exit %d %d" % (os.getpid(), threading.get_ident()))
        finally:
            uwsgi.unlock()
        body = json.dumps({"pid": os.getpid()})
    elif path == "/procname":
        uwsgi.setprocname("probe-renamed-%d" % uwsgi.worker_id())
        body = json.dumps({"pid": os.getpid()})
    else:
        body = json.dumps(info())
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]
