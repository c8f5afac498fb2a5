"""Samples stay typed; they become plain values only at the Ray/JSON boundary and back."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import make_sysroot, set_stat

from edgekit.errors import ClusterError
from edgekit.thermal.agent import NodeAgent, Sampler
from edgekit.thermal.reading import Poll, Sample


def test_sample_round_trips_through_json(tmp_path: Path, vcgencmd_dir: Path) -> None:
    root = make_sysroot(tmp_path / "r")
    s = Sampler("pi1", root)
    set_stat(root, busy=1500, idle=1500)
    (vcgencmd_dir / "throttled").write_text("0x50005")  # under-voltage + capped now
    sample = s.sample()
    back = Sample.from_dict(json.loads(json.dumps(sample.to_dict())))
    assert back == sample
    assert back.capped_now and back.under_voltage_now and back.throttled_any_now
    assert back.zones and all(r.unit == "C" for r in back.zones.values())
    # the JSON shape is the one agent.json and `--json` have always had
    d = sample.to_dict()
    assert d["temp_c"] == {"value": 55.0, "unit": "C", "source": "measured",
                           "detail": d["temp_c"]["detail"]}


def test_malformed_samples_are_refused_naming_the_node() -> None:
    with pytest.raises(ClusterError, match="seq/t_node") as exc:
        Sample.from_dict({"node": "pi2", "t_node": 1.0})
    assert exc.value.where == "pi2"
    with pytest.raises(ClusterError, match="not a sensor reading") as exc:
        Sample.from_dict({"node": "pi2", "seq": 1, "t_node": 1.0, "temp_c": 55.0})
    assert "pi2: temp_c" in str(exc.value.where)
    with pytest.raises(ClusterError, match="not a poll") as exc:
        Poll.from_dict({"now_node": 1.0}, "pi3")
    assert exc.value.where == "pi3"


def test_agent_poll_is_plain_values_and_reads_back(tmp_path: Path, no_vcgencmd) -> None:
    agent = NodeAgent("pi1", interval_s=0.05, root=str(make_sysroot(tmp_path / "r")))
    try:
        deadline = time.monotonic() + 30
        while not agent.since(0) and time.monotonic() < deadline:
            time.sleep(0.05)
        wire = agent.poll(0)
        json.dumps(wire)  # what crosses Ray is plain JSON-able values
        poll = Poll.from_dict(wire, "pi1")
        assert poll.samples and poll.samples[0].node == "pi1"
        assert poll.samples[0].temp_c.value == 55.0 and not poll.samples[0].capped_now
        assert agent.info()["last_error"] is None
    finally:
        agent.stop()


def test_node_status_file_holds_the_sample_as_json(tmp_path: Path, no_vcgencmd) -> None:
    from edgekit.node.agent import snapshot

    root = make_sysroot(tmp_path / "r")
    doc = json.loads(json.dumps(snapshot(tmp_path, Sampler("pi1", root, firmware_clock=False))))
    assert doc["sample"]["node"] == "pi1" and doc["sample"]["temp_c"]["value"] == 55.0
    assert Sample.from_dict(doc["sample"]).temp_c.value == 55.0
