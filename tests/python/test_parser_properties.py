"""Properties of the worker's parsers (issue item 10), on a real worker, and
the fuzzer's regression inputs (tests/python/fuzz_regressions/, written by
fuzz_parsers.py) replayed in-process."""

import json
import os
import random
import socket
import sys
import time

import pytest

from conftest import connect, nginx_vars, pack_uwsgi, recv_all

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fuzz_parsers  # noqa: E402


def _packets():
    rng = random.Random(7)
    out = [pack_uwsgi(nginx_vars(uri="/environ?a=1"))]
    # Empty values, a var at the 0xFF/0x100 length boundary, non-ASCII bytes,
    # repeated HTTP_ vars (the slow path), a body in the same packet.
    out.append(pack_uwsgi(nginx_vars(uri="/environ", headers=[("HTTP_X_E", ""), ("HTTP_X_B", "b" * 256), ("HTTP_X_U", "\xe9\xff")])))
    out.append(pack_uwsgi(nginx_vars(uri="/environ", headers=[("HTTP_X_A", "1"), ("HTTP_X_A", "2"), ("HTTP_COOKIE", "c=d")])))
    body = b"k=v&x=%d" % rng.randrange(10**6)
    out.append(pack_uwsgi(nginx_vars("POST", "/environ", body=body, content_type="application/x-www-form-urlencoded")) + body)
    return out


def _environ(addr, pieces):
    s = connect(addr)
    try:
        for i, piece in enumerate(pieces):
            if i:
                time.sleep(0.002)  # a separate read on the worker's side
            s.sendall(piece)
        raw = recv_all(s)
    finally:
        s.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), raw[:200]
    return json.loads(body)


@pytest.mark.parametrize("index", range(4))
def test_every_valid_packet_split_at_every_byte_gives_the_same_environ(spawn, index):
    w = spawn()
    packet = _packets()[index]
    whole = _environ(w.addresses[0], [packet])
    for cut in range(1, len(packet)):
        assert _environ(w.addresses[0], [packet[:cut], packet[cut:]]) == whole, "split at %d" % cut


def test_fuzz_regression_inputs_pass():
    """Every input the fuzzer ever failed on, replayed against today's parsers."""
    rng = random.Random(0)
    cases = fuzz_parsers.regressions()
    for target, name, data in cases:
        fuzz_parsers.run_one(target, data, rng)


def test_fuzz_smoke_finds_nothing_in_a_few_seconds():
    """The harness itself runs (a broken harness would pass vacuously)."""
    count, failures = fuzz_parsers.fuzz("uwsgi", 1.0, 1)
    assert count > 100 and failures == 0
    count, failures = fuzz_parsers.fuzz("http", 1.0, 1)
    assert count > 100 and failures == 0
