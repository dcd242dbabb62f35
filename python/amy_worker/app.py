"""Loading the app as uWSGI does: chdir and pythonpath, then module, wsgi-file, callable."""

import os
import re
import sys


def load_app(cfg):
    """The callable the worker serves: the app (module, wsgi-file), its
    mounts, and what the serving keys put around it (dispatch.py)."""
    from .dispatch import apply_socket_timeout, build

    apply_socket_timeout(cfg)
    main = None
    if cfg.get("module") or cfg.get("wsgi_file") or not (cfg.get("serving") or {}).get("mounts"):
        main = _load(cfg.get("module"), cfg.get("wsgi_file"), cfg.get("callable"))
    return build(cfg, main, load_mount)


def load_mount(target):
    """A `mount` app as uWSGI's mount loader takes it: a .py/.wsgi file
    (callable `application`) or `module:callable`."""
    if target.endswith((".py", ".wsgi")):
        return _load(None, target, None)
    return _load(target, None, None)


def _load(module, wsgi_file, callable_name):
    """Import the app like uWSGI: module `pkg.mod`, `pkg.mod:name`,
    `pkg.mod:factory()`, or exec `wsgi_file`; `callable` defaults to application."""
    import importlib

    name = callable_name or "application"
    if module:
        modname, colon, attr = module.partition(":")
        mod = importlib.import_module(modname)
        if colon and attr:
            name = attr
    elif wsgi_file:
        import importlib.machinery
        import importlib.util

        path = os.path.abspath(wsgi_file)
        modname = "uwsgi_file_" + re.sub(r"[^A-Za-z0-9_]", "_", path)
        # An explicit loader: wsgi files are often named *.wsgi, not *.py.
        loader = importlib.machinery.SourceFileLoader(modname, path)
        spec = importlib.util.spec_from_file_location(modname, path, loader=loader)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod
        spec.loader.exec_module(mod)
    else:
        raise ImportError("neither module nor wsgi_file is configured")
    call = name.endswith("()")
    if call:
        name = name[:-2]
    app = getattr(mod, name, None)
    if app is None:
        raise ImportError("%s has no callable %r" % (mod.__name__, name))
    if call:
        app = app()
    if not callable(app):
        raise ImportError("%s.%s is not callable" % (mod.__name__, name))
    return app


def _set_sys_path(cfg):
    import glob

    entries = []
    for entry in cfg.get("pythonpath") or []:
        matches = sorted(glob.glob(entry))
        entries.extend(matches if matches else [entry])
    cwd = os.getcwd()
    # `python -c` put "" (the cwd at exec time) first; the app sees the chdir instead.
    rest = [p for p in sys.path if p not in ("", cwd) and p not in entries]
    sys.path[:] = entries + [cwd] + rest
