"""Serve's tunables live in serve/settings.Tunables and are honoured where they are used:
body limits (limits.model_io), the p99 window of deadlines and the default memory budget."""

from __future__ import annotations

import psutil
import pytest

from edgekit.serve.deadline import Deadlines
from edgekit.serve.limits import model_io
from edgekit.serve.settings import Tunables
from edgekit.serve.state import default_budget
from edgekit.serve.tensors import TensorSpec


def test_body_limits_follow_the_tunables() -> None:
    spec = [TensorSpec("x", "FP32", (1, 4))]
    t = Tunables(json_chars_per_value=10, header_slack_bytes=100)
    _, lim = model_io(spec, spec, 1 << 20, 1 << 20, 1 << 30, t)
    assert (lim.binary, lim.json) == (16 + 100, 4 * 10 + 100)
    _, default = model_io(spec, spec, 1 << 20, 1 << 20, 1 << 30)
    d = Tunables()
    assert (default.binary, default.json) == (16 + d.header_slack_bytes,
                                              4 * d.json_chars_per_value + d.header_slack_bytes)


def test_a_variable_shape_input_is_capped_by_the_global_limits_only() -> None:
    spec = [TensorSpec("x", "FP32", (-1, 4))]
    _, lim = model_io(spec, spec, 1000, 500, 1 << 30, Tunables(header_slack_bytes=1))
    assert (lim.binary, lim.json) == (1000, 500)


def test_the_p99_window_is_a_tunable() -> None:
    def deadline(t: Tunables) -> float:
        d = Deadlines(t)
        for _ in range(4):
            d.record("m", 15.0, "pi1")  # slow calls first ...
        for _ in range(20):
            d.record("m", 0.01, "pi1")  # ... then only fast ones
        return d.for_model("m", "pi1")

    assert deadline(Tunables(deadline_window_calls=4)) == Tunables().deadline_floor_s
    assert deadline(Tunables()) == Tunables().deadline_factor * 15.0  # still in the window


@pytest.mark.parametrize(("share", "low", "high", "expect"), [
    (1.0, 1, 1 << 20, 1 << 20),  # capped by the maximum
    (1e-12, 1 << 20, 1 << 40, 1 << 20),  # raised to the minimum
])
def test_default_memory_budget_is_a_share_within_bounds(share, low, high, expect) -> None:
    t = Tunables(memory_budget_share=share, memory_budget_min_bytes=low,
                 memory_budget_max_bytes=high)
    assert default_budget(t) == expect


def test_default_memory_budget_is_an_eighth_of_memory_by_default() -> None:
    t = Tunables()
    eighth = psutil.virtual_memory().total // 8
    assert default_budget(t) == min(t.memory_budget_max_bytes,
                                    max(t.memory_budget_min_bytes, eighth))
