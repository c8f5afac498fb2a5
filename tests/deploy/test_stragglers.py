"""A deploy with some boards down or slow (issue #16), without a cluster: how a node's Ray
service is read (user unit or edgekit's supervisor) and why it is said not to serve, the
outcome and exit code against --min-nodes, the hints, and raynode's restart backoff. The same
run on the virtual cluster, with a board whose Ray cannot start: test_deploy_degraded.py."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from edgekit.cli._deployview import (
    EXIT_NODES_FAILED,
    EXIT_PARTIAL,
    exit_code,
    headline,
    result_view,
)
from edgekit.deploy import stragglers
from edgekit.deploy.flow import DeployOptions, deploy
from edgekit.deploy.report import RunResult
from edgekit.deploy.stragglers import SEP, RayState, parse, verdict
from edgekit.deploy.verify import Health
from edgekit.errors import InputError
from edgekit.node import raynode

FAULT_LINE = "ek_fault: this board's Ray cannot start"


def screen(renderable, width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return " ".join(console.export_text().split())


def _systemd(active: str, sub: str, restarts: int, status: int, raylet: bool, log: str) -> str:
    return (f"1700000000\nsystemd\nActiveState={active}\nSubState={sub}\nNRestarts={restarts}\n"
            f"ExecMainStatus={status}\n{SEP}\n{'raylet' if raylet else ''}\n{SEP}\n{log}")


def _supervisor(now: int, written: float, svc: dict | None, raylet: bool = False) -> str:
    doc = {"pid": 12, "time": written, "services": {"ray-worker": svc} if svc else {}}
    return f"{now}\nsupervisor\n{json.dumps(doc)}\n{SEP}\n{'raylet' if raylet else ''}\n{SEP}\n"


def test_a_systemd_unit_between_two_failed_starts():
    log = f"starting ray\n{FAULT_LINE}\nedgekit raynode: Ray exited within 60 s of its start 3 " \
          "times in a row; starting it again in 4 s"
    st = parse(_systemd("activating", "auto-restart", 5, 1, False, log))
    assert (st.manager, st.up, st.restarts, st.last_exit) == ("systemd", False, 5, 1)
    assert not st.gave_up and not st.raylet
    # the backoff line is raynode's own: the reason shown is the fault's
    assert stragglers.telling_line(st.log) == FAULT_LINE
    v = verdict("pi2", st, Health(True), 20.0, "/home/me/pis.txt")
    assert v.kind == "ray-start-failed" and v.retrying
    assert v.detail == ("Ray did not start (its Ray service restarted 5 times, last exit "
                        f"status 1): {FAULT_LINE}")
    assert "no redeploy needed" in v.hint and "edgekit logs --nodes /home/me/pis.txt pi2" in v.hint
    assert parse(_systemd("failed", "failed", 9, 1, False, log)).gave_up
    # started again and waiting out its backoff: systemd says 0 for the run now going on,
    # which is not how the last one ended (the 8-node benchmark's report said "exit status 0")
    waiting = parse(_systemd("active", "running", 4, 0, False, log))
    assert (waiting.up, waiting.restarts, waiting.last_exit) == (True, 4, None)
    v = verdict("pi2", waiting, Health(True), 20.0)
    assert v.kind == "ray-start-failed" and "exit status" not in v.detail, v.detail
    assert "restarted 4 times" in v.detail and FAULT_LINE in v.detail


def test_the_supervisor_path_and_a_dead_supervisor():
    up = parse(_supervisor(1000, 999.5, {"running": True, "restarts": 0, "last_exit": None},
                           raylet=True))
    assert (up.manager, up.up, up.raylet, up.gave_up) == ("supervisor", True, True, False)
    failing = parse(_supervisor(1000, 999.5, {"running": False, "restarts": 4,
                                              "last_exit": 1}))
    assert (failing.up, failing.restarts, failing.last_exit) == (False, 4, 1)
    # a status file written long ago: no supervisor runs, nothing will restart Ray
    assert parse(_supervisor(1000, 100.0, {"running": True, "restarts": 0})).gave_up
    assert parse(_supervisor(1000, 999.0, None)).gave_up  # no ray-worker service at all
    v = verdict("pi3", parse(_supervisor(1000, 100.0, {"running": False, "restarts": 2})),
                Health(True), 5.0)
    assert v.kind == "ray-stopped" and not v.retrying and "run the deploy again" in v.hint


def _state(log: str = "", raylet: bool = False, up: bool = False,
           restarts: int = 3) -> RayState:
    return RayState("systemd", up, restarts, 1, False, raylet, log)


def test_why_a_node_does_not_serve():
    served = Health(True, placed={"pi1"})
    timed = _state("[raylet] Timed out waiting for file /tmp/ray/dashboard_agent_listen_port")
    assert verdict("pi2", timed, served, 30).kind == "ray-start-timeout"
    gcs = _state("RuntimeError: Failed to connect to GCS at address 10.0.0.1:6379 within 5 s")
    v = verdict("pi2", gcs, served, 30)
    assert v.kind == "ray-head-unreachable" and "Failed to connect to GCS" in v.detail
    slow = verdict("pi2", _state(raylet=True, restarts=0), served, 30)
    assert slow.kind == "ray-slow" and "after 30 s (a slow board?)" in slow.detail
    assert verdict("pi2", _state(up=True, restarts=0), served, 30).kind == "ray-slow"
    loading = verdict("pi1", _state("ImportError: no onnxruntime", raylet=True), served, 30)
    assert loading.kind == "worker-not-ready" and "ImportError" in loading.detail
    down = Health(False, error="API not answering: connection refused")
    no_api = verdict("pi1", _state(raylet=True), down, 30)
    assert no_api.kind == "no-api" and "connection refused" in no_api.detail
    ssh = verdict("pi2", "timed out", served, 30)
    assert ssh.kind == "unreachable" and "could not be looked at over SSH: timed out" in ssh.detail
    assert ssh.retrying  # its services were started: they keep trying


def _result(min_nodes: int, serving: list[str], missing: dict[str, str]) -> RunResult:
    res = RunResult("deploy", min_nodes=min_nodes, seconds=12.0)
    for n in serving:
        res.node(n).step, res.node(n).healthy = "serving", True
    for n, step in missing.items():
        res.node(n).fail(step, "why", "ray-start-failed" if step == "verify" else "timeout")
        res.node(n).joins_later = step == "verify"
    return res


def test_outcome_and_exit_code_follow_min_nodes():
    degraded = _result(2, ["pi1", "pi3"], {"pi2": "verify", "pi4": "check"})
    assert degraded.outcome == "degraded" and exit_code(degraded) == EXIT_PARTIAL
    text = headline(degraded).plain
    rows = screen(result_view(degraded), 80)
    assert "not serving yet (verify)" in rows and "failed at check" in rows
    assert text.startswith(f"PARTIAL deploy (exit {EXIT_PARTIAL}): serving on pi1, pi3")
    assert "pi2 (at verify; joins when it comes up)" in text and "pi4 (at check)" in text
    doc = degraded.to_dict()
    assert (doc["outcome"], doc["serving"], doc["min_nodes"]) == ("degraded", ["pi1", "pi3"], 2)
    short = _result(3, ["pi1", "pi3"], {"pi2": "verify"})
    assert short.outcome == "failed" and exit_code(short) == EXIT_NODES_FAILED
    assert headline(short).plain.startswith("deploy FAILED: serving on pi1, pi3 only, at "
                                            "least 3 wanted (--min-nodes)")
    full = _result(3, ["pi1", "pi2", "pi3"], {})
    assert full.outcome == "ok" and exit_code(full) == 0


def test_hints_for_nodes_that_were_never_started():
    res = _result(1, ["pi1"], {"pi2": "check", "pi3": "selftest", "pi4": "verify"})
    res.node("pi5").fail("check", "32-bit", "not-fit")
    stragglers.hint_unstarted(res)
    assert "unreachable over SSH at deploy time" in res.node("pi2").hint
    assert "cannot join without a redeploy" in res.node("pi2").hint
    assert res.node("pi3").hint.startswith("not started (selftest failed)")
    assert res.node("pi5").hint.startswith("not started (check failed)")
    assert res.node("pi4").hint == ""  # verify explains its own (verdict)
    assert res.node("pi1").hint == ""


def test_min_nodes_above_the_inventory_is_bad_input(tmp_path: Path):
    inv = tmp_path / "pis.txt"
    inv.write_text("pi@127.0.0.1:1 name=pi1\npi@127.0.0.1:2 name=pi2\n")
    with pytest.raises(InputError, match="--min-nodes 3, but the inventory has 2 nodes"):
        deploy(DeployOptions(inv, tmp_path, min_nodes=3))


def test_raynode_backs_off_after_quick_exits(tmp_path: Path):
    record = tmp_path / raynode.STARTS_FILE
    assert raynode.start_delay(record, 1000.0) == (0, 0.0)  # first start ever
    delays, now = [], 1000.0
    for _ in range(7):  # Ray exits at once, every time
        quick, delay = raynode.start_delay(record, now)
        record.write_text(json.dumps({"started": now + delay, "quick": quick}))
        delays.append(delay)
        now += delay + 3.0
    assert delays == [0.0, 0.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    # a run that lasted a while resets the count: the next start is immediate
    assert raynode.start_delay(record, now + raynode.QUICK_EXIT_S + 1) == (0, 0.0)
    record.write_text("not json")
    assert raynode.start_delay(record, now) == (0, 0.0)
    raynode.back_off(record)  # no wait for a fresh count; the start is recorded
    assert json.loads(record.read_text())["quick"] == 0
