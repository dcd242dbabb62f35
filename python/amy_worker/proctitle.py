"""Process titles, so `ps` and `pgrep -f` tell the processes apart.

Stdlib only and fork-safe: the argv area (arg_start..arg_end from
/proc/self/stat, fields 48 and 49) is overwritten through /proc/self/mem with
the title, NUL-padded; the kernel then shows it as /proc/PID/cmdline. A title
longer than the area is cut. `comm` (the short name `top` shows) is set with
prctl(PR_SET_NAME) when ctypes is importable. Any failure is silent: a title is
a convenience, never a reason not to serve."""

PR_SET_NAME = 15


def set_title(title, comm=None):
    """Replace this process's command line by `title` and, if given, its comm
    by `comm` (at most 15 bytes); True if the command line was written. Call it
    before starting threads: they inherit comm when created."""
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        # Fields after the parenthesised comm (which may hold spaces) start at field 3.
        fields = stat[stat.rindex(b")") + 2 :].split()
        arg_start, arg_end = int(fields[48 - 3]), int(fields[49 - 3])
        size = arg_end - arg_start
        if size <= 1:
            return False
        data = title.encode("utf-8", "replace")[: size - 1]
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(arg_start)
            mem.write(data + b"\0" * (size - len(data)))
    except (OSError, ValueError, IndexError):
        return False
    if comm:
        _set_comm(comm)
    return True


def _set_comm(comm):
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(comm.encode("utf-8", "replace")[:15]), 0, 0, 0)
    except Exception:
        pass


def set_worker_title(worker_id, generation):
    set_title("amy-emperor worker %s gen %s" % (worker_id, generation), "amy-worker %s" % worker_id)


def set_template_title(generation):
    """For the preload template process (it imports the app once and forks the workers)."""
    set_title("amy-emperor template gen %s" % generation, "amy-template")
