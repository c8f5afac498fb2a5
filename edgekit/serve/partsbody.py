"""An HTTP body sent as its pieces: the OIP JSON header, then each binary output as a view of
its array (oip.encode_parts), written to the socket one after the other.

aiohttp sends a bytes body in one write with the headers, which for a large answer means
joining the pieces first: two copies of every output (tobytes, then the join), 12 % of the
API's CPU on a 1 MB answer (perf, ppocr-rec). aiohttp has no payload for a list of buffers,
so this is one (its Payload interface: size for Content-Length, write to the stream).
Small answers still go as one bytes body: one write is cheaper than several below ~64 KB.
"""

from __future__ import annotations

from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

#: bodies at least this large are sent as pieces; smaller ones are joined
PIECES_FROM_BYTES = 64 * 1024


class PartsPayload(Payload):
    """Buffers (bytes or memoryviews) sent in order, with their total as Content-Length."""

    def __init__(self, parts: list[bytes | memoryview], content_type: str) -> None:
        super().__init__(parts, content_type=content_type)
        self._parts = parts
        self._size = sum(p.nbytes if isinstance(p, memoryview) else len(p) for p in parts)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return b"".join(self._parts).decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        for part in self._parts:
            await writer.write(part)


def body(parts: list[bytes | memoryview], content_type: str) -> bytes | PartsPayload:
    """What to hand web.Response: the joined bytes when small, else the pieces."""
    size = sum(p.nbytes if isinstance(p, memoryview) else len(p) for p in parts)
    if size < PIECES_FROM_BYTES:
        return b"".join(parts)
    return PartsPayload(parts, content_type)
