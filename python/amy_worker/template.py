"""The app template (preload, uWSGI's default): one process per generation
imports the app once, then forks the workers when the master asks, so they
share the imported code and data copy-on-write and a respawn costs a fork, not
an import.

Protocol on FD_CONTROL, a SOCK_SEQPACKET socketpair with the master (one
message per datagram): template → master `ready` once the app is imported (or
`failed <json traceback>` and exit 3, as a worker); master → template
`fork <id>` with SCM_RIGHTS [control pipe write end, scoreboard memfd];
template → master `forked <id> <pid>` or `forkfailed <id> <json reason>`.
EOF on the socket (the master dropped the generation) or on FD_MASTER_ALIVE
ends the template.

Each worker is a double fork: the intermediate child forks the worker, puts it
in its own process group and exits; the template reaps it. The master is a
child subreaper, so the worker is re-parented to it before `forked` is sent:
the master reaps it, gets its exit status and signals it race-free, and the
template's death never touches the workers. The template runs no thread of
its own and serves no request."""

import array
import fcntl
import gc
import json
import os
import select
import signal
import socket
import sys
import traceback

from .contract import EXIT_CONTRACT, FD_CONTROL, FD_MASTER_ALIVE, FD_SCOREBOARD
from .proctitle import set_worker_title


def run_template(cfg, app, listeners, start_worker):
    """Serve fork requests until the master lets go. `start_worker(cfg, app,
    listeners)` runs in each forked worker and never returns."""
    # SIGINT (fast stop) and SIGTERM end the template at once: nothing to finish.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Objects made by the import go to the permanent generation: the collector
    # of a worker then never writes to their pages (their refcounts still can).
    if os.environ.get("AMY_PRELOAD_GC_FREEZE", "1") != "0" and hasattr(gc, "freeze"):
        gc.collect()
        gc.freeze()
    sock = socket.socket(fileno=FD_CONTROL)
    sock.send(b"ready")
    poller = select.poll()
    poller.register(FD_CONTROL, select.POLLIN)
    poller.register(FD_MASTER_ALIVE, select.POLLIN)
    fd_size = array.array("i").itemsize
    while True:
        events = dict(poller.poll())
        if FD_MASTER_ALIVE in events and not os.read(FD_MASTER_ALIVE, 64):
            os._exit(0)
        if FD_CONTROL not in events:
            continue
        try:
            msg, anc, _flags, _addr = sock.recvmsg(256, socket.CMSG_SPACE(2 * fd_size))
        except InterruptedError:
            continue
        if not msg:
            os._exit(0)
        fds = array.array("i")
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - (len(data) % fd_size)])
        words = msg.decode("ascii", "replace").split()
        if len(words) != 2 or words[0] != "fork" or len(fds) != 2:
            for fd in fds:
                os.close(fd)
            sock.send(("forkfailed ? %s" % json.dumps("bad request %r" % msg[:64])).encode())
            continue
        worker_id = words[1]
        try:
            pid = _fork_worker(sock, cfg, app, listeners, int(worker_id), fds[0], fds[1], start_worker)
            reply = "forked %s %d" % (worker_id, pid)
        except Exception as e:
            reply = "forkfailed %s %s" % (worker_id, json.dumps(str(e)))
        finally:
            for fd in fds:
                os.close(fd)
        sock.send(reply.encode())


def _fork_and_wait():
    """(fork, waitpid) for the double fork. Under gevent's monkey-patching,
    os.fork is fork_and_watch: a libev child watcher that misses the exit of
    a middle child which dies before the watcher's SIGCHLD handler is in place,
    and the patched os.waitpid then waits on the hub forever (seen: the worker
    forked, the middle a zombie, the template in epoll_wait). So: gevent's
    fork_gevent (the child still gets gevent.reinit()) and the real waitpid."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("os"):
        gevent_os = sys.modules.get("gevent.os")
        fork = getattr(gevent_os, "fork_gevent", None) or monkey.get_original("os", "fork")
        return fork, monkey.get_original("os", "waitpid")
    return os.fork, os.waitpid


def _fork_worker(sock, cfg, app, listeners, worker_id, control, scoreboard, start_worker):
    fork, waitpid = _fork_and_wait()
    r, w = os.pipe()
    middle = fork()
    if middle == 0:
        try:
            os.close(r)
            pid = fork()
            if pid == 0:
                os.close(w)
                _become_worker(sock, cfg, app, listeners, worker_id, control, scoreboard, start_worker)
            # Both sides set the group (the classic shell race): it is in place
            # before the master can signal the pid.
            try:
                os.setpgid(pid, 0)
            except OSError:
                pass
            os.write(w, str(pid).encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        data = os.read(r, 32)
    finally:
        os.close(r)
        waitpid(middle, 0)
    if not data:
        raise OSError("the intermediate process died before the worker was forked")
    return int(data)


def _become_worker(sock, cfg, app, listeners, worker_id, control, scoreboard, start_worker):
    """In the forked worker; never returns."""
    code = EXIT_CONTRACT
    try:
        try:
            os.setpgid(0, 0)
        except OSError:
            pass
        # The template's end of the master socket is not the worker's: drop the
        # object without closing (dup2 below replaces the fd).
        sock.detach()
        # The received fds may sit on the very numbers they go to (the
        # template has no fd 5): copy both above the contract's range first.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 64) for fd in (control, scoreboard)]
        os.close(control)
        os.close(scoreboard)
        os.dup2(high[0], FD_CONTROL)
        os.dup2(high[1], FD_SCOREBOARD)
        os.close(high[0])
        os.close(high[1])
        signal.signal(signal.SIGINT, signal.default_int_handler)
        cfg = dict(cfg, id=worker_id, template=False)
        set_worker_title(worker_id, cfg.get("generation", "?"))
        # uWSGI's post-fork point: the worker's own id, then `@postfork`s.
        import uwsgi

        uwsgi._configure(cfg)
        uwsgi._after_fork()
        start_worker(cfg, app, listeners)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else EXIT_CONTRACT
    except BaseException:
        try:
            os.write(2, ("amy-worker[%d]: forked worker failed:\n%s" % (os.getpid(), traceback.format_exc())).encode("utf-8", "replace"))
        except OSError:
            pass
    os._exit(code)

