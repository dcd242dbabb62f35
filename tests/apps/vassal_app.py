"""The emperor tests' app: the serving worker's pid on every answer, and
`/sleep?s=N` for an in-flight request that must complete across a stop
(`/sleep?s=N&mark=PATH` also creates PATH when the request has reached the
app, so a test knows it is in flight instead of sleeping and hoping)."""
import os
import time


def application(environ, start_response):
    body = b"Hello, World!\n"
    if environ.get("PATH_INFO") == "/sleep":
        query = dict(p.split("=", 1) for p in environ.get("QUERY_STRING", "").split("&") if "=" in p)
        if "mark" in query:
            open(query["mark"], "w").close()
        time.sleep(float(query.get("s", "1")))
        body = b"slept\n"
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("X-Worker-Pid", str(os.getpid()))],
    )
    return [body]


def _orphan():
    """Forks a grandchild that outlives its parent by a second: re-parented to
    the nearest subreaper (the emperor), which must reap it."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        grandchild = os.fork()
        if grandchild == 0:
            os.close(r)
            os.close(w)
            time.sleep(1)
            os._exit(0)
        os.write(w, str(grandchild).encode())
        os._exit(0)
    os.close(w)
    pid = os.read(r, 32)
    os.close(r)
    os.waitpid(child, 0)
    return pid


_plain = application


def application(environ, start_response):  # noqa: F811
    if environ.get("PATH_INFO") == "/orphan":
        body = _orphan()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
    return _plain(environ, start_response)
