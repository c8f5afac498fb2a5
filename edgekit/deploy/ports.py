"""Ports for the head's long-lived services (Ray's GCS, the inference API), chosen once by a
deploy and kept by the next ones.

Why not `bind(0)`: the kernel hands port 0 binds a port from the ephemeral range
(`net.ipv4.ip_local_port_range`, 32768-60999 by default), which every outgoing connection and
every other listener on port 0 draws from too: Ray's raylets and agents, the workers' tensor
channels. A service that keeps such a port can find it taken when it restarts. Seen in the
demo on a fresh machine: the API exited while the nodes' Ray was still joining, and when the
supervisor restarted it a raylet's gRPC server had its port, so the deploy's readiness check
read HTTP/2 bytes. Ports are drawn from 20000-32767 instead: below the ephemeral range and
above Ray's worker ports (10002-19999, `ray start --min-worker-port/--max-worker-port`).
"""

from __future__ import annotations

import inspect

LOW, HIGH = 20000, 32767


def pick_free(n: int, low: int = LOW, high: int = HIGH) -> list[int]:
    """`n` distinct ports in [low, high] that nothing listens on or holds right now (each is
    bound on every interface while the others are tried). Self-contained: a head node runs
    this function's source with its own Python (`remote_code`)."""
    import random
    import socket

    held, out = [], []
    try:
        for port in random.sample(range(low, high + 1), high - low + 1):
            s = socket.socket()
            try:
                s.bind(("", port))
            except OSError:
                s.close()
                continue
            held.append(s)
            out.append(port)
            if len(out) == n:
                return out
    finally:
        for s in held:
            s.close()
    raise OSError(f"fewer than {n} free ports in {low}-{high}")


def remote_code() -> str:
    """A script printing `pick_free(int(argv[1]))`, for a head node's Python on stdin."""
    return (f"import sys\nLOW, HIGH = {LOW}, {HIGH}\n{inspect.getsource(pick_free)}\n"
            "print(*pick_free(int(sys.argv[1])))\n")
