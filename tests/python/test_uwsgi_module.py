"""Unit tests of the `uwsgi` module (python/amy_worker/uwsgi_api.py) and
`uwsgidecorators`, loaded the way the bootstrap serves them: as the top-level
names. The whole path (bootstrap, template fork, real uWSGI side by side) is
tests/uwsgi_module.rs."""

import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PKG = os.path.join(ROOT, "python", "amy_worker")


@pytest.fixture
def uwsgi(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "python"))
    spec = importlib.util.spec_from_file_location("uwsgi", os.path.join(PKG, "uwsgi_api.py"))
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "uwsgi", mod)
    spec.loader.exec_module(mod)
    mod._configure(
        {
            "id": 2,
            "generation": 1,
            "processes": 3,
            "threads": 4,
            "listeners": [{"fd": 7}, {"fd": 8}],
            "uwsgi": {
                "master_pid": 4242,
                "started_on": 1700000000,
                "opt": [["module", "app"], ["env", "A=***"], ["env", "B=***"], ["vacuum", ""]],
            },
        }
    )
    return mod


@pytest.fixture
def decorators(uwsgi, monkeypatch):
    spec = importlib.util.spec_from_file_location("uwsgidecorators", os.path.join(PKG, "uwsgidecorators.py"))
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "uwsgidecorators", mod)
    spec.loader.exec_module(mod)
    return mod


def test_values_from_the_worker_config(uwsgi):
    assert uwsgi.worker_id() == 2
    assert uwsgi.masterpid() == 4242
    assert (uwsgi.numproc, uwsgi.cores, uwsgi.started_on) == (3, 4, 1700000000)
    assert uwsgi.sockets == [7, 8]
    assert uwsgi.is_a_reload is False
    # Keys str, values bytes, the last of a repeated key (uWSGI 2.0.31 on Python 3).
    assert uwsgi.opt == {"module": b"app", "env": b"B=***", "vacuum": b""}
    assert not hasattr(uwsgi, "pidfile")


def test_unsupported_functions_exist_and_refuse_by_name(uwsgi):
    assert hasattr(uwsgi, "cache_get") and "cache_get" in dir(uwsgi)
    with pytest.raises(NotImplementedError, match=r"uwsgi\.cache_get\(\) is not supported"):
        uwsgi.cache_get("k")
    # A value uWSGI has and we do not: not there for hasattr, a clear error otherwise.
    assert not hasattr(uwsgi, "magic_table")
    with pytest.raises(NotImplementedError, match="magic_table"):
        uwsgi.magic_table
    with pytest.raises(AttributeError) as e:
        uwsgi.no_such_thing
    assert not isinstance(e.value, NotImplementedError)
    # The hook uwsgidecorators sets is absent until set: getattr's default works.
    assert getattr(uwsgi, "post_fork_hook", None) is None


def test_logvars_round_trip_as_bytes(uwsgi):
    assert uwsgi.set_logvar("user", "ada") is None
    assert uwsgi.get_logvar("user") == b"ada"
    assert uwsgi.get_logvar(b"user") == b"ada"
    assert uwsgi.get_logvar("nope") is None
    with pytest.raises(TypeError):
        uwsgi.set_logvar("n", 3)


def test_register_signal_targets(uwsgi):
    assert uwsgi._target("") == "one" and uwsgi._target("worker") == "one"
    assert uwsgi._target("workers") == "all" and uwsgi._target("worker3") == 3
    with pytest.raises(NotImplementedError, match="spooler"):
        uwsgi.register_signal(1, "spooler", lambda n: None)
    with pytest.raises(ValueError):
        uwsgi.register_signal(256, "", lambda n: None)
    uwsgi.register_signal(5, "workers", lambda n: None)
    assert uwsgi.signal_registered(5) is True and uwsgi.signal_registered(6) is None


def test_postfork_chain_and_worker_filter(uwsgi, decorators):
    ran = []

    @decorators.postfork
    def everywhere():
        ran.append("all")

    @decorators.postfork(2)
    def only_two():
        ran.append("two")

    @decorators.postfork(1)
    def only_one():
        ran.append("one")

    assert uwsgi.post_fork_hook is not None
    uwsgi._after_fork()
    assert ran == ["all", "two"]


def test_postfork_exception_is_logged_not_raised(uwsgi, decorators, capfd):
    @decorators.postfork
    def broken():
        raise RuntimeError("boom in postfork")

    uwsgi._after_fork()
    assert "boom in postfork" in capfd.readouterr().err


def test_timer_decorator_uses_a_free_signal(uwsgi, decorators):
    @decorators.timer(3)
    def tick(signum):
        pass

    assert uwsgi.signal_registered(0)
    assert uwsgi._timers == [(0, 3.0)]

    @decorators.timer(5, target="workers")
    def tock(signum):
        pass

    assert uwsgi._timers[-1] == (1, 5.0)


def test_unsupported_decorators_refuse_where_applied(decorators):
    with pytest.raises(NotImplementedError, match="uwsgidecorators.spool .*spooler"):
        decorators.spool(lambda: None)
    with pytest.raises(NotImplementedError, match="harakiri"):
        decorators.harakiri(10)


def test_lock_is_exclusive_and_refuses_other_numbers(uwsgi, monkeypatch, tmp_path):
    fd = os.open(str(tmp_path / "lockfile"), os.O_RDWR | os.O_CREAT)
    monkeypatch.setattr(uwsgi, "_LOCK_FD", fd)
    try:
        assert uwsgi.is_locked() is False
        uwsgi.lock()
        assert uwsgi.is_locked() is True
        uwsgi.unlock()
        assert uwsgi.is_locked() is False
        uwsgi.unlock()  # not held: nothing to do, as uWSGI
        with pytest.raises(ValueError, match="Invalid lock number"):
            uwsgi.lock(1)
    finally:
        os.close(fd)
