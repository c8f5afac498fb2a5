"""Decoding request bodies off the event loop.

CPython's JSON parser holds the GIL for the whole document (measured: a 20 MB body of floats
stalled every other thread for 0.7-0.9 s on the test host; a Pi 4 is ~4x slower), so a
thread only helps for small bodies. JSON text up to `json_inline_bytes` is parsed in a thread
(a few ms); larger JSON goes to one decode *process*, so the API's event loop (health checks,
other requests) keeps running and the ~12x memory of Python objects lives and dies in that
process, one body at a time (its peak is bounded by the largest JSON limit, see limits.py).
Bodies whose JSON text is at most `LOOP_JSON_BYTES` (binary tensors with a small JSON header,
or a small JSON request) are decoded on the event loop itself: `np.frombuffer` costs nothing
and a short header parses in tens of microseconds, less than the hand-off to a thread (which
also costs the loop a GIL switch per request; measured in benchmarks/serve_head_capacity.py).

The process is started with `spawn` (never `fork`: the API process runs Ray's threads) and
warmed up when the server starts. If it dies (killed for memory), the request gets a 503 and
the next large body starts a new one. It asks the kernel to kill it when the API process dies
(PR_SET_PDEATHSIG): an API killed by SIGKILL or the OOM killer left it behind as an orphan.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import logging
import multiprocessing
import os
import signal
from concurrent.futures.process import BrokenProcessPool

from edgekit.serve.oip import InferRequest, ModelIO, parse_request
from edgekit.serve.router import Saturated

log = logging.getLogger("edgekit.serve")
#: JSON text up to this is parsed on the event loop (a few tens of microseconds)
LOOP_JSON_BYTES = 4096


def _ping() -> bool:
    return True


def _die_with(parent: int) -> None:
    """Initializer of the decode process: SIGKILL when the API process (its parent) dies."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: it exits when its pipe to the API closes
        pass
    if os.getppid() != parent:  # the API died before the line above
        os._exit(0)


class Decoder:
    def __init__(self, json_inline_bytes: int, threads: int = 2):
        self.json_inline_bytes = json_inline_bytes
        self._threads = cf.ThreadPoolExecutor(threads, thread_name_prefix="edgekit-decode")
        self._procs: cf.ProcessPoolExecutor | None = None
        self.in_process = 0  # bodies decoded in the decode process (for status and tests)

    def start(self) -> None:
        """Start the decode process now, so the first large body does not wait for it."""
        self._pool().submit(_ping)

    def _pool(self) -> cf.ProcessPoolExecutor:
        if self._procs is None:
            # spawned from the event loop's (main) thread: the death signal follows that thread
            self._procs = cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_die_with, initargs=(os.getpid(),))
        return self._procs

    async def parse(self, body: bytearray, header_len: str | None, io: ModelIO) -> InferRequest:
        """`oip.parse_request` in a thread or in the decode process (large JSON)."""
        loop = asyncio.get_running_loop()
        text = _json_bytes(body, header_len)
        if text <= LOOP_JSON_BYTES:
            return parse_request(body, header_len, io)
        if text <= self.json_inline_bytes:
            return await loop.run_in_executor(self._threads, parse_request, body, header_len, io)
        self.in_process += 1
        try:
            return await loop.run_in_executor(self._pool(), parse_request, body, header_len, io)
        except BrokenProcessPool:
            log.warning("the decode process died (out of memory?); starting a new one")
            broken, self._procs = self._procs, None
            if broken is not None:
                broken.shutdown(wait=False, cancel_futures=True)
            raise Saturated("the request decoder restarted; retry", 1) from None

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        if self._procs is not None:
            with contextlib.suppress(Exception):
                self._procs.shutdown(wait=False, cancel_futures=True)
            self._procs = None


def _json_bytes(body: bytearray, header_len: str | None) -> int:
    """Length of the JSON text in the body (the whole body when no valid header length)."""
    if header_len is not None and header_len.strip().isdigit() and len(header_len) <= 20:
        return min(int(header_len), len(body))
    return len(body)
