"""The worker's native fast path (src/worker/native/amy_native.c) against its
stdlib fallback: the built binary ships it, it parses exactly what the stdlib
parser accepts and hands everything else back, and a worker serves the same
environ with it, without it, and with it turned off."""

import json
import os
import random

import pytest

import fuzz_parsers
from conftest import native_blob, nginx_vars, pack_uwsgi, uwsgi

NATIVE_MODULE = "amy_worker._native"


def test_the_built_binary_ships_a_native_module():
    # No skip: a CI build without it would silently test only the fallback.
    assert native_blob(), "no native module in the binary's worker bundle (build it: cargo build)"
    assert fuzz_parsers.NATIVE is not None


def test_native_and_stdlib_parsers_agree_on_mutated_blocks():
    """30 000 mutated packets (fuzz_parsers' mutator over its seeds): the native
    environ equals the stdlib one whenever it answers, and it answers for every
    clean block (native_diff.disagreement, called by fuzz_parsers.check_uwsgi)."""
    assert fuzz_parsers.NATIVE is not None
    rng = random.Random(11)
    corpus = fuzz_parsers.uwsgi_seeds()
    answered = 0
    for _ in range(30000):
        data = fuzz_parsers.mutate(rng, rng.choice(corpus), corpus)
        fuzz_parsers.run_one("uwsgi", data, rng)
        if len(data) >= 4:
            end = min(4 + (data[1] | (data[2] << 8)), len(data))
            answered += fuzz_parsers.NATIVE(bytearray(data), end, 1024, fuzz_parsers.BASE) is not None
    assert answered > 1000  # the mutator keeps many blocks clean: both sides are exercised


@pytest.mark.parametrize(
    "block",
    [
        b"",  # no vars at all
        b"\x01\x00A\x00\x00",  # one var, empty value
        b"\x01\x00A\x01\x00",  # value length past the end
        b"\x01\x00",  # key length without the key
        b"\x00\x00\x00\x00",  # empty key
        b"\x03\x00A B\x00\x00",  # invalid key
        b"\x01\x00A\x00\x00\x01\x00A\x00\x00",  # repeated key
    ],
)
def test_native_parser_edge_blocks(block):
    data = b"\x00" + len(block).to_bytes(2, "little") + b"\x00" + block
    fuzz_parsers.check_uwsgi(data)  # raises on any disagreement


def test_native_parser_refuses_more_vars_than_the_limit():
    block = b"".join(b"\x04\x00K%03d\x01\x00v" % i for i in range(20))
    buf = bytearray(b"\x00" + len(block).to_bytes(2, "little") + b"\x00" + block)
    env, pairs = fuzz_parsers.NATIVE(buf, len(buf), 20, {})
    assert pairs == 20 and len(env) == 20
    assert fuzz_parsers.NATIVE(buf, len(buf), 19, {}) is None
    with pytest.raises(TypeError):
        fuzz_parsers.NATIVE(bytes(buf), len(buf), 20, {})


def _block(pairs):
    block = b"".join(len(k).to_bytes(2, "little") + k + len(v).to_bytes(2, "little") + v for k, v in pairs)
    return bytearray(b"\x00" + len(block).to_bytes(2, "little") + b"\x00" + block)


def test_native_environ_shape_never_carries_an_earlier_request():
    """The same key sequence again starts from the kept shape: each request's
    environ has exactly its own values and the base's, whatever came before (a
    change of key, of key order, of base, a refused or repeated block between)."""
    parse = fuzz_parsers.NATIVE
    base = {"wsgi.url_scheme": "http", "wsgi.run_once": False}
    other_base = {"wsgi.url_scheme": "https"}
    seqs = [
        [(b"REQUEST_METHOD", b"GET"), (b"PATH_INFO", b"/a"), (b"HTTP_COOKIE", b"s=1")],
        [(b"REQUEST_METHOD", b"POST"), (b"PATH_INFO", b"/b"), (b"HTTP_COOKIE", b"s=2")],
        [(b"REQUEST_METHOD", b"GET"), (b"PATH_INFO", b"/c")],
        [(b"PATH_INFO", b"/d"), (b"REQUEST_METHOD", b"PUT"), (b"HTTP_COOKIE", b"s=3")],
        [(b"REQUEST_METHOD", b"GET"), (b"PATH_INFO", b"/e"), (b"HTTP_X", b"x")],
        [(b"REQUEST_METHOD", b"GET"), (b"REQUEST_METHOD", b"HEAD"), (b"PATH_INFO", b"/f")],
        [(b"REQUEST_METHOD", b"GET"), (b"wsgi.url_scheme", b"gopher")],
    ]
    rng = random.Random(5)
    for _ in range(3000):
        pairs = rng.choice(seqs)
        b = rng.choice((base, base, other_base))
        got = parse(_block(pairs), len(_block(pairs)), 1024, b)
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            assert got is None
            continue
        want = {k.decode(): v.decode() for k, v in pairs}
        want.update(b)
        assert got == (want, len(pairs))


HEADERS = [("HTTP_X_E", ""), ("HTTP_X_U", "\xe9\xff"), ("HTTP_COOKIE", "a=b"), ("HTTP_COOKIE", "c=d"), ("HTTP_X_A", "1"), ("HTTP_X_A", "2")]


def _environ(addr, headers):
    r = uwsgi(addr, uri="/environ?q=1", headers=headers)
    assert r.status == 200, r.raw[:200]
    return json.loads(r.body)


def test_a_worker_serves_the_same_environ_with_and_without_the_native_parser(spawn):
    native = spawn(native=True)
    stdlib = spawn(native=False)
    assert uwsgi(native.addresses[0], uri="/loaded?name=" + NATIVE_MODULE).body == b"True"
    assert uwsgi(stdlib.addresses[0], uri="/loaded?name=" + NATIVE_MODULE).body == b"False"
    for headers in ([], HEADERS[:3], HEADERS):  # clean blocks, then repeated headers (the stdlib path)
        assert _environ(native.addresses[0], headers) == _environ(stdlib.addresses[0], headers)
    joined = _environ(native.addresses[0], HEADERS)
    assert joined["HTTP_COOKIE"] == "a=b; c=d" and joined["HTTP_X_A"] == "1, 2"
    # A malformed block gets the stdlib parser's 400 with its reason.
    bad = pack_uwsgi(nginx_vars())[:-1]
    bad = bad[:1] + (len(bad) - 4).to_bytes(2, "little") + bad[3:]
    from conftest import Response, raw_request

    for w in (native, stdlib):
        r = Response(raw_request(w.addresses[0], bad))
        assert r.status == 400, r.raw[:200]


def test_amy_emperor_no_native_turns_it_off(spawn):
    w = spawn(native=True, env=dict(os.environ, AMY_EMPEROR_NO_NATIVE="1"))
    assert uwsgi(w.addresses[0], uri="/loaded?name=" + NATIVE_MODULE).body == b"False"
    assert _environ(w.addresses[0], HEADERS)["HTTP_X_A"] == "1, 2"
