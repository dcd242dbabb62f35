"""An app that leaves processes behind (issue item 8): a child in the worker's
process group, and a daemon that double-forks into its own session and ignores
SIGTERM. Each writes its pid to the file named by the query string."""

import os
import signal
import subprocess


def application(environ, start_response):
    path = environ["PATH_INFO"]
    out = environ["QUERY_STRING"]
    if path == "/child":
        p = subprocess.Popen(["sleep", "1000"])
        pid = p.pid
    elif path == "/daemon":
        r, w = os.pipe()
        first = os.fork()
        if first == 0:
            os.setsid()
            if os.fork() == 0:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)  # kept across exec
                os.write(w, str(os.getpid()).encode())
                os.close(w)
                os.execv("/bin/sleep", ["sleep", "1000"])
            os._exit(0)
        os.close(w)
        os.waitpid(first, 0)
        pid = int(os.read(r, 32))
        os.close(r)
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    with open(out, "w") as f:
        f.write(str(pid))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(pid).encode()]
