"""Cuts through real graph structures: skip connections, reused inputs, shared weights, If
bodies reading outer-scope values, and dynamic batch. Each cut is checked by running it."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from model_graphs import if_model, reused_input_model, shared_init_model, skip_model

from edgekit.model import shard
from edgekit.model.plan import Targets, shard_model


def feeds_for(model: onnx.ModelProto, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for i in model.graph.input:
        dims = [d.dim_value or batch for d in i.type.tensor_type.shape.dim]
        out[i.name] = rng.standard_normal(dims).astype(np.float32)
    return out


def cut_at(model: onnx.ModelProto, bounds: list[int], batch: int = 2):
    prep = shard.prepare(model, feeds_for(model, batch))
    stages = [
        shard.extract_stage(prep, a, b, f"s{i}")
        for i, (a, b) in enumerate(itertools.pairwise(bounds))
    ]
    for st in stages:
        onnx.checker.check_model(st)
    return prep, stages


def all_bounds(n: int, k: int):
    for cuts in itertools.combinations(range(1, n), k - 1):
        yield [0, *cuts, n]


@pytest.mark.parametrize("build", [skip_model, reused_input_model, shared_init_model, if_model])
def test_every_cut_reproduces_the_whole_model(build) -> None:
    model = build()
    n = len(model.graph.node)
    for k in (2, 3):
        for bounds in all_bounds(n, k):
            prep, stages = cut_at(model, bounds)
            samples = [feeds_for(model, 2, s) for s in range(3)]
            check = shard.validate(prep.model, stages, samples)
            assert check.exact, bounds


def test_skip_connection_crosses_every_cut_it_spans() -> None:
    _, stages = cut_at(skip_model(), [0, 2, 4])  # mm1 relu | mm2 add
    assert [i.name for i in stages[1].graph.input] == ["a", "b"]
    _, stages = cut_at(skip_model(), [0, 1, 2, 4])
    # `a` is relayed through the middle stage, which passes it on untouched
    assert "a" in [o.name for o in stages[1].graph.output]
    assert [i.name for i in stages[2].graph.input] == ["a", "b"]


def test_reused_graph_input_is_relayed() -> None:
    _, stages = cut_at(reused_input_model(), [0, 2, 4])
    assert {i.name for i in stages[1].graph.input} == {"b", "mask"}
    assert {o.name for o in stages[0].graph.output} == {"b", "mask"}


def test_shared_initializer_is_duplicated_and_counted_on_both_sides() -> None:
    model = shared_init_model()
    prep, stages = cut_at(model, [0, 2, 4])
    assert all("W" in {i.name for i in st.graph.initializer} for st in stages)
    prob = shard.problem(prep, [1.0] * 4)
    from edgekit.model.partition import stage_memory

    w_bytes = 16 * 16 * 4
    assert stage_memory(prob, 0, 2) >= w_bytes and stage_memory(prob, 2, 4) >= w_bytes


def test_if_body_outer_scope_values_become_stage_inputs() -> None:
    model = if_model()
    # cut right before the If: `h` is only read inside the branches, and W lives in a body
    prep, stages = cut_at(model, [0, 3, 5])
    assert {i.name for i in stages[1].graph.input} == {"cond", "h"}
    assert "W" in {i.name for i in stages[1].graph.initializer}
    # onnx.utils.extract_model-style cutting (top-level inputs only) would miss `h`
    check = shard.validate(prep.model, stages, [feeds_for(model, 2, s) for s in range(4)])
    assert check.exact


def test_dynamic_batch_survives_the_cut() -> None:
    model = skip_model()
    prep, stages = cut_at(model, [0, 2, 4], batch=2)
    dim = stages[1].graph.input[0].type.tensor_type.shape.dim[0]
    assert not dim.HasField("dim_value")  # still symbolic
    for batch in (1, 5):
        check = shard.validate(prep.model, stages, [feeds_for(model, batch)])
        assert check.exact


def test_shard_model_end_to_end_on_small_graph() -> None:
    model = skip_model()
    result = shard_model(model, Targets(2), [feeds_for(model, 3)], measure=False)
    assert len(result.models) == 2 and result.validation.exact
    crossing = {t.name for t in result.stages[0].outputs}
    assert crossing >= {"a"} and all(t.bytes > 0 for t in result.stages[0].outputs)
