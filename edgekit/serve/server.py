"""Entry point of the API server on the head: `run(config)` (blocking) or `serve(config)`:
connect to Ray, place the workers (state.py's `ServerState`), serve the HTTP API (api.py).

Why a thin aiohttp server calling pinned Ray actors instead of Ray Serve: Ray Serve's HTTP
proxy -> router -> replica path adds a proxy hop per request, and its request router sees
custom replica stats only every `request_routing_stats_period_s`; the thermal controller
must be able to drain or re-weight a node between two requests. Measured against a plain Ray
Serve deployment with a JSON ingress in benchmarks/serve_compare.py (docs/SERVING.md,
"Benchmarks", row (c)). Ray is still used for what it is good at: placing workers on nodes by
custom resource, telling the head which nodes are alive, and moving tensors node to node
through its object store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from edgekit.errors import EdgekitError, InputError
from edgekit.serve.api import make_app
from edgekit.serve.quietlog import ServerLogger
from edgekit.serve.state import ServeConfig, ServerState

__all__ = ["ServeConfig", "ServerState", "check_exposure", "connect_ray", "run", "serve"]


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_exposure(config: ServeConfig, token: str | None) -> None:
    """Refuse to serve off loopback without a token (anyone on the network could use the
    cluster) unless the operator said so with `allow_unauthenticated`."""
    if token is None and not is_loopback(config.host) and not config.allow_unauthenticated:
        raise InputError(
            f"refusing to serve on {config.host} without a bearer token: anyone who can reach "
            "it could run inference",
            hint="give --token-file (or $EDGEKIT_SERVE_TOKEN), serve on 127.0.0.1, or pass "
                 "--allow-unauthenticated if that is really meant",
        )


def connect_ray(address: str | None) -> None:
    """Connect this process to the Ray cluster (token auth is read from Ray's env vars)."""
    import ray

    if ray.is_initialized():
        return
    try:
        ray.init(
            address=address or "auto",
            namespace="edgekit",
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise EdgekitError(
            f"cannot connect to Ray at {address or 'auto'}: {exc}",
            hint="is RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) set like the cluster's?",
        ) from exc


async def serve(
    config: ServeConfig,
    on_ready: Callable[[ServerState], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Connect, place workers, serve HTTP until `stop` is set (or SIGINT/SIGTERM)."""
    from aiohttp import web

    token = config.token()
    check_exposure(config, token)
    connect_ray(config.ray_address)
    state = ServerState(config)
    await state.start()
    t = config.tunables
    runner = web.AppRunner(
        make_app(state, token),
        access_log=None,
        keepalive_timeout=t.keepalive_timeout_s,  # also closes a connection stuck in headers
        lingering_time=t.lingering_s,
        logger=ServerLogger(state.badlog),  # aiohttp's parse errors: short, rate-limited
    )
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    try:
        await site.start()
    except OSError as exc:
        await state.stop()
        raise InputError(f"cannot listen on {config.host}:{config.port}: {exc}") from exc
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(RuntimeError, ValueError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
    if on_ready:
        on_ready(state)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await state.stop()


def run(config: ServeConfig, on_ready: Callable[[ServerState], None] | None = None) -> None:
    """Blocking entry point for `edgekit deploy` and `edgekit serve`."""
    import ray

    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(config, on_ready))
    finally:
        ray.shutdown()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when it is installed (it is a dependency): its `writelines` sends a frame's
    buffers with one writev instead of joining them, and its loop costs the API less CPU per
    request (benchmarks/serve_head_capacity.py)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
