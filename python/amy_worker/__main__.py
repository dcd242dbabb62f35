"""Start-up: check the contract, chdir, import the app, then serve (a lazy
worker) or become the generation's app template that forks the workers (preload)."""

import json
import os
import sys
import traceback

# uWSGI's Python API, served by the bootstrap as the top-level `uwsgi`
# (uwsgi_api.py): one module object, shared with the app.
import uwsgi

from . import hooks
from .app import _set_sys_path, load_app
from .contract import (
    ENV_CONFIG,
    EXIT_APP_LOAD_FAILED,
    EXIT_CHECK_FAILED,
    EXIT_OK,
    FD_CONTROL,
    FD_MASTER_ALIVE,
    FD_SCOREBOARD,
    MSG_FAILED,
)
from .proctitle import set_template_title, set_worker_title
from .server import Listener, _contract_error, _exit, run
from .state import Worker


def _tell_failed(what, text):
    """`failed <json>` to the master (it logs it once per generation); stderr
    only if the master cannot be told."""
    try:
        os.write(FD_CONTROL, MSG_FAILED + b" " + json.dumps(text).encode("ascii") + b"\n")
    except OSError:
        os.write(2, ("amy-worker[%d]: %s:\n%s" % (os.getpid(), what, text)).encode("utf-8", "replace"))


def start_worker(cfg, app, listeners):
    """The app is loaded (here or in the template): check it if asked, serve."""
    try:
        # In every worker, also one a template forked (uWSGI: hook-accepting).
        hooks.run(cfg, "accepting")
    except BaseException:
        _tell_failed("accepting hook failed", traceback.format_exc())
        _exit(EXIT_APP_LOAD_FAILED)
    worker = Worker(cfg, app)
    uwsgi._bind_worker(worker)
    if cfg.get("reload_check"):
        from .check import CheckFailed, run_checks

        try:
            run_checks(worker, listeners, cfg)
        except CheckFailed as e:
            _tell_failed("reload check failed", str(e))
            _exit(EXIT_CHECK_FAILED)
        # The check counts as a request, but must not recycle the worker before
        # it served anyone (max-requests = 1 would loop forever).
        worker.stopping = False
        worker.exit_code = EXIT_OK
    uwsgi._start_timers()
    run(worker, listeners)


def main():
    raw = os.environ.pop(ENV_CONFIG, None)
    if raw is None:
        _contract_error("%s is not set" % ENV_CONFIG)
    try:
        cfg = json.loads(raw)
        listeners_spec = cfg["listeners"]
        if not listeners_spec:
            raise ValueError("no listeners")
    except (ValueError, KeyError, TypeError) as e:
        _contract_error("bad %s: %s" % (ENV_CONFIG, e))
    template = bool(cfg.get("template"))
    # uWSGI's module exists before anything of the app runs (hooks, imports).
    uwsgi._configure(cfg)
    # Before the app import, so a process stuck importing is already named.
    if template:
        set_template_title(cfg.get("generation", "?"))
    else:
        set_worker_title(cfg.get("id", "?"), cfg.get("generation", "?"))
    # The template has no scoreboard: each worker gets its own with the fork request.
    for fd in (FD_CONTROL, FD_MASTER_ALIVE) if template else (FD_CONTROL, FD_MASTER_ALIVE, FD_SCOREBOARD):
        try:
            os.fstat(fd)
        except OSError:
            _contract_error("fd %d is not open" % fd)
    try:
        listeners = [Listener(spec, i) for i, spec in enumerate(listeners_spec)]
    except (OSError, ValueError, KeyError, TypeError) as e:
        _contract_error("bad listener: %s" % e)
    try:
        sys.stdout.reconfigure(line_buffering=True)
    except Exception:
        pass
    if cfg.get("chdir"):
        try:
            os.chdir(cfg["chdir"])
        except OSError as e:
            os.write(2, ("amy-worker: chdir %s: %s\n" % (cfg["chdir"], e.strerror)).encode())
            os._exit(EXIT_APP_LOAD_FAILED)
    _set_sys_path(cfg)
    try:
        # gevent's monkey-patching, before anything of the app is imported
        # (the module only when gevent is on: it is not needed otherwise).
        if (cfg.get("serving") or {}).get("gevent"):
            from .gevent_loop import patch_before_app

            patch_before_app(cfg)
        hooks.run(cfg, "pre_app")
        hooks.import_modules(cfg)
        app = load_app(cfg)
        hooks.run(cfg, "post_app")
    except BaseException:
        _tell_failed("failed to load the app", traceback.format_exc())
        _exit(EXIT_APP_LOAD_FAILED)
    if template:
        from .template import run_template

        run_template(cfg, app, listeners, start_worker)
    else:
        start_worker(cfg, app, listeners)


main()
