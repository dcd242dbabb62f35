"""Sizes and timeouts of the worker (not part of the contract)."""


MAX_BLOCK = 65535
MAX_VARS = 1024
# http-socket: the request line (nginx's large_client_header_buffers default is
# 8k; longer is 414), one header field line (431) and the number of fields (431,
# Apache's LimitRequestFields). Checked as bytes arrive, not once the head is whole.
MAX_REQUEST_LINE = 8192
MAX_FIELD_LINE = 16384
MAX_FIELDS = 100
# Total time a request head (uwsgi vars or HTTP header) may take to arrive,
# counted from accept(): a head that trickles in is cut at this deadline.
HEADER_TIMEOUT = 10.0
# Longest wait for the next piece of a request body.
BODY_TIMEOUT = 10.0
# Longest a send to a client may make no progress.
SEND_TIMEOUT = 10.0
# How often the watchdog looks for connections past their header deadline: the
# cut lands within this of HEADER_TIMEOUT.
WATCHDOG_TICK = 0.25
# How often a thread idle in accept() wakes to notice a stop.
ACCEPT_WAKEUP = 0.05
# After a response, unread body bytes are drained (so the peer never gets an RST
# instead of our response) up to this many bytes or seconds.
DRAIN_MAX = 16 << 20
DRAIN_TIMEOUT = 5.0
# After a refused request head (400/408/414/431/505): the answer still reaches a
# client that sent a little more, but a trickler cannot hold the worker.
REJECT_DRAIN_TIMEOUT = 0.5
# Extra room after the vars block so a small body arrives in the first read.
READ_SLACK = 8192
# limit-as: a worker whose address space is above this fraction of its
# RLIMIT_AS after a request recycles itself, before an allocation fails.
LIMIT_AS_RECYCLE = 0.9


def apply_limit_as(cfg):
    """limit-as = MB: RLIMIT_AS of this worker (uWSGI sets it in the master for
    every process; here each worker sets its own, after the app import and,
    in preload mode, after the fork, so the template and master are not bound)."""
    mb = int(cfg.get("limit_as_mb") or 0)
    if not mb:
        return
    import resource

    limit = mb * 1024 * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY and hard < limit:
        limit = hard
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
