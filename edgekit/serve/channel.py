"""The head's end of the direct tensor channel: one authenticated connection per worker, on
the API server's event loop.

Sending: `transport.writelines` of the frame's buffers; under uvloop that is one `writev`
with the tensors still views of the HTTP body (no join, no copy). Receiving: a
`BufferedProtocol` reads into a staging buffer; a frame that fits is cut out of it (one copy
of a small reply), a larger one gets its own buffer, read into directly, whose views become
the output tensors (no copy of a large reply).

A connection that closes, resets or goes silent (no frame, not even a PONG, for
`dead_after_s`: a board that lost power sends no FIN) fails every request in flight on its
replica with ChannelLost; the worker pool retries them elsewhere, as for a dead Ray worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edgekit.serve import chanauth, frames

_STAGING = 256 * 1024
_JOIN_BYTES = 16 * 1024  # frames up to this are joined (cheaper than a gather of small parts)


class ChannelLost(ConnectionError):
    """The connection to a worker (or a link of its pipeline) broke with requests on it."""


OnFrame = Callable[["Channel", frames.Header, Any], None]
OnLost = Callable[["Channel", BaseException | None], None]


class Channel(asyncio.BufferedProtocol):
    def __init__(self, label: str, on_frame: OnFrame, on_lost: OnLost, max_body: int):
        self.label = label
        self.on_frame, self.on_lost = on_frame, on_lost
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.last_rx = time.monotonic()
        self._stage = bytearray(_STAGING)
        self._view = memoryview(self._stage)
        self._have = 0
        self._big: np.ndarray | None = None  # a large frame's own buffer while it arrives
        self._big_head: frames.Header | None = None
        self._big_have = 0

    # --- asyncio protocol ----------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._big is not None:
            return memoryview(self._big)[self._big_have :]
        return self._view[self._have :]

    def buffer_updated(self, nbytes: int) -> None:
        self.last_rx = time.monotonic()
        try:
            if self._big is not None:
                self._big_have += nbytes
                if self._big_have == len(self._big):
                    head, body = self._big_head, self._big
                    self._big, self._big_head = None, None
                    self.on_frame(self, head, body)  # type: ignore[arg-type]
                return
            self._have += nbytes
            self._cut_frames()
        except frames.FrameError as exc:
            self.close(exc)

    def _cut_frames(self) -> None:
        hsize, pos = frames.HEADER.size, 0
        while self._have - pos >= hsize:
            head = frames.Header(self._view[pos : pos + hsize], self.max_body)
            start, end = pos + hsize, pos + hsize + head.body_len
            if end > len(self._stage):  # too large for staging: its own buffer
                self._big, self._big_head = np.empty(head.body_len, np.uint8), head
                have = self._have - start
                memoryview(self._big)[:have] = self._view[start : self._have]
                self._big_have, self._have = have, 0  # end > staging > have: more to come
                return
            if end > self._have:
                break
            self.on_frame(self, head, bytes(self._view[start:end]))
            pos = end
        if pos:
            rest = self._have - pos
            self._view[:rest] = self._view[pos : self._have]
            self._have = rest

    def eof_received(self) -> bool:
        return False  # close

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.on_lost(self, exc)

    # --- use ---------------------------------------------------------------------------
    def send(self, parts: list[Any]) -> None:
        if self.closed or self.transport is None:
            raise ChannelLost(f"channel to {self.label} is closed")
        if len(parts) <= 8 and sum(len(p) for p in parts) <= _JOIN_BYTES:
            self.transport.write(b"".join(parts))  # small: one buffer, one send
        else:
            self.transport.writelines(parts)

    def ping(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(frames.encode_bare(frames.PING))

    def close(self, why: BaseException | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self.on_lost(self, why)


async def open_channel(address: tuple[str, int], key: bytes, identity: str,
                       on_frame: OnFrame, on_lost: OnLost, max_body: int) -> Channel:
    """Dial and authenticate (in a thread: it blocks for one round trip), then hand the socket
    to the event loop."""
    loop = asyncio.get_running_loop()
    host, port = address
    sock = await loop.run_in_executor(None, chanauth.dial, host, port, key, identity,
                                      chanauth.ROLE_HEAD)
    try:
        sock.setblocking(False)
        _, proto = await loop.create_connection(
            lambda: Channel(identity, on_frame, on_lost, max_body), sock=sock)
    except BaseException:
        with contextlib.suppress(OSError):
            sock.close()
        raise
    return proto  # type: ignore[return-value]
