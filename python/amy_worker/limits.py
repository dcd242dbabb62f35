"""Sizes and timeouts of the worker (not part of the contract)."""


MAX_BLOCK = 65535
MAX_VARS = 1024
# Total time a request head (uwsgi vars or HTTP header) may take to arrive once
# its first read came back short.
HEADER_TIMEOUT = 10.0
# Longest wait for the next piece of a request body.
BODY_TIMEOUT = 10.0
# Longest a send to a client may make no progress.
SEND_TIMEOUT = 10.0
# How often a thread idle in accept() wakes to notice a stop.
ACCEPT_WAKEUP = 0.05
# After a response, unread body bytes are drained (so the peer never gets an RST
# instead of our response) up to this many bytes or seconds.
DRAIN_MAX = 16 << 20
DRAIN_TIMEOUT = 5.0
# Extra room after the vars block so a small body arrives in the first read.
READ_SLACK = 8192
