"""Bounded memory per request: body limits per model, a byte budget shared by the bodies in
flight, and reading a body under timeouts.

Why: a JSON body costs ~12x its size once parsed (a Python object per number), and four 63 MB
bodies at once took a test head past 1 GiB; a 4 GB Pi head would be killed for lack of
memory. So every body is (1) refused with 413 above its model's limit, derived from the
model's input specs (exact for fixed shapes, the global caps for variable ones), (2) charged
against `ByteBudget` before a byte of it is read, its size times a cost factor (503 with
Retry-After when the budget is spent: a retry soon will fit), and (3) read with an idle
timeout and a minimum average rate, so a body that stops arriving is cut off (408).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from edgekit.serve.oip import HEADER_LENGTH, ModelIO, ProtocolError
from edgekit.serve.router import Saturated
from edgekit.serve.settings import Tunables
from edgekit.serve.tensors import TensorSpec

#: API-process bytes per body byte while a request is in flight (measured facts, not
#: choices, so not in settings.Tunables; measured in
#: benchmarks/serve_hostile.py): binary = the body + the tensors Ray serializes from it;
#: JSON = the body + arrays of up to 4x the text (FP64 from "0,") + Ray's copy. The
#: ~12x of parsing a big JSON body happens in the decode process (decode.py), not here.
BINARY_COST = 3
JSON_COST = 6


@dataclass(frozen=True)
class BodyLimits:
    binary: int  # a whole body using the binary tensor extension
    json: int  # JSON text: a whole JSON body, or the JSON header of a binary one


def model_io(
    inputs: list[TensorSpec], outputs: list[TensorSpec], max_body: int, max_json: int,
    budget: int, t: Tunables | None = None,
) -> tuple[ModelIO, BodyLimits]:
    """A model's decode limits from its input specs, capped by the global limits and by what
    the memory budget could ever hold (a body over that is a 413, not a 503 forever)."""
    t = t or Tunables()
    cap_binary = min(max_body, budget // BINARY_COST)
    cap_json = min(max_json, budget // JSON_COST)
    fixed = [s.fixed_bytes for s in inputs]
    tensor_limit = {s.name: min(f, cap_binary) if f is not None else cap_binary
                    for s, f in zip(inputs, fixed, strict=True)}
    binary, text = cap_binary, cap_json
    if inputs and all(f is not None for f in fixed):
        values = sum(math.prod(s.shape) for s in inputs)
        binary = min(cap_binary, sum(f or 0 for f in fixed) + t.header_slack_bytes)
        text = min(cap_json, values * t.json_chars_per_value + t.header_slack_bytes)
    io = ModelIO(tuple(inputs), tuple(outputs), tensor_limit)
    return io, BodyLimits(binary, text)


class OverBudget(Saturated):
    """The bytes of the bodies in flight would pass the memory budget: 503, retry soon."""


class ByteBudget:
    """Bytes the request bodies in flight may cost; used from the event loop only."""

    def __init__(self, total: int):
        self.total = total
        self.used = 0
        self.peak = 0
        self.refused = 0

    def take(self, n: int) -> None:
        if self.used + n > self.total:
            self.refused += 1
            raise OverBudget(
                f"request bodies in flight would pass the memory budget of {self.total} bytes",
                1,
            )
        self.used += n
        self.peak = max(self.peak, self.used)

    def give(self, n: int) -> None:
        self.used -= n


class Reservation:
    """What one request holds of the budget; `release` gives it all back (idempotent)."""

    def __init__(self, budget: ByteBudget):
        self.budget = budget
        self.held = 0

    def grow(self, n: int) -> None:
        self.budget.take(n)
        self.held += n

    def release(self) -> None:
        self.budget.give(self.held)
        self.held = 0


async def read_body(
    request: web.Request, limits: BodyLimits, held: Reservation, t: Tunables
) -> bytes | bytearray:
    """The body, charged to `held` before it is read; 413 over the limit, 408 when it stalls
    (no byte for `body_idle_timeout_s`) or arrives slower than `body_min_rate_bps` on
    average, 503 (OverBudget) when the budget cannot take it now."""
    binary = HEADER_LENGTH in request.headers
    limit = limits.binary if binary else limits.json
    cost = BINARY_COST if binary else JSON_COST
    declared = request.content_length
    if declared is not None and declared > limit:
        raise ProtocolError(f"request body of {declared} bytes is over this model's limit of "
                            f"{limit} bytes ({'binary' if binary else 'JSON'})", 413)
    buf = bytearray()
    whole: bytes | None = None  # a declared body that arrived as one chunk: used as it is
    if declared:
        held.grow(declared * cost)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + t.body_idle_timeout_s + (declared or limit) / t.body_min_rate_bps
    pos = 0
    while True:
        try:
            chunk = request.content.read_nowait()  # what has arrived: taken without a wait
            if not chunk and not request.content.at_eof():
                wait = min(t.body_idle_timeout_s, deadline - loop.time())
                if wait <= 0:
                    raise TimeoutError
                chunk = await asyncio.wait_for(request.content.readany(), wait)
        except TimeoutError:
            raise ProtocolError(f"request body stalled after {pos} of "
                                f"{declared if declared is not None else '?'} bytes", 408) from None
        except (ConnectionError, HttpProcessingError):
            raise ProtocolError(f"request body incomplete after {pos} bytes", 400) from None
        if not chunk:
            break
        if pos + len(chunk) > limit:
            raise ProtocolError(f"request body is over this model's limit of {limit} bytes", 413)
        if declared is None:
            held.grow(len(chunk) * cost)
            buf += chunk
        elif pos == 0 and len(chunk) == declared:
            whole = chunk  # the usual case: no zero-filled buffer, no copy
        else:  # in pieces (aiohttp never hands more than Content-Length: `whole` is final)
            if not buf:
                buf = bytearray(declared)
            buf[pos : pos + len(chunk)] = chunk
        pos += len(chunk)
    if whole is not None:
        return whole
    return buf if declared is None or pos == declared else buf[:pos]
