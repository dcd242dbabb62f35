"""uWSGI's `uwsgidecorators`, for the decorators apps use, over our `uwsgi`
module (uwsgi_api.py). Served by the bootstrap under the top-level name
`uwsgidecorators`, ahead of the copy a pip-installed uWSGI puts in the venv.

- `@postfork` / `@postfork(N)`: run in every worker (or worker N) the app
  template forks, before it accepts. In lazy-apps mode they never run, as
  under uWSGI: the app is imported after the fork.
- `@timer(secs, signum=..., target=...)`: `uwsgi.register_signal` +
  `uwsgi.add_timer` (see uwsgi_api.py for where the handler runs).
- `@signal(num, target=...)`: registers the handler (only timers raise
  signals here).
- `@thread`: runs the function in a daemon thread per call.
- `@lock`: each call holds `uwsgi.lock()`.
Every other decorator of uWSGI's module (spooler, mules, farms, rpc,
harakiri, cron, filemon, rbtimer, mstimer, erlang) raises NotImplementedError
naming itself where it is applied, so an app never silently loses a job.
"""

import threading

import uwsgi

postfork_chain = []


def _postfork_chain_hook():
    for hook in postfork_chain:
        hook()


uwsgi.post_fork_hook = _postfork_chain_hook


def get_free_signal():
    for signum in range(256):
        if not uwsgi.signal_registered(signum):
            return signum
    raise Exception("No free uwsgi signal available")


class postfork(object):
    """`@postfork` runs the function in every forked worker; `@postfork(N)`
    only in worker N."""

    def __init__(self, f):
        if callable(f):
            self.wid = 0
            self.f = f
        else:
            self.wid = int(f)
            self.f = None
        postfork_chain.append(self)

    def __call__(self, *args, **kwargs):
        if self.f is None:
            # `@postfork(N)` applied to the function: remember it.
            self.f = args[0]
            return self
        if self.wid > 0 and self.wid != uwsgi.worker_id():
            return None
        return self.f()


class signal(object):
    def __init__(self, num, **kwargs):
        self.num = num
        self.target = kwargs.get("target", "")

    def __call__(self, f):
        uwsgi.register_signal(self.num, self.target, f)
        return f


class timer(object):
    """`@timer(secs)`: `f(signum)` every `secs` seconds."""

    def __init__(self, secs, **kwargs):
        self.num = kwargs["signum"] if "signum" in kwargs else get_free_signal()
        self.secs = secs
        self.target = kwargs.get("target", "")

    def __call__(self, f):
        uwsgi.register_signal(self.num, self.target, f)
        uwsgi.add_timer(self.num, self.secs)
        return f


class lock(object):
    """`@lock`: each call holds uWSGI's lock 0 (one caller in the instance at a time)."""

    def __init__(self, f):
        self.f = f

    def __call__(self, *args, **kwargs):
        uwsgi.lock()
        try:
            return self.f(*args, **kwargs)
        finally:
            uwsgi.unlock()


class thread(object):
    """Each call runs the function in a new daemon thread (returns the function)."""

    def __init__(self, f):
        self.f = f

    def __call__(self, *args):
        t = threading.Thread(target=self.f, args=args)
        t.daemon = True
        t.start()
        return self.f


def _unsupported(name, why):
    def refuse(*args, **kwargs):
        raise NotImplementedError("uwsgidecorators.%s is not supported by amy-emperor: %s" % (name, why))

    refuse.__name__ = refuse.__qualname__ = name
    return refuse


spool = _unsupported("spool", "there is no spooler")
spoolforever = _unsupported("spoolforever", "there is no spooler")
spoolraw = _unsupported("spoolraw", "there is no spooler")
mulefunc = _unsupported("mulefunc", "there are no mules")
mule = _unsupported("mule", "there are no mules")
muleloop = _unsupported("muleloop", "there are no mules")
mulemsg = _unsupported("mulemsg", "there are no mules")
farm = _unsupported("farm", "there are no mule farms")
rpc = _unsupported("rpc", "there is no uWSGI RPC")
erlang = _unsupported("erlang", "there is no Erlang bridge")
harakiri = _unsupported("harakiri", "a per-call harakiri (set_user_harakiri) is not carried out")
cron = _unsupported("cron", "signal crons are not raised (use the ini's cron2 with a command)")
rbtimer = _unsupported("rbtimer", "red-black timers are not raised (use @timer)")
mstimer = _unsupported("mstimer", "millisecond timers are not raised (use @timer)")
filemon = _unsupported("filemon", "file monitors are not raised")
