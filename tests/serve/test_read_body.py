"""limits.read_body: a body that arrives in one piece is used as it is (no zero-filled buffer,
no copy); one in several pieces, or shorter than declared, is assembled exactly."""

from __future__ import annotations

import asyncio
from unittest import mock

from aiohttp import streams
from aiohttp.test_utils import make_mocked_request

from edgekit.serve.limits import BodyLimits, ByteBudget, Reservation, read_body
from edgekit.serve.settings import Tunables

seen: list[int] = []


class Counting(streams.StreamReader):
    """Notes the size of each piece read_body waited for."""

    async def readany(self) -> bytes:
        chunk = await super().readany()
        seen.append(len(chunk))
        return chunk


async def _read(chunks: list[bytes], declared: int | None) -> bytes | bytearray:
    proto = mock.Mock(_reading_paused=False)
    payload = Counting(proto, 2**16, loop=asyncio.get_running_loop())
    seen.clear()
    loop = asyncio.get_running_loop()
    payload.feed_data(chunks[0])
    for i, c in enumerate(chunks[1:], 1):  # later: read_body sees each piece on its own
        loop.call_later(0.01 * i, payload.feed_data, c)
    loop.call_later(0.01 * len(chunks), payload.feed_eof)
    headers = {"Inference-Header-Content-Length": "0"}
    if declared is not None:
        headers["Content-Length"] = str(declared)
    req = make_mocked_request("POST", "/v2/models/m/infer", headers=headers, payload=payload)
    held = Reservation(ByteBudget(1 << 30))
    try:
        return await read_body(req, BodyLimits(binary=1 << 20, json=1 << 20), held, Tunables())
    finally:
        held.release()


def test_one_piece_is_the_chunk_itself():
    body = bytes(range(256)) * 700
    got = asyncio.run(_read([body], len(body)))
    assert got is body or got == body
    assert isinstance(got, bytes)


def test_pieces_are_assembled_in_order():
    parts = [b"a" * 1000, b"b" * 10, b"c" * 70000]
    assert asyncio.run(_read(parts, sum(map(len, parts)))) == b"".join(parts)
    assert seen[:2] == [10, 70000]  # the later pieces did arrive one by one


def test_no_declared_length_and_a_short_body():
    assert asyncio.run(_read([b"xy", b"z"], None)) == b"xyz"
    assert asyncio.run(_read([b"xy"], 5)) == b"xy"  # the client stopped early
