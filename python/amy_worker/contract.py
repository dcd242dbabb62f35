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
SCOREBOARD_SIZE = 256
SCOREBOARD_REQ_MAX = SCOREBOARD_SIZE - 42


EXIT_OK = 0
EXIT_APP_LOAD_FAILED = 3
EXIT_CONTRACT = 4
EXIT_MAX_REQUESTS = 5
EXIT_RELOAD_ON_RSS = 6
EXIT_CHECK_FAILED = 7


# The scoreboard page: request start (monotonic, 0.0 idle), requests, bytes sent,
# busy seconds, exceptions, length of "METHOD PATH", that text.
_SB = struct.Struct("<dQQdQH%ds" % SCOREBOARD_REQ_MAX)
