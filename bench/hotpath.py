#!/usr/bin/env python3
"""Instructions per request of the worker's request path, in isolation.

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=starmap_next \\
        bench/.work/venv-bench/bin/python bench/hotpath.py WORKER_SOURCE [N [PART]]
    (or: bench/.work/venv-bench/bin/python bench/hotpath.py --callgrind WORKER_SOURCE [N [PART]])

PART is `full` (default) or one piece alone: `syscalls` (readv + one write + close),
`decode` (the latin-1 decode of the vars block), `parse` (`_parse_vars`), `parse-native`
(the native parser; with AMY_HOTPATH_NATIVE=the .so, see below), `app` (the
hello app with `start_response` and the memoised head), `scoreboard` (its two writes).

Loads a worker source (the single file `python/amy_worker.py`, or the package
directory `python/amy_worker/`), builds its Worker with a scratch scoreboard, and
serves N requests of the hello app, each the uwsgi packet nginx sends (the same as
`bench/loadgen`), on socketpairs prepared beforehand. Only the server side runs
inside `itertools.starmap` (C: `starmap_next`), which is what callgrind collects:
the figure is the worker's own user-space cost per request (parse, environ, app,
head, write, close, scoreboard), repeatable on a busy machine.

AMY_HOTPATH_NATIVE=FILE uses the native parser from that shared object, e.g.
    target/release/amy-emperor worker-bundle | python3 -c 'import json,sys; \
        sys.stdout.buffer.write(json.load(sys.stdin)["amy_worker/_native.abi3.so"].encode("latin-1"))' > /tmp/n.so
"""

import importlib.util
import itertools
import os
import socket
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def packet(path="/"):
    # The vars nginx sends with the stock uwsgi_params, as bench/loadgen builds them.
    pairs = [("QUERY_STRING", ""), ("REQUEST_METHOD", "GET"), ("CONTENT_TYPE", ""), ("CONTENT_LENGTH", ""),
             ("REQUEST_URI", path), ("PATH_INFO", path), ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
             ("SERVER_PROTOCOL", "HTTP/1.1"), ("REQUEST_SCHEME", "http"), ("REMOTE_ADDR", "127.0.0.1"),
             ("REMOTE_PORT", "51234"), ("SERVER_PORT", "80"), ("SERVER_NAME", "localhost"),
             ("HTTP_HOST", "localhost"), ("HTTP_USER_AGENT", "loadgen/0.1"), ("HTTP_ACCEPT", "*/*"),
             ("HTTP_ACCEPT_ENCODING", "gzip, deflate"), ("HTTP_CONNECTION", "close")]
    body = b"".join(len(k).to_bytes(2, "little") + k.encode() + len(v).to_bytes(2, "little") + v.encode()
                    for k, v in pairs)
    return b"\0" + len(body).to_bytes(2, "little") + b"\0" + body


def load_worker(src):
    src = Path(src)
    if src.is_dir():
        sys.path.insert(0, str(src.parent))
        spec = importlib.util.spec_from_file_location(src.name, src / "__init__.py",
                                                      submodule_search_locations=[str(src)])
    else:
        spec = importlib.util.spec_from_file_location("amy_worker_bench", src)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    if src.is_dir():
        for f in sorted(src.glob("*.py")):
            # uwsgidecorators needs the app-facing `uwsgi` module, gevent_loop gevent:
            # neither is on the request path measured here.
            if f.stem not in ("__init__", "__main__", "uwsgidecorators", "gevent_loop"):
                importlib.import_module(f"{src.name}.{f.stem}")
    return mod


def find(mod, name):
    """A name from the worker, wherever the package keeps it."""
    if hasattr(mod, name):
        return getattr(mod, name)
    for sub in list(sys.modules.values()):
        if getattr(sub, "__name__", "").startswith(mod.__name__ + ".") and hasattr(sub, name):
            return getattr(sub, name)
    raise AttributeError(name)


def main():
    args = sys.argv[1:]
    if args and args[0] == "--callgrind":
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "cg.out"
            subprocess.run(["valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=starmap_next",
                            f"--callgrind-out-file={out}", "-q", sys.executable, __file__, *args[1:]], check=True)
            ann = subprocess.run(["callgrind_annotate", str(out)], capture_output=True, text=True).stdout
        n = int(args[2]) if len(args) > 2 else 2000
        total = next(int(x.split()[0].replace(",", "")) for x in ann.splitlines() if "PROGRAM TOTALS" in x)
        part = args[3] if len(args) > 3 else "full"
        print(f"{total / n:,.0f} instructions per request ({args[1]}, {part}, {n} requests)")
        return
    src = args[0]
    n = int(args[1]) if len(args) > 1 else 2000
    mod = load_worker(src)
    sb = os.memfd_create("scoreboard")
    os.ftruncate(sb, 4096)
    os.dup2(sb, find(mod, "FD_SCOREBOARD"))
    sys.path.insert(0, str(BENCH / "apps"))
    import hello

    worker = find(mod, "Worker")({"processes": 4, "threads": 1, "disable_logging": True}, hello.application)
    req = find(mod, "Request")(worker, 0)
    native_so = os.environ.get("AMY_HOTPATH_NATIVE")
    if native_so:
        # The binary's native parser (its bundle's .so, e.g. from `amy-emperor worker-package`).
        with open(native_so, "rb") as f:
            native = sys.modules[mod.__name__ + ".native"].load(f.read())
        sys.modules[mod.__name__ + ".protocol"].PARSE_VARS = native.parse_vars
    handle = find(mod, "handle_uwsgi")
    base = find(mod, "_base_environ")(worker, None)
    max_block = worker.max_block
    buf = bytearray(4 + max_block + 8192)
    mv = memoryview(buf)
    pkt = packet()
    conns = []
    for _ in range(n):
        a, b = socket.socketpair()
        a.sendall(pkt)
        conns.append((a, b.detach()))

    # The worker's own per-connection step (handler, close, recycling checks).
    serve_conn = find(mod, "_serve_one")

    def serve_one(client, fd):
        serve_conn(worker, req, (fd, ""), buf, mv, base, None, handle)

    # Parts of the path alone, for the function-by-function split.
    parse_vars = find(mod, "_parse_vars")
    end = len(pkt)
    buf[:end] = pkt
    text = str(mv[:end], "latin-1")

    def syscalls(client, fd):
        os.readv(fd, [mv])
        os.write(fd, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nHello\n")
        os.close(fd)

    def decode(client, fd):
        str(mv[:end], "latin-1")

    def parse(client, fd):
        parse_vars(buf, text, end)

    native_parse = sys.modules[mod.__name__ + ".protocol"].PARSE_VARS

    def parse_native(client, fd):
        native_parse(buf, end, 1024, base)

    env0 = dict(parse_vars(buf, text, end)[0], **base)

    def app(client, fd):
        req.reset(fd, "HTTP/1.1", False)
        body = b"".join(hello.application(dict(env0), req.start_response))
        req.build_head(len(body))

    sb_struct = find(mod, "_SB")

    def scoreboard(client, fd):
        sb_struct.pack_into(worker.scoreboard, 0, 1.0, 1, 2, 3.0, 0, 6, b"GET /")
        sb_struct.pack_into(worker.scoreboard, 0, 0.0, 1, 2, 3.0, 0, 0, b"")

    part = args[2] if len(args) > 2 else "full"
    fn = {"full": serve_one, "syscalls": syscalls, "decode": decode, "parse": parse, "parse-native": parse_native, "app": app,
          "scoreboard": scoreboard}[part]
    deque(itertools.starmap(fn, conns), maxlen=0)
    if part == "full":
        reply = conns[-1][0].recv(65536)
        assert reply.startswith(b"HTTP/1.1 200"), reply[:80]
        print(f"served {n}: {reply.splitlines()[0].decode()}", file=sys.stderr)


if __name__ == "__main__":
    main()
