"""Launch the worker package python/amy_worker/ standalone, exactly as the master
does (src/worker/contract.rs): listening sockets, control and master-alive pipes,
the scoreboard memfd, the package memfd (the same JSON bundle `source_memfd`
writes: every file of python/amy_worker/, which a Rust unit test checks is what
the binary embeds) and `python -c BOOTSTRAP` with the JSON config in
AMY_EMPEROR_WORKER. A harness for the worker, not a second master."""

import functools
import itertools
import json
import mmap
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APPS = os.path.join(ROOT, "tests", "apps")
PACKAGE_DIR = os.path.join(ROOT, "python", "amy_worker")
CONTRACT = os.path.join(ROOT, "src", "worker", "contract.rs")
VENV_PYTHON = os.path.join(ROOT, ".venv-test", "bin", "python")


def _contract_constant(name):
    """Read a constant from contract.rs so the harness cannot drift from it."""
    text = open(CONTRACT).read()
    m = re.search(r'pub const %s: &str = r#"(.*?)"#;\n' % name, text, re.S)
    if m:
        return m.group(1)
    m = re.search(r"pub const %s: [^=]+=\s*(.+?);\n" % name, text, re.S)
    assert m, name
    value = m.group(1).strip()
    if value.startswith('"'):
        return json.loads(value)
    return value


BOOTSTRAP = _contract_constant("BOOTSTRAP")
ENV_CONFIG = _contract_constant("ENV_CONFIG")
FD_CONTROL = int(_contract_constant("FD_CONTROL"))
FD_MASTER_ALIVE = int(_contract_constant("FD_MASTER_ALIVE"))
FD_SCOREBOARD = int(_contract_constant("FD_SCOREBOARD"))
FD_SOURCE = int(_contract_constant("FD_SOURCE"))
FD_FIRST_LISTENER = int(_contract_constant("FD_FIRST_LISTENER"))
SCOREBOARD_SIZE = int(_contract_constant("SCOREBOARD_SIZE"))
SCOREBOARD = struct.Struct("<dQQdQH")
_serial = itertools.count(1)
_port_serial = itertools.count()


def free_port():
    """A loopback port below the ephemeral range (which every test's outgoing
    connections draw from, so a kernel-picked port can be taken before nginx
    binds it); a per-process offset keeps parallel runs apart."""
    span = 12000
    base = (os.getpid() * 2654435761) % span
    for _ in range(span):
        port = 20000 + (base + 7 * next(_port_serial)) % span
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            probe.close()
    raise RuntimeError("no free loopback port")




NATIVE_KEY = _contract_constant("NATIVE_KEY")
# The binary whose bundle holds the native module (built by scripts/test.sh).
BINARY = os.environ.get("AMY_TEST_BINARY") or os.path.join(ROOT, "target", "debug", "amy-emperor")
@functools.lru_cache(maxsize=None)
def native_blob():
    """The native module of the built binary's bundle (`amy-emperor worker-bundle`),
    as a latin-1 str; "" when there is no binary or it has none."""
    if not os.path.exists(BINARY):
        return ""
    out = subprocess.run([BINARY, "worker-bundle"], check=True, capture_output=True).stdout
    return json.loads(out).get(NATIVE_KEY, "")


def package_bundle(native=True):
    """The worker package as the master puts it in the memfd at FD_SOURCE: every
    file of python/amy_worker/ and, with `native` and a built binary, the binary's
    native module (so the tests run what ships: the native parser where it loads,
    the stdlib parser for everything it hands back)."""
    files = {}
    for name in sorted(os.listdir(PACKAGE_DIR)):
        path = os.path.join(PACKAGE_DIR, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                files["amy_worker/" + name] = f.read()
    if native and native_blob():
        files[NATIVE_KEY] = native_blob()
    return json.dumps(files).encode("utf-8")


# Idle tests wait this long first, well past the worker's 50 ms accept()
# timeout (limits.ACCEPT_WAKEUP), so every serving thread sleeps in poll().
PAST_ACCEPT_WAKEUP = 0.4


def idle_wakeups(pid, seconds):
    """Wake-ups of an idle worker: once past PAST_ACCEPT_WAKEUP, its context
    switches over an observation window of `seconds`."""
    time.sleep(PAST_ACCEPT_WAKEUP)
    before = context_switches(pid)
    time.sleep(seconds)  # the observation window, not a wait for readiness
    return context_switches(pid) - before


def context_switches(pid):
    """Voluntary context switches of every thread of `pid` (each wake-up from a
    sleep is one): how idle tests count wake-ups."""
    total = 0
    for name in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/status" % (pid, name)) as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("timed out waiting for " + what)


class Worker:
    """One worker process plus the master-side ends of its fds."""

    def __init__(self, tmp_path, app="pep3333", listeners=("uwsgi-unix",), chdir=APPS, python=VENV_PYTHON, env=None, share=None, native=True, **cfg):
        """`share`: another Worker whose listening sockets this one accepts on too
        (a second process of the same pool). `native=False`: a bundle without the
        native module (the stdlib parser only)."""
        self.tmp_path = tmp_path
        self.serial = next(_serial)
        self.log_path = os.path.join(str(tmp_path), "worker-%d.log" % self.serial)
        self.sockets = []
        self.addresses = []
        specs = []
        for i, kind in enumerate(listeners):
            proto, family = kind.split("-")
            if share is not None:
                s = share.sockets[i]
                addr = share.addresses[i]
            elif family == "unix":
                path = os.path.join(str(tmp_path), "w%d-s%d.sock" % (self.serial, i))
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.bind(path)
                addr = path
            else:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind(("127.0.0.1", 0))
                addr = s.getsockname()
            s.listen(1024)
            self.sockets.append(s)
            self.addresses.append(addr)
            specs.append({"fd": FD_FIRST_LISTENER + i, "proto": proto, "name": kind})
        config = {
            "id": 1,
            "generation": 1,
            "module": app,
            "wsgi_file": None,
            "callable": None,
            "chdir": chdir,
            "pythonpath": [],
            "threads": 1,
            "processes": 1,
            "buffer_size": None,
            "disable_logging": False,
            "max_requests": 0,
            "reload_on_rss_mb": None,
            "harakiri": None,
            "listeners": specs,
        }
        config.update(cfg)
        self.config = config

        control_r, control_w = os.pipe()
        alive_r, alive_w = os.pipe()
        self.control = control_r
        self.alive_w = alive_w
        board = os.memfd_create("amy-scoreboard")
        os.ftruncate(board, SCOREBOARD_SIZE)
        self.scoreboard = mmap.mmap(board, SCOREBOARD_SIZE)
        source = os.memfd_create("amy-worker-package")
        bundle = package_bundle(native)
        assert os.write(source, bundle) == len(bundle)
        os.lseek(source, 0, os.SEEK_SET)
        log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        devnull = os.open(os.devnull, os.O_RDONLY)

        wanted = [(devnull, 0), (log, 1), (log, 2), (control_w, FD_CONTROL), (alive_r, FD_MASTER_ALIVE), (board, FD_SCOREBOARD), (source, FD_SOURCE)]
        wanted += [(s.fileno(), spec["fd"]) for s, spec in zip(self.sockets, specs)]
        # Move every source fd above the targets first so a dup2 never clobbers one.
        high = [(_dup_high(fd), target) for fd, target in wanted]
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for fd, target in high]
        child_env = dict(os.environ if env is None else env)
        child_env[ENV_CONFIG] = json.dumps(config)
        child_env.pop("PYTHONPATH", None)
        self.proc_pid = os.posix_spawn(python, [python, "-c", BOOTSTRAP, "amy-emperor-worker", "1", "1"], child_env, file_actions=actions)
        for fd, _ in high:
            os.close(fd)
        for fd in (control_w, alive_r, board, source, log, devnull):
            os.close(fd)
        self.pid = self.proc_pid
        self.returncode = None

    # -- lifecycle

    def wait_ready(self, timeout=20.0):
        """The contract's readiness: `ready\\n` on the control pipe."""
        r, _, _ = select.select([self.control], [], [], timeout)
        assert r, "worker not ready in %ss; log:\n%s" % (timeout, self.log())
        data = os.read(self.control, 64)
        assert data == b"ready\n", "control pipe said %r; log:\n%s" % (data, self.log())
        return self

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait_exit(self, timeout=10.0):
        wait_for(lambda: self.poll() is not None, timeout, "worker exit")
        return self.returncode

    def kill(self):
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.wait_exit()

    def close(self):
        self.kill()
        for s in self.sockets:
            s.close()
        for fd in (self.control, self.alive_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def master_gone(self):
        os.close(self.alive_w)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def board(self):
        start, requests, sent, seconds, exceptions, n = SCOREBOARD.unpack_from(self.scoreboard, 0)
        text = bytes(self.scoreboard[42 : 42 + n]).decode("latin-1")
        return {"start": start, "requests": requests, "bytes": sent, "seconds": seconds, "exceptions": exceptions, "request": text}


def _dup_high(fd):
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100)


@pytest.fixture
def spawn(tmp_path):
    started = []

    def start(ready=True, **kwargs):
        w = Worker(tmp_path, **kwargs)
        started.append(w)
        if ready:
            w.wait_ready()
        return w

    yield start
    for w in started:
        w.close()


# ------------------------------------------------------------------ clients


def pack_uwsgi(pairs, modifier1=0):
    block = b""
    for key, value in pairs:
        key = key.encode("latin-1") if isinstance(key, str) else key
        value = value.encode("latin-1") if isinstance(value, str) else value
        block += struct.pack("<H", len(key)) + key + struct.pack("<H", len(value)) + value
    return struct.pack("<BHB", modifier1, len(block), 0) + block


def nginx_vars(method="GET", uri="/", body=b"", headers=(), content_type=""):
    """The vars nginx's default uwsgi_params send, in its order."""
    path, _, query = uri.partition("?")
    pairs = [
        ("QUERY_STRING", query),
        ("REQUEST_METHOD", method),
        ("CONTENT_TYPE", content_type),
        ("CONTENT_LENGTH", str(len(body)) if body else ""),
        ("REQUEST_URI", uri),
        ("PATH_INFO", path),
        ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "http"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", "50000"),
        ("SERVER_PORT", "80"),
        ("SERVER_NAME", "localhost"),
        ("HTTP_HOST", "localhost"),
        ("HTTP_USER_AGENT", "test"),
    ]
    pairs += list(headers)
    return pairs


def connect(addr, timeout=15.0):
    family = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(addr)
    return s


def recv_all(s):
    parts = []
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            parts.append(b"<RST>")
            break
        if not chunk:
            break
        parts.append(chunk)
    return b"".join(parts)


def raw_request(addr, data, split=None, shutdown=False):
    """Send bytes (optionally one `split`-sized piece at a time) and read to EOF."""
    s = connect(addr)
    try:
        if split:
            for i in range(0, len(data), split):
                s.sendall(data[i : i + split])
        else:
            s.sendall(data)
        if shutdown:
            s.shutdown(socket.SHUT_WR)
        return recv_all(s)
    finally:
        s.close()


class Response:
    def __init__(self, raw):
        self.raw = raw
        head, sep, self.body = raw.partition(b"\r\n\r\n")
        assert sep, "no header end in %r" % raw[:200]
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        parts = lines[0].split(" ", 2)
        self.protocol = parts[0]
        self.status = int(parts[1])
        self.headers = [tuple(line.split(": ", 1)) for line in lines[1:]]

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body)


def uwsgi(addr, method="GET", uri="/", body=b"", headers=(), split=None, content_type=""):
    packet = pack_uwsgi(nginx_vars(method, uri, body, headers, content_type)) + body
    return Response(raw_request(addr, packet, split=split))


NGINX = "/usr/sbin/nginx"


class Nginx:
    """A throwaway nginx on a loopback port with `uwsgi_pass` to a unix socket."""

    def __init__(self, tmp_path, upstream):
        self.dir = os.path.join(str(tmp_path), "nginx-%d" % next(_serial))
        os.makedirs(os.path.join(self.dir, "logs"))
        self.port = free_port()
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(
                "%(user)sworker_processes 1;\npid %(d)s/nginx.pid;\nerror_log %(d)s/logs/error.log;\n"
                "events { worker_connections 256; }\n"
                "http {\n access_log off;\n client_body_temp_path %(d)s/body;\n"
                " uwsgi_temp_path %(d)s/uwsgi;\n proxy_temp_path %(d)s/proxy;\n"
                " fastcgi_temp_path %(d)s/fastcgi;\n scgi_temp_path %(d)s/scgi;\n"
                " client_max_body_size 64m;\n large_client_header_buffers 4 64k;\n"
                " server {\n  listen 127.0.0.1:%(p)d;\n  location / {\n"
                "   include /etc/nginx/uwsgi_params;\n   uwsgi_pass unix:%(u)s;\n  }\n }\n}\n"
                # As root, nginx's workers would run as nobody: no access to the temp dir.
                % {"d": self.dir, "p": self.port, "u": upstream, "user": "user root;\n" if os.geteuid() == 0 else ""}
            )
        self.proc = subprocess.Popen([NGINX, "-p", self.dir, "-c", conf, "-g", "daemon off;"], stderr=subprocess.PIPE)
        wait_for(self._up, 10, "nginx listening")

    def _up(self):
        assert self.proc.poll() is None, self.proc.stderr.read()
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def error_log(self):
        with open(os.path.join(self.dir, "logs", "error.log")) as f:
            return f.read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def nginx(tmp_path):
    # scripts/test.sh installs nginx: a missing one is a failure, not a skip
    # counted as a pass.
    assert os.path.exists(NGINX), "nginx is not installed (scripts/setup-test-deps.sh installs it)"
    started = []

    def start(upstream):
        n = Nginx(tmp_path, upstream)
        started.append(n)
        return n

    yield start
    for n in started:
        n.close()
