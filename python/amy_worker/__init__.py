"""amy-emperor's Python worker: serves one WSGI app on sockets the master bound.

Stdlib only, Python 3.8+. The master runs it through `BOOTSTRAP` (see
`src/worker/contract.rs`, the contract this file implements: fds, the
`AMY_EMPEROR_WORKER` JSON, the scoreboard layout, signals and exit codes).

Theory of operation
-------------------
Each serving thread blocks in `accept()` on an inherited listening socket (no
epoll: the kernel wakes one worker per connection), reads the request with
`os.readv` into a buffer it reuses, builds the environ, calls the app and writes
the head and the first body chunk with one `os.write`. The fast path (the whole
uwsgi packet arrives in the first read) costs accept, read, write, close and
nothing else; deadlines (`poll`) are only armed once a read comes back short.
Per-request Python work is kept small: one latin-1 decode of the vars block,
lengths read by byte indexing, a reusable `start_response`, memoised response
heads, one `struct.pack_into` into the scoreboard at each end, one `os.write`
for the request log line.

Slow clients: TCP connections inherit SO_RCVTIMEO/SO_SNDTIMEO from the
listener; a unix connection that sends nothing is cut after HEADER_TIMEOUT by
the watchdog thread (the same thread that watches the master-alive pipe), so
the fast path needs no syscall for it. Once a read comes back short, the rest
of the head has a total deadline (poll), and each body read a stall timeout.

Deliberate differences from uWSGI (documented in the README):
- An oversized uwsgi block gets `431` (uWSGI closes, nginx shows 502); when
  `buffer_size` is unset blocks up to 65535 bytes are accepted.
- An app exception before the response started gets a `500` response.
- `HTTP_CONTENT_TYPE`/`HTTP_CONTENT_LENGTH` duplicates nginx sends are dropped
  (PEP 3333 / CGI: only `CONTENT_TYPE`/`CONTENT_LENGTH`).
- `wsgi.url_scheme` never comes from client headers (X-Forwarded-Proto).
- The log line's `req: a/b` shows this worker process's request count twice
  (uWSGI: per-slot count surviving respawns / instance total).
- Malformed packets (P2-P7, P11 of reliability.md) get a 400, not a silent
  close. NUL bytes inside uwsgi var *values* are passed through (keys are
  checked): checking every value costs on every request, and nginx never
  sends them.
- http-socket: chunked request bodies get `411 Length Required`; the response
  carries `Connection: close`, and `Content-Length` is added only when the app
  returned a list and set none (a streamed body is delimited by the close).

Modules
-------
- `contract`: the Python side of src/worker/contract.rs (fds, env, messages,
  exit codes, scoreboard layout), in one place.
- `limits`: sizes and timeouts; `errors`: exceptions and canned error replies;
  `applog`: the worker's own log lines.
- `fdio`: raw fd I/O (write all, wait, drain and close).
- `protocol`: uwsgi packets; `http`: HTTP/1.1 on an `http-socket`; both build
  the environ and hand it to `wsgi.run_app`.
- `wsgi`: wsgi.input, the file wrapper, start_response, the app call, the
  scoreboard updates and the request log line (the hot path, kept together).
- `state`: process-wide state (counters, scoreboard, recycling).
- `hooks`: `hook-pre-app`/`post-app`/`accepting` actions and `import =`;
- `app`: loading the app; `server`: accept loops, threads, signals, master-alive;
  `gevent_loop`: the same with `gevent = N` (greenlets, an acceptor thread);
  `proctitle`: process titles; `harakiri`: the stack dump and 504 before a
  harakiri kill; `__main__`: start-up.
- `uwsgi_api`, `uwsgidecorators`: uWSGI's Python API for the app, served by
  the bootstrap as the top-level `uwsgi` and `uwsgidecorators` (never imported
  as `amy_worker.*`: one module object, the app's); `logvars`: what
  `uwsgi.set_logvar` stores for `log-format`.

The per-request functions bind what they use with `from .x import name` (a
module global, one dict lookup), never `x.name` per request.
"""
