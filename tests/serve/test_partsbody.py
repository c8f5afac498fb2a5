"""Large binary answers go out as their pieces (partsbody.py): the bytes a client reads are the
same as the joined body, Content-Length is their total, and small bodies stay one buffer."""

from __future__ import annotations

import asyncio

import numpy as np
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from edgekit.serve import partsbody
from edgekit.serve.oip import InferRequest, encode_parts, encode_response


def _req() -> InferRequest:
    return InferRequest(None, {}, None, {}, True)


def test_large_answer_is_sent_as_views_and_arrives_whole() -> None:
    y = np.arange(300_000, dtype=np.float32).reshape(1, 3, 100_000)
    z = np.arange(7, dtype=np.int64)
    parts, header_len = encode_parts("m", "1", _req(), {"y": y, "z": z})
    assert isinstance(parts[1], memoryview)  # no copy of the 1.2 MB output
    joined, same_len = encode_response("m", "1", _req(), {"y": y, "z": z})
    assert same_len == header_len

    async def handler(_: web.Request) -> web.Response:
        kind = "application/octet-stream"
        return web.Response(body=partsbody.body(parts, kind), content_type=kind)

    async def fetch() -> tuple[bytes, str]:
        app = web.Application()
        app.router.add_get("/", handler)
        async with TestClient(TestServer(app)) as client:
            r = await client.get("/")
            return await r.read(), r.headers["Content-Length"]

    got, length = asyncio.run(fetch())
    assert got == joined and int(length) == len(joined)
    assert np.array_equal(np.frombuffer(got[header_len:header_len + y.nbytes], np.float32),
                          y.reshape(-1))


def test_small_and_big_endian_answers() -> None:
    small = partsbody.body([b"{}", memoryview(b"abc")], "application/octet-stream")
    assert small == b"{}abc"
    big_endian = np.arange(20_000, dtype=">f4")
    parts, hl = encode_parts("m", "1", _req(), {"y": big_endian})
    body = partsbody.body(parts, "application/octet-stream")
    assert isinstance(body, partsbody.PartsPayload) and body.size == hl + big_endian.nbytes
    sent = b"".join(bytes(p) for p in parts)
    assert np.array_equal(np.frombuffer(sent[hl:], "<f4"), big_endian.astype("<f4"))
