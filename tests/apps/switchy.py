"""A tiny app that makes the interpreter switch threads as often as it can, so
races between a worker's serving threads (a lost `+=`) show up in tests."""

import sys
import time

sys.setswitchinterval(1e-6)


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    time.sleep(0.001)  # requests of a burst overlap
    return [b"ok\n"]
