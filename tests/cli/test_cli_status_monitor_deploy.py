"""`edgekit status`, `edgekit monitor` and the deploy result rendered at 80 and 120 columns:
every node's name, board, verdict and reason on screen; no raw dicts; a partial deploy said
plainly, with its own exit code."""

from __future__ import annotations

from cli_screens import rows, screen

from edgekit.cli._deployview import (
    EXIT_NODES_FAILED,
    EXIT_PARTIAL,
    PHASES,
    exit_code,
    headline,
    result_view,
    status_view,
)
from edgekit.deploy.report import RunResult
from edgekit.thermal.monitor import render

V1, V0 = "a1b2c3d4e5f60718293a", "0011223344556677aabb"


def _status() -> dict:
    """The shape of edgekit.deploy.ops.status: a serving node, one with a stopped worker,
    one unreachable."""
    def node(**kw: object) -> dict:
        base = {"reachable": True, "error": None, "active": {"cls": V1},
                "kept": {"cls": [V0, V1]}, "services": {"ray-worker": True, "agent": True,
                                                        "supervisor": True},
                "systemd": False, "healthy": True, "kernels": "neon", "onnxruntime": "1.20.1",
                "litert": "1.2.0", "warning": ""}
        return {**base, **kw}

    return {
        "inventory": "pis.txt", "tunnel": True, "api_ready": True, "api_error": "",
        "head": {"where": "pi1", "api_url": "http://127.0.0.1:8000", "ray_address": "x:1"},
        "apps": {"cls": {"version": V1, "bundle": "/b", "plan": ["pi1", "garage-pi"],
                         "served_version": V1}},
        "nodes": {
            "pi1": node(),
            "garage-pi": node(services={"ray-worker": False, "agent": True},
                              healthy=False, kernels=""),
            "pi3": node(reachable=False, active=None, kept=None, services={}, healthy=False,
                        error="timed out connecting to 10.0.0.3:22 after 10 s", kernels=""),
        },
    }


BOARDS = {"pi1": "Pi 4 B r1.4", "garage-pi": "aarch64 4-core 7.8G", "pi3": "Pi 5 B r1.0"}


def test_status_at_80_and_120_columns() -> None:
    for width in (80, 120):
        text = screen(status_view(_status(), BOARDS), width)
        assert max(len(line) for line in text.splitlines()) <= width
        assert "{" not in text and "}" not in text and "'" not in text  # no raw dicts
        by_node = rows(text)
        assert by_node["pi1"].startswith("Pi 4 B r1.4 serving")
        assert by_node["garage-pi"].startswith("aarch64 4-core 7.8G not serving")
        assert "not running: ray-worker" in by_node["garage-pi"]
        assert by_node["pi3"].startswith("Pi 5 B r1.0 unreachable timed out connecting to "
                                         "10.0.0.3:22 after 10 s")
        assert f"model cls: version {V1[:12]}; planned on pi1, garage-pi" in text
    wide = screen(status_view(_status(), BOARDS), 120)
    assert f"cls {V1[:12]}" in rows(wide)["pi1"] and "3/3 up" in rows(wide)["pi1"]
    assert "not shown at 80 columns" in screen(status_view(_status(), BOARDS), 80)


def test_status_says_why_when_the_api_is_down() -> None:
    st = _status()
    st["api_ready"], st["api_error"] = False, "cannot reach the API on pi1: refused"
    st["nodes"]["pi1"]["healthy"] = False
    text = screen(status_view(st, BOARDS), 80)
    assert "NOT ready" in text
    assert "API not ready: cannot reach the API on pi1: refused" in rows(text)["pi1"]


def _monitor_status() -> dict:
    """The shape of /edgekit/status with the thermal controller (edgekit.thermal.nodeview.row)."""
    def row(name: str, temp: float, state: str, reason: str) -> dict:
        return {"node": name, "board": "Raspberry Pi 4 Model B Rev 1.4", "temp_c": temp,
                "temp_history": [temp] * 20, "freq_mhz": 1500, "max_freq_mhz": 1500,
                "throttled": {"any_now": False, "raw": 0}, "power_w": 5.5,
                "power_source": "estimated", "util": 0.8, "requests_per_s": 4.0,
                "p95_ms": 30.0, "j_per_inference": 1.38, "weight": 1.0 if state == "serving"
                else 0.1, "state": state, "reason": reason, "stale": False}

    nodes = {
        "pi1": row("pi1", 52.0, "serving", "serve: headroom to 78°C (T=52.0°C)"),
        "loft-pi4": row("loft-pi4", 84.0, "drained",
                        "drain: T at/above drain 78°C (T=84.0°C slope=+1.00°C/s "
                        "predicted 90.0°C in 6s)"),
    }
    thermal = {"nodes": nodes, "enabled": True, "cluster": {"requests_per_s": 8.0},
               "decisions": [{"node": "loft-pi4", "state": "drained", "weight": 0.1,
                              "reason": "drain: predicted at/above drain 78°C (T=72.0°C "
                                        "slope=+1.00°C/s predicted 78.0°C in 6s)"}]}
    return {"nodes": {}, "controllers": {"thermal": thermal}}


def test_monitor_at_80_and_120_columns() -> None:
    for width in (80, 120):
        text = screen(render(_monitor_status()), width)
        assert max(len(line) for line in text.splitlines()) <= width and "…" not in text
        by_node = rows(text)
        assert by_node["pi1"].startswith("Pi 4 B r1.4 52.0")
        assert "serving serve: headroom to 78°C (T=52.0°C)" in by_node["pi1"]
        assert "drained drain: T at/above drain 78°C (T=84.0°C slope=+1.00°C/s predicted " \
               "90.0°C in 6s)" in by_node["loft-pi4"]
        # the decision line wraps instead of being cut
        assert "in 6s)" in text.split("policy on")[1]
    assert "clock MHz" in screen(render(_monitor_status()), 120)


def _deploy(failed: str | None, serving: bool = True) -> RunResult:
    res = RunResult("deploy", seconds=80.0)
    res.head = {"where": "host", "api_url": "http://127.0.0.1:8000"}
    for name in ("pi1", "pi2", "pi3"):
        r = res.node(name)
        r.version, r.runtime, r.sent_bytes, r.services = V1, "provisioned", 12_300_000, "systemd"
        r.selftest = {"ok": True, "seconds": 3.2, "min_cosine": 0.99998}
        r.step, r.healthy = ("serving", True) if serving else ("verify", False)
    if failed:
        res.node(failed).healthy = False
        res.node(failed).fail("verify", "worker not alive: ray-worker exited 3 times")
    return res


def test_partial_deploy_said_plainly_with_its_exit_code() -> None:
    res = _deploy("pi3")
    assert exit_code(res) == EXIT_PARTIAL != EXIT_NODES_FAILED
    for width in (80, 120):
        text = screen(result_view(res), width)
        by_node = rows(text)
        assert by_node["pi1"].startswith("serving") and by_node["pi2"].startswith("serving")
        assert by_node["pi3"].startswith("failed at verify")
        assert "worker not alive: ray-worker exited 3 times" in by_node["pi3"]
        assert "runtime provisioned; sent 12.3 MB; self-test ok in 3.2 s" in by_node["pi1"]
        assert "FAILED" not in text
        assert (f"PARTIAL deploy (exit {EXIT_PARTIAL}): serving on pi1, pi2; failed: pi3 "
                "(at verify)") in " ".join(text.split())


def test_full_and_failed_deploy_headlines() -> None:
    ok = _deploy(None)
    assert exit_code(ok) == 0 and headline(ok).plain == "deployed: serving on pi1, pi2, pi3"
    none = _deploy(None, serving=False)
    none.error = "no complete replica could be started"
    for n in ("pi1", "pi2", "pi3"):
        none.node(n).fail("verify", "no API")
    assert exit_code(none) == EXIT_NODES_FAILED
    assert headline(none).plain.startswith(
        "deploy FAILED: nothing serves: no complete replica could be started")
    undo = RunResult("undeploy")
    undo.node("pi1").step = "undeploy"
    undo.node("pi2").fail("undeploy", "processes still running: 123")
    assert exit_code(undo) == EXIT_NODES_FAILED  # partial only means something for deploy
    assert headline(undo).plain == "undeploy FAILED on pi2 (at undeploy)"


def test_every_deploy_step_has_words() -> None:
    # the steps edgekit.deploy.flow and selftest report (ui.step) while a node is worked on
    assert set(PHASES) == {"check", "provision", "push", "selftest", "start", "verify"}
    assert all(" " in words for words in PHASES.values())


def test_deploy_progress_shows_a_phase_per_node_not_bytes_of_nothing() -> None:
    from edgekit.cli._deployview import Bars, progress

    bars = progress(None, False)
    ui = Bars(bars)
    ui.step("pi1", "provision")
    ui.step("pi2", "push")
    ui.bytes("pi2", 3_000_000, 12_000_000)
    ui.step("pi3", "push")
    ui.step("pi3", "[red]push failed")
    ui.step("pi4", "check")
    ui.step("pi4", "[green]serving")
    by_node = {line.split()[0]: line for line in screen(bars.get_renderable(), 80).splitlines()
               if line.strip()}
    assert "checking/installing the runtime" in by_node["pi1"] and " s" in by_node["pi1"]
    assert "sending the model" in by_node["pi2"] and "3.0/12.0 MB" in by_node["pi2"]
    assert by_node["pi3"].split()[1:] == ["push", "failed"]
    assert by_node["pi4"].split()[1:] == ["serving"]
    assert "?" not in " ".join(by_node.values()) and "bytes" not in " ".join(by_node.values())
