"""The example app amy-emperor's bundled amy_uwsgi.ini serves.

A plain WSGI app (stdlib only) standing in for AMY: it shows which worker
answered and which settings arrived from uwsgi_env, without printing a secret.
"""

import os

SETTINGS = ("AMY_SITE_NAME", "AMY_DEBUG", "AMY_SECRET_KEY")


def application(environ, start_response):
    if environ.get("PATH_INFO") == "/health":
        body = b"ok\n"
    else:
        lines = [
            "Hello from %s" % os.environ.get("AMY_SITE_NAME", "an unnamed site"),
            "worker pid %d" % os.getpid(),
        ]
        for name in SETTINGS:
            lines.append("%s is %s" % (name, "set" if name in os.environ else "missing"))
        body = ("\n".join(lines) + "\n").encode()
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("X-Worker-Pid", str(os.getpid())),
        ],
    )
    return [body]
