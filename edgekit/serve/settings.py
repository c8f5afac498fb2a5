"""Serving's tunables, the one module serve keeps them in (units in the names).

`ServeConfig.tunables` overrides them. What `edgekit serve` takes as options (body caps,
deadlines, queue length) is `ServeConfig` itself (state.py); constants that are measured
facts rather than choices (limits.BINARY_COST) stay next to the code they describe.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tunables:
    health_period_s: float = 1.0  # seconds between health rounds (pings, dead-worker repair)
    ping_timeout_s: float = 10.0  # a ping unanswered this long takes the replica out of routing
    recreate_backoff_s: float = 2.0  # pause after a failed attempt to recreate a dead worker,
    recreate_backoff_max_s: float = 60.0  # doubling per failure in a row up to this (a model
    # that cannot load there, e.g. damaged files, is not retried every 2 s for ever)
    worker_start_timeout_s: float = 120.0  # a (re)created worker must load its model within this
    retry_deadline_s: float = 60.0  # an accepted request waits this long for a live replica
    retry_poll_s: float = 0.02  # how often a waiting retry looks for a free replica
    drain_timeout_s: float = 30.0  # a rolling update waits this long for an old replica's
    # requests to finish before stopping it (any still on it then fail over: none is lost)
    resource_sliver: float = 0.001  # share of `edgekit-node-<name>` each worker asks for
    # --- the direct tensor channel (channel.py) ---
    channel_ping_s: float = 1.0  # a channel quiet this long gets a PING (answered off-compute)
    channel_dead_after_s: float = 4.0  # nothing, not even a PONG, this long: the peer is gone
    channel_connect_timeout_s: float = 10.0  # dial + handshake (+ a stage link) must take less
    channel_max_frame_bytes: int = 1 << 30  # a frame over this from an authenticated peer: a bug
    # --- peers that stall (docs/SERVING.md "Limits and timeouts") ---
    keepalive_timeout_s: float = 15.0  # idle connection, or one still sending headers: closed
    lingering_s: float = 2.0  # unread body bytes after an early answer are drained this long
    body_idle_timeout_s: float = 10.0  # no body byte for this long: 408, connection closed
    body_min_rate_bps: float = 256 * 1024  # a body slower than this on average: 408
    deadline_floor_s: float = 10.0  # a worker call's default deadline is at least this, or
    deadline_factor: float = 10.0  # this many times the model's recent p99 call time there
    deadline_first_call_s: float = 300.0  # a replica's calls before it has a p99 (a board's
    # first run includes ONNX Runtime's lazy set-up: 15 s for the classifier on an emulated Pi 4)
    deadline_window_calls: int = 256  # recent call times kept per model and replica for its p99
    # --- memory and logs ---
    json_inline_bytes: int = 256 * 1024  # JSON up to this is parsed in a thread, more in a process
    json_chars_per_value: int = 32  # JSON text allowed per tensor value ("-1.2345678e-05, " is 16)
    header_slack_bytes: int = 64 * 1024  # room for the JSON around the tensors (names, shapes)
    # the memory budget of bodies in flight when --memory-budget-mb is not given: this share of
    # the machine's memory, within min..max (a 4 GB Pi 4 head: ~470 MiB; its Ray head and
    # workers need the rest)
    memory_budget_share: float = 1 / 8
    memory_budget_min_bytes: int = 64 << 20
    memory_budget_max_bytes: int = 1 << 30
    join_wait_s: float = 60.0  # a cluster with no edgekit node yet (a deploy's first start: the
    # API comes up while the nodes' Ray joins) is waited for this long before start fails
    name_wait_s: float = 10.0  # a model name another server's workers hold: wait for it this long
    log_lines: int = 10  # at most this many request-caused log lines ...
    log_interval_s: float = 10.0  # ... per this many seconds, then one "suppressed K" line
