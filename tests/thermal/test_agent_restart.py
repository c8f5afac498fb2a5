"""A node's agent started again (its node rebooted, Ray recreated the actor) counts its
samples from 1 again. The head must take its data at once, not wait until the new count
passes the old one (issue 16: a rebooted node stayed at stale half weight). Real agents
(edgekit.thermal.agent.NodeAgent) over sysroot folders, polled as RayAgentSource polls them
(the plain-values answer read back into a Poll), with a fake router."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import make_sysroot
from fakes import FakeControl

from edgekit.serve.control import NodeStats
from edgekit.thermal.agent import NodeAgent
from edgekit.thermal.controller import ThermalController
from edgekit.thermal.reading import Poll


class AgentSource:
    """node -> a NodeAgent in this process, answering like the Ray actor does."""

    def __init__(self, roots: dict[str, Path]):
        self.roots = roots
        self.agents = {n: self._start(n) for n in roots}

    def _start(self, node: str) -> NodeAgent:
        return NodeAgent(node, interval_s=0.02, root=str(self.roots[node]))

    def reboot(self, node: str) -> NodeAgent:
        self.agents[node].stop()
        self.agents[node] = self._start(node)
        return self.agents[node]

    def nodes(self) -> list[str]:
        return list(self.agents)

    def poll(self, after_seq: dict[str, int]) -> dict[str, Poll | None]:
        return {n: Poll.from_dict(a.poll(after_seq.get(n, 0)), n) for n, a in self.agents.items()}

    def stop(self) -> None:
        for a in self.agents.values():
            a.stop()


def _samples(agent: NodeAgent, n: int) -> None:
    deadline = time.monotonic() + 30
    while len(agent.since(0)) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(agent.since(0)) >= n


def test_a_restarted_agents_samples_are_taken_at_the_first_poll(tmp_path: Path,
                                                                 no_vcgencmd) -> None:
    source = AgentSource({"pi1": make_sysroot(tmp_path / "pi1")})
    try:
        ctl = ThermalController(source, run_dir=tmp_path / "run")
        ctl.attach(FakeControl({"pi1": NodeStats("pi1")}))
        _samples(source.agents["pi1"], 40)
        ctl.tick()
        view = ctl._nodes["pi1"]
        assert view.seq >= 40 and view.agent_id == source.agents["pi1"].agent_id
        new = source.reboot("pi1")
        _samples(new, 2)
        assert len(new.since(view.seq)) >= 2  # another agent's count: everything kept
        ctl.tick()
        assert view.agent_id == new.agent_id and view.last is not None
        assert view.last.seq <= len(new.since(0)) < 40  # the new agent's samples, at once
        row = ctl.status()["nodes"]["pi1"]
        assert not row["stale"] and row["temp_c"] == 55.0
    finally:
        source.stop()
