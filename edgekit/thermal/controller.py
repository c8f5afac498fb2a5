"""ThermalController: polls the node agents at 1 Hz, feeds the policy, steers the router.

The API server starts it with the router (`start(control)`) and merges `status()` into
`GET /edgekit/status` under "thermal". With `enabled=False` it only watches and records
(the benchmark's "policy off" run). Node power goes to the router every tick through
`set_extra(node, "power_w", W)` when the router has it; `node_power_w()` answers the same.

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
from edgekit.thermal.nodeview import NodeView, account_energy, jpi, val
from edgekit.thermal.recorder import Recorder, default_run_dir
from edgekit.thermal.sources import TelemetrySource

log = logging.getLogger("edgekit.thermal")

POLICY_ENV = "EDGEKIT_THERMAL_POLICY"  # "off" = watch and record only
POWER_CAP_ENV = "EDGEKIT_POWER_CAP_W"  # cluster power cap in W

_WEIGHT_STEP = 0.05  # weight changes smaller than this are not pushed to the router


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
        poll_interval_s: float = config.poll_interval_s,
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
        self._poll_interval_s = poll_interval_s
        self._nodes = {n: NodeView(n) for n in (source.nodes() if source else [])}
        self._control: NodeControl | None = None
        self._stats: dict[str, NodeStats] = {}
        self._limit: int | None = None
        self._cap_reason = "no power cap"
        self._decisions: deque[dict[str, Any]] = deque(maxlen=200)
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
            dt = now - self._last_tick_s if self._last_tick_s is not None else 0.0
            self._last_tick_s = now
            for name, node in self._nodes.items():
                self._ingest(node, polled.get(name), sent, now)
                account_energy(node, stats.get(name), now, dt, self._poll_interval_s)
                self._decide(node, now)
            self._power_cap(stats)
            self._apply()
            self._record(now)
            set_extra = getattr(self._control, "set_extra", None)
            if set_extra is not None:
                for name, node in self._nodes.items():
                    watts = None if self._stale(node, now) else val(node.last, "power_w")
                    if watts is not None:
                        set_extra(name, "power_w", watts)

    def _ingest(self, node: NodeView, reply: dict[str, Any] | None, sent: float,
                now: float) -> None:
        if not reply:
            return
        samples = [s for s in reply.get("samples", []) if s.get("seq", 0) > node.seq]
        if reply.get("now_node") is not None:
            node.skew_s = round(reply["now_node"] - (sent + now) / 2, 3)
        for s in samples:
            node.seq, node.last, node.recv_head_s = s["seq"], s, now
            temp = val(s, "temp_c")
            if temp is None:
                continue
            if node.temps and s["t_node"] <= node.temps[-1][0]:
                node.temps.clear()  # node clock stepped back: the old series is meaningless
            node.temps.append((s["t_node"], temp))

    def _stale(self, node: NodeView, now: float) -> bool:
        return node.recv_head_s is None or now - node.recv_head_s > config.stale_after_s

    def _decide(self, node: NodeView, now: float) -> None:
        thr = val(node.last, "throttled") or {}
        uv = bool(thr.get("under_voltage_now")) or bool(val(node.last, "under_voltage"))
        stale = self._stale(node, now)
        # the latest sample decides whether there is a sensor: a zone that vanished must not
        # leave the policy steering by its last reading forever
        sensor_missing = not stale and val(node.last, "temp_c") is None
        if sensor_missing and node.name not in self._sensor_warned:
            self._sensor_warned.add(node.name)
            log.warning("%s: no temperature sensor (%s): thermal state unknown, weight "
                        "unchanged", node.name, _temp_detail(node.last))
        inp = policy.NodeInput(
            node.name,
            now,
            tuple(node.temps) if not (stale or sensor_missing) else (),
            throttled_now=any(
                thr.get(k) for k in ("freq_capped_now", "throttled_now", "soft_temp_limit_now")
            ),
            under_voltage_now=uv,
            stale=stale,
            sensor_detail=_temp_detail(node.last) if sensor_missing else "",
        )
        node.pstate, node.decision = policy.decide(node.pstate, inp, self.cfg)

    def _power_cap(self, stats: dict[str, NodeStats]) -> None:
        if self.power_cap_w is None:
            return
        powers = [
            val(n.last, "power_w")
            for n in self._nodes.values()
            if not self._stale(n, self._last_tick_s or 0)
        ]
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
            self.recorder.telemetry({"t_head_s": now, **row})

    def _apply(self) -> None:
        # marginal J/inference: idle power is paid wherever requests go, and counting it would
        # make a node that gets fewer requests look less efficient and starve it further
        factors = (
            policy.efficiency_factors({n: jpi(v, 3) for n, v in self._nodes.items()})
            if self._limit is not None
            else {}
        )
        for node in self._nodes.values():
            d = node.decision
            if d is None:
                continue
            weight = round(max(self.cfg.min_weight, d.weight * factors.get(node.name, 1.0)), 3)
            prev = node.applied
            changed_state = prev is None or prev[0] != d.state
            if not changed_state and prev is not None and abs(prev[1] - weight) < _WEIGHT_STEP:
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
        """Latest measured/estimated power per node (W); None when unknown or stale.
        Serving copies it into `NodeStats.extra["power_w"]` for energy per inference."""
        with self._lock:
            now = self._last_tick_s or self._clock()
            return {
                n: (None if self._stale(v, now) else val(v.last, "power_w"))
                for n, v in self._nodes.items()
            }

    def _node_rows(self, now: float) -> dict[str, dict[str, Any]]:
        rows = {}
        for name, node in self._nodes.items():
            row = nodeview.row(node, self._stats.get(name), enabled=self.enabled,
                               stale=self._stale(node, now), now=now)
            row["temp_sensor"], row["temp_sensor_detail"] = _temp_sensor(node)
            rows[name] = row
        return rows

    def status(self) -> dict[str, Any]:
        """JSON-able state for `/edgekit/status` (key "thermal") and `edgekit monitor`."""
        with self._lock:
            now = self._last_tick_s or self._clock()
            rows = self._node_rows(now)
            for name, row in rows.items():
                row["temp_history"] = [round(c, 2) for _, c in list(self._nodes[name].temps)[-60:]]
            rps = sum(r["requests_per_s"] or 0.0 for r in rows.values())
            watts = [
                r["power_w"] for r in rows.values() if r["power_w"] is not None and not r["stale"]
            ]
            e0 = sum(v.energy_win[0][1] for v in self._nodes.values() if v.energy_win)
            e1 = sum(v.energy_win[-1][1] for v in self._nodes.values() if v.energy_win)
            c0 = sum(v.energy_win[0][2] for v in self._nodes.values() if v.energy_win)
            c1 = sum(v.energy_win[-1][2] for v in self._nodes.values() if v.energy_win)
            return {
                "enabled": self.enabled,
                "t_head_s": now,
                "policy": self.cfg.__dict__,
                "power_cap_w": self.power_cap_w,
                "admission_limit": self._limit,
                "cap_reason": self._cap_reason,
                "run_dir": str(self.recorder.run_dir) if self.recorder else None,
                "nodes": rows,
                "temp_sensor_missing": sorted(
                    n for n, r in rows.items() if r["temp_sensor"] == "missing"),
                "cluster": {
                    "requests_per_s": round(rps, 3),
                    "power_w": round(sum(watts), 3) if watts else None,
                    "energy_j": round(sum(v.energy_j for v in self._nodes.values()), 2),
                    "j_per_inference": round((e1 - e0) / (c1 - c0), 4) if c1 > c0 else None,
                },
                "decisions": list(self._decisions)[-50:],
            }


def _temp_detail(sample: dict[str, Any] | None) -> str:
    """The agent's reason for an absent temperature (the path or command it tried)."""
    reading = (sample or {}).get("temp_c")
    return str(reading.get("detail") or "") if isinstance(reading, dict) else ""


def _temp_sensor(node: NodeView) -> tuple[str | None, str]:
    """"present", "missing" (with the agent's reason) or None before any sample arrived."""
    if node.last is None:
        return None, ""
    if val(node.last, "temp_c") is None:
        return "missing", _temp_detail(node.last) or "no temperature in the node's samples"
    return "present", ""
