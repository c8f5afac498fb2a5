"""Deadlines per replica: a slow board's calls do not set a fast one's deadline (or the other
way round), and a replica's first calls get the first-call allowance."""

from __future__ import annotations

from edgekit.serve.deadline import Deadlines
from edgekit.serve.settings import Tunables


def test_each_replica_has_its_own_deadline() -> None:
    t = Tunables()
    d = Deadlines(t)
    assert d.for_model("m", "pi1") == t.deadline_first_call_s  # no history yet
    for _ in range(20):
        d.record("m", 0.01, "x86")  # a fast node: 10 ms calls
        d.record("m", 15.0, "pi1")  # an emulated Pi 4: 15 s calls
    assert d.for_model("m", "x86") == t.deadline_floor_s  # 10 x 10 ms is under the floor
    assert d.for_model("m", "pi1") == t.deadline_factor * 15.0
    assert d.for_model("m", "pi2") == t.deadline_first_call_s
    assert d.describe()["m"] == {"pi1": 150.0, "x86": 10.0}


def test_a_fixed_deadline_wins_everywhere() -> None:
    d = Deadlines(Tunables(), {"m": 3.0, "*": 7.0})
    d.record("m", 15.0, "pi1")
    assert d.for_model("m", "pi1") == 3.0 and d.for_model("m", "new") == 3.0
    assert d.for_model("other", "pi1") == 7.0
