#!/usr/bin/env python3
"""The native parser against the stdlib one under any interpreter, e.g. every
CPython a site may run (the module is one abi3 build for CPython >= 3.8):

    for py in /root/.pyenv/versions/3.*/bin/python; do $py scripts/native-check.py target/debug/amy-emperor; done

Loads the native module from the binary's worker bundle as a worker does, then
checks 20 000 random vars blocks (clean, truncated, repeated and invalid keys,
bytes 0-255 in values): it answers exactly the blocks the stdlib parser accepts
without repeats, with the same environ. Stdlib only; exits 1 on a difference,
2 when the module does not load (a free-threaded or non-CPython interpreter:
workers then use the stdlib parser)."""

import json
import os
import random
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))

from amy_worker import native  # noqa: E402
from native_diff import disagreement, stdlib  # noqa: E402

KEYS = [b"REQUEST_METHOD", b"PATH_INFO", b"HTTP_HOST", b"HTTP_X", b"QUERY_STRING", b"A B", b"", b"HTTP_COOKIE", b"K" * 50]


def main():
    bundle = json.loads(subprocess.run([sys.argv[1], "worker-bundle"], check=True, capture_output=True).stdout)
    try:
        parse = native.load(bundle[native.NATIVE_KEY].encode("latin-1")).parse_vars
    except (ImportError, OSError, KeyError) as e:
        print("%s: native module not loaded: %s" % (sys.version.split()[0], e))
        return 2
    rng = random.Random(3)
    answered = 0
    for _ in range(20000):
        pairs = [(rng.choice(KEYS), bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80)))) for _ in range(rng.randrange(0, 8))]
        block = b"".join(len(k).to_bytes(2, "little") + k + len(v).to_bytes(2, "little") + v for k, v in pairs)
        if rng.random() < 0.2 and block:
            block = block[: rng.randrange(len(block))]
        data = b"\0" + len(block).to_bytes(2, "little") + b"\0" + block
        parsed = stdlib(data, len(data))
        why = disagreement(parse, data, len(data), parsed)
        if why:
            print("%s: %s on %r" % (sys.version.split()[0], why, data))
            return 1
        answered += parsed is not None and parsed[1] == len(parsed[0])
    print("%s: native = stdlib on 20000 blocks (%d answered natively)" % (sys.version.split()[0], answered))
    return 0


if __name__ == "__main__":
    sys.exit(main())
