"""Model kinds through the whole stack: a 3-stage pipeline (compressed cuts) and LiteRT."""

from __future__ import annotations

import asyncio

import numpy as np

from edgekit.client import Client


def test_three_stage_pipeline_overlaps_requests_and_compresses_cuts(server):
    url, token, _ = server
    c = Client(url, token=token)
    # values spread over a range so int8 blocks lose precision visibly on the small ones
    xs = [np.array([[1.0, 0.3, 0.001, 2.0]], np.float32) + i for i in range(4)]  # = --max-queue

    async def many():
        outs = await asyncio.gather(*(c.ainfer("chain3", {"x": x}) for x in xs))
        await c.aclose()
        return outs

    outs = asyncio.run(many())
    for x, out in zip(xs, outs, strict=True):
        exact = 8 * x + 7  # three stages of 2x + 1
        np.testing.assert_allclose(out["y"], exact, rtol=2e-2)
    assert any(not np.array_equal(o["y"], 8 * x + 7) for x, o in zip(xs, outs, strict=True))
    c.infer("chain3", xs[0])
    assert c.last_node == "pi1+pi2+pi3"
    rep = next(r for r in c.status()["replicas"] if r["model"] == "chain3")
    assert rep["nodes"] == ["pi1", "pi2", "pi3"]
    assert rep["peak_outstanding"] >= 2  # several requests were inside the pipeline at once


def test_litert_model_matches_the_interpreter(server, model_files):
    from ai_edge_litert.interpreter import Interpreter

    url, token, _ = server
    c = Client(url, token=token)
    meta = c.metadata("face")
    assert meta["platform"] == "litert" and meta["inputs"][0]["shape"] == [1, 128, 128, 3]
    x = np.random.default_rng(2).random((1, 128, 128, 3), dtype=np.float32)
    out = c.infer("face", x)
    interp = Interpreter(model_path=str(model_files["face"]))
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    for d in interp.get_output_details():
        np.testing.assert_allclose(out[d["name"]], interp.get_tensor(d["index"]), atol=1e-4)
