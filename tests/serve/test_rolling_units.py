"""Pieces of a rolling update without a cluster: the router's one-step swap, the real load
error out of Ray's wrapper, the load request's parameters, the memory rule."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest
from ray import exceptions as rex

from edgekit.errors import ModelError
from edgekit.serve.api import _load_parameters
from edgekit.serve.health import load_error, retry_after_s
from edgekit.serve.models import ModelSpec, StageSpec
from edgekit.serve.rollcheck import MEMORY_FACTOR, WORKER_OVERHEAD_BYTES, stage_need
from edgekit.serve.router import NoCapacity, Replica, Router
from edgekit.serve.settings import Tunables


def test_swap_moves_new_requests_and_lets_old_ones_finish():
    router = Router()
    old = Replica("m", ("pi1",), version="v1")
    router.add(old)
    busy = router.acquire("m")
    assert busy is old
    new = Replica("m", ("pi1",), version="v2")
    router.swap([old], [new], "v2 on pi1")
    assert router.acquire("m") is new  # from now on only the new one
    router.release(old, True, 1.0, 1.0)  # the request already on the old one still ends
    assert old.outstanding == 0 and router.nodes["pi1"].stats.alive
    assert [e[2] for e in router.recent_events()][-2:] == ["retired", "switched in"]
    router.swap([new], [], "replacing in place")  # out of routing, nothing in its place
    assert not router.nodes["pi1"].stats.alive
    with pytest.raises(NoCapacity):
        router.acquire("m")


def test_load_error_is_the_constructors_own_not_actordiederror():
    try:
        raise ModelError("sha256 mismatch (expected aa, got bb)", where="node pi3: /r/m.onnx",
                         hint="redeploy")
    except ModelError as exc:
        task = rex.RayTaskError("Worker.__init__", traceback.format_exc(), exc,
                                proctitle="ray::Worker.__init__", pid=1, ip="10.0.0.3")
    text = load_error(rex.ActorDiedError(task))
    assert text.startswith("edgekit.errors.ModelError: node pi3: /r/m.onnx: sha256 mismatch")
    assert "hint: redeploy" in text and "ActorDiedError" not in text
    assert load_error(TimeoutError("slow")) == "TimeoutError: slow"


def test_load_parameters_direct_and_as_tritons_config():
    assert _load_parameters(b"") == {}
    got = _load_parameters(b'{"parameters": {"bundle": "/b/v2", "version": "abc"}}')
    assert got == {"bundle": Path("/b/v2"), "version": "abc"}
    got = _load_parameters(b'{"parameters": {"config": "{\\"bundle\\": \\"/b\\", '
                           b'\\"mode\\": \\"replace\\"}"}}')
    assert got == {"bundle": Path("/b"), "mode": "replace"}
    got = _load_parameters(b'{"parameters": {"nodes": ["pi1", "pi3"]}}')
    assert got == {"nodes": ["pi1", "pi3"]}
    for bad, why in ((b"[1]", "expected"), (b'{"parameters": {"bundle": 3}}', "string"),
                     (b'{"parameters": {"nodes": "pi1"}}', "list of node names"),
                     (b'{"parameters": {"nodes": [1]}}', "list of node names"),
                     (b'{"parameters": {"x": "y"}}', "unknown parameters"),
                     (b'{"parameters": {"config": "[1]"}}', "JSON object"),
                     (b"x" * (64 * 1024 + 1), "64 KiB")):
        with pytest.raises(ValueError, match=why):
            _load_parameters(bad)


def test_memory_rule_counts_the_stage_and_a_worker_process(tmp_path):
    f = tmp_path / "m.onnx"
    f.write_bytes(b"x" * 1000)
    spec = ModelSpec("m", "onnxruntime", [StageSpec(0, f, mem_bytes=100 << 20),
                                          StageSpec(1, f)], f)
    assert stage_need(spec, 0) == int((100 << 20) * MEMORY_FACTOR) + WORKER_OVERHEAD_BYTES
    assert stage_need(spec, 1) == int(2000 * MEMORY_FACTOR) + WORKER_OVERHEAD_BYTES


def test_a_worker_that_keeps_failing_to_load_is_retried_less_and_less_often() -> None:
    """Damaged files on a node: 2, 4, 8 ... s between recreations, never more than 60 s."""
    t = Tunables()
    waits = [retry_after_s(n, t) for n in range(1, 9)]
    assert waits[:5] == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert waits[5:] == [60.0, 60.0, 60.0]
