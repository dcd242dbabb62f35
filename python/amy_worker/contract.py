"""The Python side of src/worker/contract.rs: both change together."""

import struct


ENV_CONFIG = "AMY_EMPEROR_WORKER"
FD_CONTROL = 3
FD_MASTER_ALIVE = 4
FD_SCOREBOARD = 5
FD_SOURCE = 6
FD_FIRST_LISTENER = 7
MSG_READY = b"ready\n"
MSG_FAILED = b"failed"
SCOREBOARD_SIZE = 1024
SCOREBOARD_REQ_MAX = 256 - 42


EXIT_OK = 0
EXIT_APP_LOAD_FAILED = 3
EXIT_CONTRACT = 4
EXIT_MAX_REQUESTS = 5
EXIT_RELOAD_ON_RSS = 6
EXIT_CHECK_FAILED = 7
EXIT_RELOAD_ON_AS = 8
EXIT_LIMIT_AS = 9


# The scoreboard page: request start (monotonic, 0.0 idle), requests, bytes sent,
# busy seconds, exceptions, length of "METHOD PATH", that text.
_SB = struct.Struct("<dQQdQH%ds" % SCOREBOARD_REQ_MAX)

# The counters after it, as indexes into the page viewed as u64 (`memoryview.cast("Q")`):
# requests by status class 1xx..5xx and "other", in flight, slow, histogram
# buckets (HISTOGRAM_BOUNDS then +Inf), requests per listener.
SB_BY_STATUS = 256 // 8
SB_STATUS_OTHER = SB_BY_STATUS + 5
SB_IN_FLIGHT = 304 // 8
SB_SLOW = 312 // 8
SB_HISTOGRAM = 320 // 8
SB_BY_LISTENER = 448 // 8
SB_LISTENER_SLOTS = 8
# What the worker runs with (bit 0: the native uwsgi-vars parser), written once.
SB_FEATURES = 512 // 8
SB_FEATURE_NATIVE = 1
HISTOGRAM_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# Status text's first character -> its class counter.
SB_CLASS_OF = {str(d): SB_BY_STATUS + d - 1 for d in range(1, 6)}

# Before a harakiri kill (to the pid): log the stuck request's stack, answer 504.
SIGNAL_HARAKIRI_DUMP = 12  # SIGUSR2
