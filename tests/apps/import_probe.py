"""`python import_probe.py OUT`: appends to OUT whether this process can
import `uwsgi` and `uwsgidecorators` ("uwsgi=<outcome> uwsgidecorators=<outcome>").
Run as a hook, daemon and cron command by tests/uwsgi_module.rs: none of them
may see the worker's module."""

import sys


def outcome(name):
    try:
        __import__(name)
    except ImportError as e:
        return type(e).__name__
    return "importable"


with open(sys.argv[1], "a") as f:
    f.write("uwsgi=%s uwsgidecorators=%s\n" % (outcome("uwsgi"), outcome("uwsgidecorators")))
