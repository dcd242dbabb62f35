"""A stdlib byte-mutation fuzzer for the worker's uwsgi and HTTP parsers.

Not a pytest module (pytest collects test_*.py): run it as a script,

    .venv-test/bin/python tests/python/fuzz_parsers.py --seconds 600 [--target uwsgi|http|all]
    .venv-test/bin/python tests/python/fuzz_parsers.py --replay   # the regression inputs only

It calls the parsers in-process (no sockets, so millions of inputs per hour)
and checks, for every input:
- the only exception is `BadRequest` (anything else is a crash);
- uwsgi: every key of the environ is a valid var name, every value a str;
  `CONTENT_LENGTH`, if accepted, is 0..10**19; the native parser (from the
  built binary's worker bundle, when there is one) gives the same environ, or
  hands back (None) exactly the blocks the stdlib parser refuses, joins or
  finds too long;
- HTTP: the incremental line checker (`_scan_head`) gives the same outcome
  (the same end offset, or the same refusal code) however the input is split
  into reads, and agrees with the whole-head parser on where the head ends;
- no call takes more than `SLOW` CPU seconds on an input of at most 70 KB (a
  super-linear case).
A failing input is written to tests/python/fuzz_regressions/ (replayed by
test_parser_properties.py and `--replay`) and the run exits 1."""

import argparse
import hashlib
import os
import random
import re
import resource
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "python"))

from amy_worker import http as amy_http  # noqa: E402
from amy_worker import protocol  # noqa: E402
from amy_worker.errors import BadRequest  # noqa: E402
from amy_worker.native import load as load_native  # noqa: E402

sys.path.insert(0, HERE)
import conftest  # noqa: E402
import native_diff  # noqa: E402
from native_diff import BASE  # noqa: E402,F401 (test_native.py uses it)

# The binary's native parser, or None when no binary is built (the stdlib one
# is fuzzed alone then; test_native.py fails in that case, so CI never skips it).
NATIVE = load_native(conftest.native_blob().encode("latin-1")).parse_vars if conftest.native_blob() else None
REGRESSIONS = os.path.join(HERE, "fuzz_regressions")
SLOW = 0.25
_KEY_RE = re.compile(r"[A-Za-z0-9_.\-]+\Z")


class Listener(object):
    server_name = "fuzz"
    server_port = "80"
    name = "fuzz"


def pack_uwsgi(pairs):
    block = b"".join(struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v for k, v in pairs)
    return struct.pack("<BHB", 0, len(block) & 0xFFFF, 0) + block


def uwsgi_seeds():
    base = [
        (b"QUERY_STRING", b"a=1"),
        (b"REQUEST_METHOD", b"GET"),
        (b"CONTENT_TYPE", b""),
        (b"CONTENT_LENGTH", b""),
        (b"REQUEST_URI", b"/x?a=1"),
        (b"PATH_INFO", b"/x"),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"REMOTE_ADDR", b"127.0.0.1"),
        (b"HTTP_HOST", b"localhost"),
        (b"HTTP_COOKIE", b"a=b"),
    ]
    return [
        pack_uwsgi(base),
        pack_uwsgi(base + [(b"HTTP_COOKIE", b"c=d"), (b"HTTP_X", b"1"), (b"HTTP_X", b"2")]),
        pack_uwsgi(base + [(b"CONTENT_LENGTH", b"5")]) + b"hello",
        pack_uwsgi([(b"REQUEST_METHOD", b"POST"), (b"PATH_INFO", b"/\xff"), (b"HTTPS", b"on")]),
        pack_uwsgi(base + [(b"HTTP_X_BIG", b"v" * 3000)]),
    ]


def http_seeds():
    return [
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /p?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nabc",
        b"GET http://h/x HTTP/1.0\r\nCookie: a=b\r\nCookie: c=d\r\nX-A: 1\r\nX-A: 2\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /%C3%A9 HTTP/1.1\r\nHost: a\r\nUser-Agent: \x80\xff\r\n\r\n",
    ]


INTERESTING_16 = (0, 1, 2, 3, 4, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF)
TOKENS = [b"\r\n", b"\n", b"\r", b"\r\n\r\n", b":", b" ", b"\t", b"\x00", b"HTTP/1.1", b"HTTP/0.9", b"HTTP/2",
          b"Host: ", b"Content-Length: ", b"Transfer-Encoding: chunked", b"CONTENT_LENGTH", b"HTTP_", b"\xff"]


def mutate(rng, data, corpus):
    data = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 5, 8))):
        op = rng.randrange(9)
        if op == 0 and data:
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 2:
            i = rng.randrange(len(data) + 1)
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        elif op == 3 and data:
            i = rng.randrange(len(data))
            del data[i : i + rng.randrange(1, 16)]
        elif op == 4 and data:
            i = rng.randrange(len(data))
            j = min(len(data), i + rng.randrange(1, 64))
            data[i:i] = data[i:j] * rng.randrange(1, 40)
        elif op == 5 and len(data) >= 2:
            i = rng.randrange(len(data) - 1)
            struct.pack_into("<H", data, i, rng.choice(INTERESTING_16))
        elif op == 6:
            i = rng.randrange(len(data) + 1)
            data[i:i] = rng.choice(TOKENS)
        elif op == 7 and corpus:
            other = rng.choice(corpus)
            i = rng.randrange(len(data) + 1)
            j = rng.randrange(len(other) + 1)
            data = data[:i] + other[j:]
        elif op == 8 and len(data) >= 4:
            # Keep the uwsgi header's size consistent with the new length half the time.
            struct.pack_into("<H", data, 1, (len(data) - 4) & 0xFFFF)
    return bytes(data[: 70000])


class Failure(Exception):
    pass


def check_uwsgi(data):
    if len(data) < 4:
        return
    size = data[1] | (data[2] << 8)
    end = min(4 + size, len(data))
    parsed = None
    try:
        parsed = protocol._parse_vars(data, data.decode("latin-1"), end)
        env = parsed[0]
        for k, v in env.items():
            if type(k) is not str or type(v) is not str or not _KEY_RE.match(k):
                raise Failure("bad environ entry %r=%r" % (k[:40], v[:40]))
        n = protocol._content_length(env.get("CONTENT_LENGTH"))
        if not (0 <= n < 10**19):
            raise Failure("content length %r" % n)
    except BadRequest:
        pass
    if NATIVE is not None:
        why = native_diff.disagreement(NATIVE, data, end, parsed)
        if why:
            raise Failure(why)


def _scan_outcome(data, cuts):
    buf = bytearray(len(data))
    pos, fields, end, n = 0, -1, -1, 0
    try:
        for cut in cuts + [len(data)]:
            if cut <= n:
                continue
            buf[n:cut] = data[n:cut]
            n = cut
            pos, fields, end = amy_http._scan_head(buf, pos, n, fields)
            if end >= 0:
                return ("end", end)
        return ("more", None)
    except BadRequest as e:
        return ("refused", e.code)


def check_http(data, rng):
    whole = _scan_outcome(data, [])
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(1, 6)))) if len(data) > 1 else []
    split = _scan_outcome(data, cuts)
    if whole != split:
        raise Failure("scan differs by split %r: whole %r, split %r" % (cuts, whole, split))
    end = data.find(b"\r\n\r\n")
    if whole[0] == "end" and whole[1] != end:
        raise Failure("scan ends at %d, the head at %d" % (whole[1], end))
    if end >= 0:
        try:
            env = amy_http._parse_http(data[:end], Listener(), ("127.0.0.1", 1))
            for k, v in env.items():
                if type(v) is not str:
                    raise Failure("bad environ value %r" % k)
            protocol._content_length(env.get("CONTENT_LENGTH"))
        except BadRequest:
            pass


def run_one(target, data, rng):
    # CPU time, not wall time: the fuzzer runs at nice 19 on a shared machine.
    t0 = time.process_time()
    try:
        if target == "uwsgi":
            check_uwsgi(data)
        else:
            check_http(data, rng)
    except Failure:
        raise
    except Exception as e:
        raise Failure("%s: %r" % (type(e).__name__, e))
    took = time.process_time() - t0
    if took > SLOW:
        raise Failure("slow: %.3fs on %d bytes" % (took, len(data)))


def save(target, data, why):
    os.makedirs(REGRESSIONS, exist_ok=True)
    name = "%s-%s" % (target, hashlib.sha1(data).hexdigest()[:16])
    with open(os.path.join(REGRESSIONS, name), "wb") as f:
        f.write(data)
    print("FAIL %s: %s -> %s" % (target, why, name), flush=True)


def regressions():
    if not os.path.isdir(REGRESSIONS):
        return []
    out = []
    for name in sorted(os.listdir(REGRESSIONS)):
        target = name.split("-", 1)[0]
        with open(os.path.join(REGRESSIONS, name), "rb") as f:
            out.append((target, name, f.read()))
    return out


def fuzz(target, seconds, seed):
    rng = random.Random(seed)
    corpus = uwsgi_seeds() if target == "uwsgi" else http_seeds()
    corpus += [d for t, _, d in regressions() if t == target]
    deadline = time.monotonic() + seconds
    count = failures = 0
    while time.monotonic() < deadline:
        for _ in range(200):
            data = mutate(rng, rng.choice(corpus), corpus)
            count += 1
            try:
                run_one(target, data, rng)
            except Failure as e:
                failures += 1
                save(target, data, e)
                continue
            # A tiny corpus growth rule (no coverage feedback in the stdlib):
            # keep inputs that got past the parser's framing checks.
            if len(corpus) < 2000 and rng.random() < 0.002:
                corpus.append(data)
    return count, failures


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--target", choices=("uwsgi", "http", "all"), default="all")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--replay", action="store_true")
    a = p.parse_args()
    failed = 0
    rng = random.Random(0)
    for target, name, data in regressions():
        try:
            run_one(target, data, rng)
        except Failure as e:
            print("REGRESSION %s: %s" % (name, e), flush=True)
            failed += 1
    if not a.replay:
        targets = ("uwsgi", "http") if a.target == "all" else (a.target,)
        seed = a.seed if a.seed is not None else int.from_bytes(os.urandom(4), "little")
        for target in targets:
            before = resource.getrusage(resource.RUSAGE_SELF)
            count, f = fuzz(target, a.seconds / len(targets), seed)
            after = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            print("target=%s seed=%d inputs=%d failures=%d cpu_seconds=%.1f" % (target, seed, count, f, cpu), flush=True)
            failed += f
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
