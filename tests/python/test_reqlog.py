"""reqlog.py: the log-format compiler (pure) and, through a real worker, the
routing mark, conditional lines and log-date on the worker's own lines."""

import json
import os
import sys
import types

import conftest
from conftest import uwsgi, wait_for

sys.path.insert(0, os.path.join(conftest.ROOT, "python"))
from amy_worker import reqlog  # noqa: E402


class _Req(object):
    core = 0
    body_bytes = 11
    head_len = 40
    head_count = 2
    proto = "HTTP/1.1"


def _worker():
    w = types.SimpleNamespace(pid=4242, cfg={"id": 3})
    w.ctime = lambda t: "Thu Jan  1 00:00:00 1970"
    return w


def _ctx(env, lvars=None, status="200"):
    c = reqlog.Ctx()
    c.env = env
    c.req = _Req()
    c.t0 = 1700000000.25
    c.took = 0.0123
    c.pairs = 14
    c.block = 300
    c.count = 1
    c.logvars = lvars or {}
    c.status = status
    return c


def test_parse_format_splits_text_and_variables_as_uwsgi():
    assert reqlog.parse_format("a %(x) b %(y)") == [("a ", "x"), (" b ", "y"), ("", None)]
    # Unterminated and empty variables are text.
    assert reqlog.parse_format("%() %(open") == [("%() %(open", None)]
    assert reqlog.parse_format("100% %(uri)") == [("100% ", "uri"), ("", None)]


def test_variables_unknown_names_and_empties():
    env = {"REQUEST_METHOD": "GET", "REQUEST_URI": "/a", "REMOTE_ADDR": "1.2.3.4", "HTTP_X_Y": "yy", "CONTENT_LENGTH": ""}
    fmt = "%(method) %(uri) %(status) %(msecs) %(micros) %(size) %(rsize) %(hsize) %(cl) %(addr) %(user) %(pid) %(wid) %(vars) %(headers) %(pktsize) %(time) %(tmsecs) %(var.HTTP_X_Y) %(var.NOPE) %(foo) %(bar)"
    render = reqlog.compile_format(_worker(), {}, fmt, False)
    line = render(_ctx(env, {"foo": "F"}))
    assert line == "GET /a 200 12 12300 51 11 40 0 1.2.3.4 - 4242 3 28 2 300 1700000000 1700000000250 yy - F -\n"


def test_percent_in_text_is_kept_and_x_forwarded_for():
    env = {"REMOTE_ADDR": "1.2.3.4", "HTTP_X_FORWARDED_FOR": "9.9.9.9"}
    assert reqlog.compile_format(_worker(), {}, "100%% %(addr)", True)(_ctx(env)) == "100%% 9.9.9.9\n"
    assert reqlog.compile_format(_worker(), {}, "%(addr)", False)(_ctx(env)) == "1.2.3.4\n"


def test_json_shaped_formats_escape_values_others_escape_control_chars():
    env = {"REQUEST_URI": '/a"b\\c'}
    line = reqlog.compile_format(_worker(), {}, '{"u":"%(uri)","f":"%(foo)"}', False)(_ctx(env, {"foo": "x\ny"}))
    assert json.loads(line) == {"u": '/a"b\\c', "f": "x\ny"}
    plain = reqlog.compile_format(_worker(), {}, "%(uri) %(foo)", False)(_ctx(env, {"foo": "x\ny"}))
    assert plain == '/a"b\\c x\\x0ay\n'


def test_ftime_uses_the_log_date_format_only_with_logformat_strftime():
    lg = {"strftime": "%Y", "format_strftime": True}
    assert reqlog.compile_format(_worker(), lg, "%(ftime)", False)(_ctx({})).strip().isdigit()
    lg = {"strftime": "%Y", "format_strftime": False}
    ltime = reqlog.compile_format(_worker(), lg, "%(ftime)", False)(_ctx({}))
    assert "/" in ltime and ":" in ltime


def test_conditions_follow_uwsgi_log_request():
    w = _worker()
    rl = reqlog.RequestLog(w, {"disable_logging": True, "logging": {"log_4xx": True, "big": 100}})
    assert rl.conditional and not rl.enabled
    assert rl.wanted("404", 5) and not rl.wanted("500", 5) and rl.wanted("200", 100) and not rl.wanted("200", 99)
    assert not reqlog.RequestLog(w, {"logging": {"log_4xx": True}}).conditional


def test_worker_marks_request_lines_for_req_logger_and_dates_its_own_lines(spawn):
    logging = {"mark": True, "format": "%(method) %(uri) %(status)", "date": True, "strftime": "[%Y]"}
    w = spawn(app="hello", logging=logging)
    assert uwsgi(w.addresses[0], uri="/x").status == 200
    wait_for(lambda: "GET /x 200" in w.log(), what="the request line")
    # split("\n"): str.splitlines() also breaks at \x1e.
    lines = w.log().split("\n")
    assert "\x1eGET /x 200" in lines, lines


def test_disable_logging_with_log_5xx_through_a_worker(spawn):
    w = spawn(app="pep3333", disable_logging=True, logging={"log_5xx": True, "date": True, "strftime": "[%Y]"})
    assert uwsgi(w.addresses[0], uri="/nope").status == 404
    assert uwsgi(w.addresses[0], uri="/crash").status == 500
    wait_for(lambda: "(HTTP/1.1 500)" in w.log(), what="the 500 line")
    assert "GET /nope" not in w.log().replace("during GET /nope", "")
    # The worker's own line carries log-date's prefix; the request line does not.
    own = [l for l in w.log().splitlines() if "amy-worker[" in l]
    assert own and own[0].startswith("[20") and own[0][6:10] == " - a", own
    assert [l for l in w.log().splitlines() if "(HTTP/1.1 500)" in l][0].startswith("[pid: ")
