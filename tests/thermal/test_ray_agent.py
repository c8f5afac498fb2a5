"""The agent as a real Ray actor pinned by the node's custom resource, polled by the controller."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest
from conftest import make_sysroot
from fakes import FakeControl, ManualClock
from ray_auth import token_auth

from edgekit.serve.control import NodeStats
from edgekit.thermal.agent import start_agent_actor, stop_agent_actor
from edgekit.thermal.controller import ThermalController
from edgekit.thermal.sources import RayAgentSource

ray = pytest.importorskip("ray")


@pytest.fixture
def ray_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vcgencmd_dir: Path):
    root = make_sysroot(tmp_path / "pi1", temp_mc=66600)
    monkeypatch.setenv("EDGEKIT_SYSROOT", str(root))  # the raylet and its workers inherit it
    ray_tmp = tempfile.mkdtemp(prefix="ekth-")  # AF_UNIX paths must stay under 107 bytes
    with token_auth(Path(ray_tmp)):
        ray.init(
            num_cpus=1,
            resources={"edgekit-node-pi1": 1},
            include_dashboard=False,
            namespace="edgekit",
            _temp_dir=ray_tmp,
            log_to_driver=False,
        )
        yield root
        ray.shutdown()
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_agent_actor_telemetry_and_stale_when_it_dies(ray_node: Path) -> None:
    assert RayAgentSource.discover() == ["pi1"]
    start_agent_actor("pi1", interval_s=0.2)
    source = RayAgentSource(["pi1"], restart=False)  # a dead agent stays dead here
    deadline = time.monotonic() + 60
    reply = None
    while time.monotonic() < deadline:  # wait for the first sample (start-up, not a timing test)
        reply = source.poll({})["pi1"]
        if reply and reply.samples:
            break
        time.sleep(0.2)
    # typed again on this side of the Ray call (edgekit.thermal.reading.Poll.from_dict)
    assert reply and reply.samples[-1].temp_c.value == 66.6
    assert reply.samples[-1].throttled.source == "measured"  # vcgencmd on PATH

    clock = ManualClock(time.time())
    ctl = ThermalController(source, clock=clock)
    ctl.attach(FakeControl({"pi1": NodeStats("pi1")}))  # the router routes to pi1
    ctl.tick()
    row = ctl.status()["nodes"]["pi1"]
    assert row["temp_c"] == 66.6 and not row["stale"] and abs(row["skew_s"]) < 5

    stop_agent_actor("pi1")
    for _ in range(8):
        clock.t += 1.0
        ctl.tick()
    row = ctl.status()["nodes"]["pi1"]
    assert row["stale"] and "stale" in row["reason"] and row["weight"] == 0.5


def test_an_agent_that_is_gone_is_started_again(ray_node: Path) -> None:
    """A node back from a reboot lost its agent with its raylet: the source starts a new one
    and its data flows again (issue #16: a Pi 5 stayed at half weight until an API restart)."""
    start_agent_actor("pi1", interval_s=0.2)
    source = RayAgentSource(["pi1"])

    def sampled() -> bool:
        reply = source.poll({})["pi1"]
        return bool(reply and reply.samples)

    deadline = time.monotonic() + 60
    while not sampled():
        assert time.monotonic() < deadline, "no first sample"
        time.sleep(0.2)
    stop_agent_actor("pi1")  # as when its node went down with it
    deadline = time.monotonic() + 60
    while not sampled():  # one poll sees it dead, a later one starts and reads a new one
        assert time.monotonic() < deadline, "the agent was not started again"
        time.sleep(0.2)
