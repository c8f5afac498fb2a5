"""ThermalController: polls the node agents at 1 Hz, feeds the policy, steers the router.

The API server starts it with the router (`start(control)`) and merges `status()` into
`GET /edgekit/status` under "thermal". With `enabled=False` it only watches and records
(the benchmark's "policy off" run). Node power goes to the router every tick through
`report_power(node, W)`; the router turns it into energy per inference (edgekit.serve.energy),
which this controller's status shows too. `node_power_w()` answers the same power.

Built with no arguments (`edgekit serve --controller thermal`), it finds the nodes when
started (the router's nodes and every Ray node with an `edgekit-node-<name>` resource), starts
or reuses each node's agent actor, records under `$EDGEKIT_HOME/telemetry/<utc time>/`, and
reads `EDGEKIT_THERMAL_POLICY` (on/off, default on) and `EDGEKIT_POWER_CAP_W` (unset = no cap).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.errors import InputError
from edgekit.serve.control import DRAINED, NodeControl, NodeStats
from edgekit.thermal import config, nodeview, policy
from edgekit.thermal.config import PolicyConfig
from edgekit.thermal.nodeview import NodeRow, NodeView
from edgekit.thermal.reading import Poll
from edgekit.thermal.recorder import Recorder, default_run_dir
from edgekit.thermal.sources import TelemetrySource

log = logging.getLogger("edgekit.thermal")

POLICY_ENV = "EDGEKIT_THERMAL_POLICY"  # "off" = watch and record only
POWER_CAP_ENV = "EDGEKIT_POWER_CAP_W"  # cluster power cap in W


def _parse_cap(text: str) -> float:
    try:
        cap = float(text)
    except ValueError:
        cap = -1.0
    if cap <= 0:
        raise InputError(
            f"power cap must be a positive number of watts, got {text!r}", where=POWER_CAP_ENV
        )
    return cap


class ThermalController:
    """Implements `edgekit.serve.control.Controller`."""

    name = "thermal"

    def __init__(
        self,
        source: TelemetrySource | None = None,
        cfg: PolicyConfig | None = None,
        *,
        enabled: bool | None = None,
        power_cap_w: float | None = None,
        run_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.source = source
        self.cfg = cfg or PolicyConfig()
        if enabled is None:
            enabled = os.environ.get(POLICY_ENV, "on").strip().lower() not in ("off", "0", "no")
        self.enabled = enabled
        if power_cap_w is None and os.environ.get(POWER_CAP_ENV):
            power_cap_w = _parse_cap(os.environ[POWER_CAP_ENV])
        self.power_cap_w = power_cap_w
        if run_dir is None and source is None:
            run_dir = default_run_dir()
        self._clock = clock
        self._poll_interval_s = config.poll_interval_s
        self._nodes = {n: NodeView(n) for n in (source.nodes() if source else [])}
        self._control: NodeControl | None = None
        self._stats: dict[str, NodeStats] = {}
        self._limit: int | None = None
        self._energy: dict[str, Any] = {}  # the router's energy figures, as of the last tick
        self._cap_reason = "no power cap"
        self._decisions: deque[dict[str, Any]] = deque(maxlen=config.decisions_kept)
        self._sensor_warned: set[str] = set()  # nodes whose missing sensor was logged
        self._last_tick_s: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.recorder = Recorder(run_dir) if run_dir is not None else None

    # --- Controller protocol -------------------------------------------------------------
    def start(self, control: NodeControl) -> None:
        """Attach to the router and poll in a background thread."""
        self._control = control
        if self.source is None:
            self.source = self._ray_source(control)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="thermal-controller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.recorder is not None:
            self.recorder.close()

    def _ray_source(self, control: NodeControl) -> TelemetrySource:
        from edgekit.thermal.agent import start_agent_actor
        from edgekit.thermal.sources import RayAgentSource

        nodes = sorted(set(control.node_stats()) | set(RayAgentSource.discover()))
        for node in nodes:
            try:
                start_agent_actor(node)
            except Exception as exc:  # that node shows as stale; the others are steered
                log.warning("cannot start thermal agent on %s: %s", node, exc)
            self._nodes.setdefault(node, NodeView(node))
        return RayAgentSource(nodes)

    def attach(self, control: NodeControl) -> None:
        """Attach without a thread (callers drive `tick()` themselves, e.g. with a fake clock)."""
        self._control = control

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.tick()
            except Exception:  # keep steering alive; the traceback goes to the log
                log.exception("thermal controller tick failed")
            self._stop.wait(max(0.0, self._poll_interval_s - (time.monotonic() - started)))

    # --- one tick ------------------------------------------------------------------------
    def tick(self) -> None:
        """Poll, decide, apply, record. Safe to call from one thread at a time."""
        if self.source is None:
            return
        sent = self._clock()
        polled = self.source.poll({n: v.seq for n, v in self._nodes.items()})
        now = self._clock()
        stats = self._control.node_stats() if self._control is not None else {}
        with self._lock:
            self._stats = stats
            for name in set(polled) | set(stats):
                self._nodes.setdefault(name, NodeView(name))
            self._last_tick_s = now
            for name, node in self._nodes.items():
                self._ingest(node, polled.get(name), sent, now)
                nodeview.account_energy(node, self._fresh_power(node, now), stats.get(name),
                                        now)
                self._decide(node, now)
            self._power_cap(stats)
            self._apply()
            self._record(now)
            self._report_power(now)

    def _fresh_power(self, node: NodeView, now: float) -> float | None:
        """The node's latest power (W); None when unknown or its telemetry is stale."""
        if node.last is None or self._stale(node, now):
            return None
        return node.last.power_w.value

    def _report_power(self, now: float) -> None:
        """Every fresh power reading to the router, which integrates it into energy per
        inference; then keep the router's figures for this controller's status."""
        if self._control is None:
            return
        for name, node in self._nodes.items():
            watts = self._fresh_power(node, now)
            # a node the router does not route to (an edgekit node serving no model, a
            # node being replaced) has telemetry but no requests: nothing to divide by
            if watts is not None and name in self._stats:
                self._control.report_power(name, watts)
        self._energy = self._control.energy()

    def _ingest(self, node: NodeView, reply: Poll | None, sent: float, now: float) -> None:
        if reply is None:
            return
        if reply.now_node is not None:
            node.skew_s = round(reply.now_node - (sent + now) / 2, 3)
        if reply.agent_id != node.agent_id:  # another agent (the node rebooted): its own count
            node.agent_id, node.seq = reply.agent_id, 0
        for s in reply.samples:
            if s.seq <= node.seq:
                continue
            node.seq, node.last, node.recv_head_s = s.seq, s, now
            temp = s.temp_c.value
            if temp is None:
                continue
            if node.temps and s.t_node <= node.temps[-1][0]:
                node.temps.clear()  # node clock stepped back: the old series is meaningless
            node.temps.append((s.t_node, temp))

    def _stale(self, node: NodeView, now: float) -> bool:
        return node.recv_head_s is None or now - node.recv_head_s > config.stale_after_s

    def _decide(self, node: NodeView, now: float) -> None:
        last = node.last
        stale = self._stale(node, now)
        # the latest sample decides whether there is a sensor: a zone that vanished must not
        # leave the policy steering by its last reading forever
        sensor_missing = not stale and last is not None and last.temp_c.value is None
        detail = last.temp_c.detail if sensor_missing and last is not None else ""
        if sensor_missing and node.name not in self._sensor_warned:
            self._sensor_warned.add(node.name)
            log.warning("%s: no temperature sensor (%s): thermal state unknown, weight "
                        "unchanged", node.name, detail)
        inp = policy.NodeInput(
            node.name,
            now,
            tuple(node.temps) if not (stale or sensor_missing) else (),
            throttled_now=last is not None and last.capped_now,
            under_voltage_now=last is not None and last.under_voltage_now,
            stale=stale,
            sensor_detail=detail,
        )
        node.pstate, node.decision = policy.decide(node.pstate, inp, self.cfg)

    def _power_cap(self, stats: dict[str, NodeStats]) -> None:
        if self.power_cap_w is None:
            return
        now = self._last_tick_s or 0.0
        fresh = [n for n in self._nodes.values() if not self._stale(n, now)]
        powers = [self._fresh_power(n, now) for n in fresh]
        total_w = (
            sum(p for p in powers if p is not None) if any(p is not None for p in powers) else None
        )
        idle_w = sum(config.board_power_w[config.default_board][0] for _ in powers)
        in_flight = sum(s.outstanding for s in stats.values())
        cap = policy.power_cap_step(
            self._limit, self.power_cap_w, total_w, in_flight, idle_w, self.cfg
        )
        if cap.limit != self._limit and self.enabled and self._control is not None:
            self._control.admission_limit(cap.limit, cap.reason)
            self._log_decision("cluster", "admission", float(cap.limit or 0), cap.reason)
        self._limit, self._cap_reason = cap.limit, cap.reason

    def _record(self, now: float) -> None:
        if self.recorder is None:
            return
        for row in self._node_rows(now).values():
            self.recorder.telemetry({"t_head_s": now, **row.to_dict()})

    def _apply(self) -> None:
        # marginal J/inference: idle power is paid wherever requests go, and counting it would
        # make a node that gets fewer requests look less efficient and starve it further
        factors = (
            policy.efficiency_factors(
                {n: v.marginal.j_per_inference(self._last_tick_s or 0.0)
                 for n, v in self._nodes.items()})
            if self._limit is not None
            else {}
        )
        for node in self._nodes.values():
            d = node.decision
            # watched but not routed to (an edgekit node serving no model): nothing to steer
            if d is None or (self._control is not None and node.name not in self._stats):
                continue
            weight = round(max(self.cfg.min_weight, d.weight * factors.get(node.name, 1.0)), 3)
            prev = node.applied
            changed_state = prev is None or prev[0] != d.state
            small = prev is not None and abs(prev[1] - weight) < config.weight_step
            if not changed_state and small:
                continue
            node.applied = (d.state, weight)
            if changed_state or prev is None:
                self._log_decision(node.name, d.state, weight, d.reason)
            if not self.enabled or self._control is None:
                continue
            if d.state == DRAINED:
                if changed_state:
                    self._control.drain(node.name, d.reason)
                continue
            if prev is not None and prev[0] == DRAINED:
                self._control.readmit(node.name, d.reason)
            self._control.set_weight(node.name, weight, d.reason)

    def _log_decision(self, node: str, state: str, weight: float, reason: str) -> None:
        entry = {
            "t_head_s": round(self._last_tick_s or self._clock(), 3),
            "node": node,
            "state": state,
            "weight": weight,
            "reason": reason if self.enabled else f"(policy off, not applied) {reason}",
        }
        self._decisions.append(entry)
        log.info("%s -> %s w=%.2f: %s", node, state, weight, entry["reason"])
        if self.recorder is not None:
            self.recorder.decision(entry)

    # --- read side -----------------------------------------------------------------------
    def node_power_w(self) -> dict[str, float | None]:
        """Latest measured/estimated power per node (W); None when unknown or stale (the
        same figures `tick` reports to the router)."""
        with self._lock:
            now = self._last_tick_s or self._clock()
            return {n: self._fresh_power(v, now) for n, v in self._nodes.items()}

    def _node_rows(self, now: float) -> dict[str, NodeRow]:
        return {
            name: nodeview.row(node, self._stats.get(name), enabled=self.enabled,
                               stale=self._stale(node, now), now=now)
            for name, node in self._nodes.items()
        }

    def status(self) -> dict[str, Any]:
        """JSON-able state for `/edgekit/status` (key "thermal") and `edgekit monitor`."""
        with self._lock:
            now = self._last_tick_s or self._clock()
            rows = self._node_rows(now)
            for name, r in rows.items():
                temps = list(self._nodes[name].temps)[-config.history_shown:]
                r.temp_history = [round(c, 2) for _, c in temps]
            return {
                "enabled": self.enabled,
                "t_head_s": now,
                "policy": self.cfg.__dict__,
                "power_cap_w": self.power_cap_w,
                "admission_limit": self._limit,
                "cap_reason": self._cap_reason,
                "run_dir": str(self.recorder.run_dir) if self.recorder else None,
                "nodes": {n: r.to_dict() for n, r in rows.items()},
                "temp_sensor_missing": sorted(
                    n for n, r in rows.items() if r.temp_sensor == "missing"),
                "cluster": self._cluster(list(rows.values())),
                "decisions": list(self._decisions)[-config.decisions_shown:],
            }

    def _cluster(self, rows: list[NodeRow]) -> dict[str, Any]:
        watts = [r.power_w for r in rows if r.power_w is not None and not r.stale]
        return {
            "requests_per_s": round(sum(r.requests_per_s or 0.0 for r in rows), 3),
            "power_w": round(sum(watts), 3) if watts else None,
            "energy_j": round(sum(r.energy_j or 0.0 for r in rows), 2),
            # the router's figure: each request counted once (edgekit.serve.energy)
            "j_per_inference": self._energy.get("j_per_inference"),
        }
