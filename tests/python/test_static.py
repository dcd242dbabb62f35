"""Unit tests of the serving modules (static files, mounts, routes), imported
straight from python/amy_worker/; the integration tests in tests/static_files.rs
and tests/mounts_routes.rs run them inside the real worker."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))

from amy_worker.mounts import Mounts  # noqa: E402
from amy_worker.routes import Router, _groups  # noqa: E402
from amy_worker.static import StaticFiles, parse_http_date, parse_range  # noqa: E402


@pytest.mark.parametrize(
    "value,size,expected",
    [
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=10-", 100, (10, 99)),
        ("bytes=-5", 100, (95, 99)),
        ("bytes=0-999", 100, None),  # the whole file: 200, as uWSGI
        ("bytes=0-", 100, None),
        ("bytes=100-", 100, "invalid"),
        ("bytes=150-200", 100, "invalid"),
        ("bytes=9-0", 100, None),
        ("bytes=-0", 100, None),
        ("items=0-9", 100, None),
        ("bytes=a-b", 100, None),
        ("bytes=0-9,20-29", 100, (0, 9)),  # the first range only
    ],
)
def test_range_parsing_follows_uwsgi(value, size, expected):
    assert parse_range(value, size) == expected


def test_http_dates_are_rfc1123_only():
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") is None
    assert parse_http_date("garbage") is None


def _site(tmp_path, **extra):
    root = tmp_path / "static"
    (root / "d").mkdir(parents=True)
    (root / "f.txt").write_text("f")
    (root / "d" / "index.htm").write_text("i")
    (tmp_path / "secret").write_text("s")
    os.symlink(str(tmp_path / "secret"), str(root / "out"))
    os.symlink(str(tmp_path / "secret"), str(root / "d" / "index.html"))
    cfg = {"static_maps": [{"prefix": "/s", "docroot": str(root), "append": False}]}
    cfg.update(extra)
    return StaticFiles(cfg), root


@pytest.mark.parametrize(
    "path",
    ["/s/../secret", "/s/out", "/s/d/../../secret", "/s/\x00/../secret", "/s//../secret", "/s/./out"],
)
def test_static_find_refuses_everything_outside_the_map(tmp_path, path):
    static, _ = _site(tmp_path)
    assert static.find({"PATH_INFO": path, "REQUEST_METHOD": "GET"}) is None


def test_an_index_symlinked_out_of_the_map_is_refused_and_the_next_index_used(tmp_path):
    static, root = _site(tmp_path, static_index=["index.html", "index.htm"])
    hit = static.find({"PATH_INFO": "/s/d/", "REQUEST_METHOD": "GET"})
    assert hit is not None and hit[0] == str(root / "d" / "index.htm")


def test_static_find_serves_get_and_head_only(tmp_path):
    static, root = _site(tmp_path)
    assert static.find({"PATH_INFO": "/s/f.txt", "REQUEST_METHOD": "HEAD"})[0] == str(root / "f.txt")
    assert static.find({"PATH_INFO": "/s/f.txt", "REQUEST_METHOD": "POST"}) is None


def test_mounts_longest_prefix_on_a_path_boundary_wins():
    main, a, ab = object(), object(), object()
    m = Mounts([("", main), ("/a", a), ("/a/b/", ab)], True)
    cases = {
        "/a": (a, "/a", ""),
        "/a/x": (a, "/a", "/x"),
        "/a/b/c": (ab, "/a/b/", "c"),
        "/ab": (main, "", "/ab"),
        "/": (main, "", "/"),
    }
    for path, (app, sn, pi) in cases.items():
        env = {"PATH_INFO": path, "SCRIPT_NAME": ""}
        assert m.select(env) is app, path
        assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == (sn, pi), path


def test_route_groups_and_vars_expand_like_uwsgi():
    import re

    m = re.search(r"^/u/(\d+)/(x)?", "/u/42/")
    assert _groups("/user?id=$1&x=$2&$$", m) == "/user?id=42&x=&$$"
    r = Router([{"subject": "path_info", "pattern": "^/(.*)", "action": "redirect", "arg": "https://${HTTP_HOST}/$1", "line": 1}])
    status, headers, _ = r.apply({"PATH_INFO": "/p", "HTTP_HOST": "h.example"}, [])
    assert status.startswith("302") and headers == [("Location", "https://h.example/p")]


def test_goto_jumps_to_its_label():
    r = Router(
        [
            {"subject": "path_info", "pattern": "^/x", "action": "goto", "arg": "deny", "line": 1},
            {"subject": "run", "pattern": "", "action": "last", "arg": "", "line": 2},
            {"subject": "label", "pattern": "deny", "action": "", "arg": "", "line": 3},
            {"subject": "run", "pattern": "", "action": "return", "arg": "403", "line": 4},
        ]
    )
    assert r.apply({"PATH_INFO": "/x"}, [])[0] == "403 Forbidden"
    assert r.apply({"PATH_INFO": "/y"}, []) is None


def test_a_site_without_serving_keys_serves_the_plain_app():
    from amy_worker.dispatch import Site, build

    def app(env, sr):
        return []

    assert build({}, app, None) is app
    assert build({"serving": {"add_headers": [["X-A", "1"]], "socket_timeout": 3}}, app, None) is app
    assert isinstance(build({"serving": {"post_buffering": 10}}, app, None), Site)


def test_goto_to_the_first_rules_is_a_jump_not_an_outcome():
    # regression: NEXT/CONTINUE were the ints 0 and 1, so `goto` to the label at
    # index 1 stopped routing instead of jumping
    r = Router(
        [
            {"subject": "path_info", "pattern": "^/go", "action": "goto", "arg": "one", "line": 1},
            {"subject": "label", "pattern": "one", "action": "", "arg": "", "line": 2},
            {"subject": "path_info", "pattern": "^/go", "action": "return", "arg": "418", "line": 3},
        ]
    )
    assert r.apply({"PATH_INFO": "/go"}, [])[0].startswith("418")


def test_a_goto_backwards_is_a_no_op_not_a_loop():
    r = Router(
        [
            {"subject": "label", "pattern": "top", "action": "", "arg": "", "line": 1},
            {"subject": "path_info", "pattern": "^/", "action": "goto", "arg": "top", "line": 2},
        ]
    )
    assert r.apply({"PATH_INFO": "/x"}, []) is None
