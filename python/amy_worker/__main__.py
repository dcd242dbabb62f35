"""Start-up: check the contract, chdir, import the app, serve."""

import json
import os
import sys
import traceback

from . import hooks
from .app import _set_sys_path, load_app
from .contract import ENV_CONFIG, EXIT_APP_LOAD_FAILED, FD_CONTROL, FD_MASTER_ALIVE, FD_SCOREBOARD, MSG_FAILED
from .proctitle import set_worker_title
from .server import Listener, _contract_error, _exit, run
from .state import Worker


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
    # Before the app import, so a worker stuck importing is already named.
    set_worker_title(cfg.get("id", "?"), cfg.get("generation", "?"))
    for fd in (FD_CONTROL, FD_MASTER_ALIVE, FD_SCOREBOARD):
        try:
            os.fstat(fd)
        except OSError:
            _contract_error("fd %d is not open" % fd)
    try:
        listeners = [Listener(spec) for spec in listeners_spec]
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
        hooks.run(cfg, "pre_app")
        hooks.import_modules(cfg)
        app = load_app(cfg)
        hooks.run(cfg, "post_app")
        hooks.run(cfg, "accepting")
    except BaseException:
        # The master logs the traceback, once per generation however many
        # workers fail the same way; stderr only if the master cannot be told.
        tb = traceback.format_exc()
        try:
            os.write(FD_CONTROL, MSG_FAILED + b" " + json.dumps(tb).encode("ascii") + b"\n")
        except OSError:
            os.write(2, ("amy-worker[%d]: failed to load the app:\n%s" % (os.getpid(), tb)).encode("utf-8", "replace"))
        _exit(EXIT_APP_LOAD_FAILED)
    worker = Worker(cfg, app)
    run(worker, listeners)


main()
