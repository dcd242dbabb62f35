"""The optional native fast path: `amy_worker._native`, the uwsgi vars parser in
C (src/worker/native/amy_native.c), built against CPython's stable ABI with the
binary and shipped in the package bundle as `NATIVE_KEY` (its bytes as a latin-1
string). It loads from a memfd, so nothing is written to disk and the app's venv
is untouched; it works in any CPython >= 3.8.

When it is absent (a binary built without a C compiler), refused (another
Python implementation, a free-threaded build), or turned off with
`AMY_EMPEROR_NO_NATIVE=1` in the master's environment, `PARSE_VARS` is None and
protocol.py uses its stdlib parser for everything. Loaded once per process at
import: in preload mode, by the template, and the forked workers inherit it."""

import os
import sys

NATIVE_KEY = "amy_worker/_native.abi3.so"
# Must match CONTRACT_VERSION in amy_native.c: the meaning of parse_vars' result.
CONTRACT_VERSION = 2
_NAME = "amy_worker._native"


def _load():
    if os.environ.get("AMY_EMPEROR_NO_NATIVE", "") not in ("", "0"):
        return None
    spec = getattr(sys.modules.get(__package__), "__spec__", None)
    get_data = getattr(getattr(spec, "loader", None), "get_data", None)
    try:
        blob = get_data(NATIVE_KEY).encode("latin-1") if get_data else b""
    except (KeyError, OSError, UnicodeError):
        blob = b""
    if not blob:
        return None  # a build without a C compiler
    try:
        return load(blob)
    except (ImportError, OSError, AttributeError):
        return None  # not a CPython that takes abi3 modules


def load(blob):
    """The extension module whose shared object is `blob`, loaded from a memfd
    (also used by bench/hotpath.py and the tests on the binary's bundle)."""
    from importlib.machinery import ExtensionFileLoader
    from importlib.util import module_from_spec, spec_from_file_location

    fd = os.memfd_create("amy-worker-native", os.MFD_CLOEXEC)
    try:
        view = memoryview(blob)
        while view:
            view = view[os.write(fd, view):]
        # dlopen() maps the file; the fd is not needed once it is loaded.
        path = "/proc/self/fd/%d" % fd
        loader = ExtensionFileLoader(_NAME, path)
        module = module_from_spec(spec_from_file_location(_NAME, path, loader=loader))
        loader.exec_module(module)
    finally:
        os.close(fd)
    if getattr(module, "CONTRACT_VERSION", None) != CONTRACT_VERSION:
        raise ImportError("contract version %r, expected %d" % (getattr(module, "CONTRACT_VERSION", None), CONTRACT_VERSION))
    sys.modules[_NAME] = module
    return module


_module = _load()
PARSE_VARS = _module.parse_vars if _module is not None else None
