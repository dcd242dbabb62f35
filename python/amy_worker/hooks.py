"""Worker-side hooks and imports, as uWSGI runs them (core/hooks.c, the python
plugin's `import`): `pre app` before the app is imported, `post app` after,
`accepting` just before the worker accepts. The master validated every action;
this runs them in order. A failing hook raises HookFailed, which the start-up
reports like an import error, so the generation fails and the old one serves on.
"""

import os

from .applog import log


class HookFailed(Exception):
    pass


def _exec(cmd, fatal):
    import subprocess

    # uWSGI runs `/bin/sh -c`; output goes to the log pipe (our stdout/stderr).
    rc = subprocess.call(["/bin/sh", "-c", cmd], stdin=subprocess.DEVNULL)
    if rc != 0:
        if rc < 0:
            why = "command \"%s\" killed by signal %d" % (cmd, -rc)
        else:
            why = "command \"%s\" exited with non-zero code: %d" % (cmd, rc)
        if fatal:
            raise HookFailed(why)
        log(why + " (safeexec: carrying on)")


def run(cfg, phase):
    """Runs the hooks of `phase` ("pre_app", "post_app", "accepting")."""
    for h in (cfg.get("hooks") or {}).get(phase) or ():
        kind, arg = h["kind"], h["arg"]
        # putenv values may be secrets: log the name only.
        shown = ("putenv:" + arg.split("=", 1)[0] + "=***") if kind == "putenv" else h["text"]
        log('running "%s" (%s)...' % (shown, phase.replace("_", " ")))
        try:
            if kind == "exec":
                _exec(arg, h.get("fatal", True))
            elif kind == "log":
                log(arg)
            elif kind == "mkdir":
                try:
                    os.mkdir(arg)
                except FileExistsError:
                    pass
            elif kind == "unlink":
                try:
                    os.unlink(arg)
                except OSError as e:
                    log("unlink %s: %s" % (arg, e.strerror))
            elif kind == "write":
                with open(arg, "a" if h.get("append") else "w") as f:
                    f.write(h.get("text", ""))
            elif kind == "chdir":
                os.chdir(arg)
            elif kind == "putenv":
                name, _, value = arg.partition("=")
                os.environ[name] = value
            else:
                raise HookFailed("unknown hook action %r" % kind)
        except HookFailed:
            raise
        except OSError as e:
            raise HookFailed('hook "%s" (%s): %s' % (shown, phase, e))


def import_modules(cfg):
    """`import = module` (and `pyimport`, `shared-import`): imported before the app."""
    import importlib
    import importlib.util
    import sys

    for name in cfg.get("imports") or ():
        if name.endswith(".py") or "/" in name:
            # A file, as uWSGI's python plugin accepts: imported under its base name.
            modname = os.path.basename(name)[:-3] if name.endswith(".py") else os.path.basename(name)
            spec = importlib.util.spec_from_file_location(modname, os.path.abspath(name))
            if spec is None or spec.loader is None:
                raise ImportError("cannot import %s" % name)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[modname] = mod
            spec.loader.exec_module(mod)
        else:
            importlib.import_module(name)
