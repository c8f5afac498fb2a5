"""One dashboard frame, the CLI against a real HTTP status endpoint, and the report picture."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_sysroot, set_stat, write
from fakes import FakeControl, ManualClock
from rich.console import Console

from edgekit.cli.main import cli
from edgekit.serve.control import NodeStats
from edgekit.thermal.controller import ThermalController
from edgekit.thermal.monitor import render
from edgekit.thermal.sources import SamplerSource


@pytest.fixture
def hot_run(tmp_path: Path, no_vcgencmd) -> tuple[dict, Path]:
    """Three nodes, pi3 heating 1 °C/s until drained; returns server-shaped status + run dir."""
    roots = {n: make_sysroot(tmp_path / n) for n in ("pi1", "pi2", "pi3")}
    clock = ManualClock()
    ctl = ThermalController(
        SamplerSource(roots, False, clock=clock), clock=clock, run_dir=tmp_path / "run"
    )
    control = FakeControl({n: NodeStats(n, requests_per_s=4.0, p95_ms=30.0) for n in roots})
    ctl.attach(control)
    for i in range(25):
        for n, root in roots.items():
            temp = 60 + i if n == "pi3" else 52.0
            write(root / "sys/class/thermal/thermal_zone0/temp", f"{int(temp * 1000)}\n")
            set_stat(root, busy=1000 + 80 * (i + 1), idle=1000 + 20 * (i + 1))
            control.stats[n].completed_total = 4 * i
        ctl.tick()
        clock.t += 1.0
    status = {
        "nodes": {n: s.__dict__ for n, s in control.stats.items()},
        "controllers": {"thermal": ctl.status()},
    }
    return json.loads(json.dumps(status)), tmp_path / "run"


def test_frame_shows_hot_node_drained_and_cool_nodes_serving(hot_run) -> None:
    status, _ = hot_run
    con = Console(record=True, width=200, color_system=None)
    con.print(render(status))
    text = con.export_text()
    lines = {ln.split("│")[1].strip(): ln for ln in text.splitlines() if ln.count("│") > 5}
    assert "drained" in lines["pi3"] or "shedding" in lines["pi3"]
    assert "serving" in lines["pi1"] and "serving" in lines["pi2"]
    assert "req/s" in text and "J/inference" in text and "policy on" in text


class _Status(BaseHTTPRequestHandler):
    body = b"{}"

    def do_GET(self) -> None:
        if self.path != "/edgekit/status":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


def test_monitor_cli_once_json_and_frame_over_http(hot_run) -> None:
    status, _ = hot_run
    _Status.body = json.dumps(status).encode()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        res = CliRunner().invoke(cli, ["monitor", "--url", url, "--once", "--json"])
        assert res.exit_code == 0, res.output
        snap = json.loads(res.output)
        assert snap["nodes"]["pi3"]["state"] in ("drained", "shedding")
        assert snap["cluster"]["policy"] == "on" and snap["cluster"]["nodes"] == 3
        res = CliRunner().invoke(cli, ["monitor", "--url", url, "--once"])
        assert res.exit_code == 0 and "pi3" in res.output
    finally:
        server.shutdown()


def test_monitor_unreachable_server_is_a_clear_error() -> None:
    from edgekit.errors import ClusterError
    from edgekit.thermal.monitor import fetch_status

    with pytest.raises(ClusterError, match="cannot read status"):
        fetch_status("http://127.0.0.1:9", timeout_s=2)


def test_report_html_svg_and_summary(hot_run, tmp_path: Path) -> None:
    _, run = hot_run
    res = CliRunner().invoke(
        cli, ["report", str(run), "-o", str(tmp_path / "out/r.html"), "--json"]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)["nodes"]
    assert summary["pi3"]["max_temp_c"] == 84.0 and summary["pi1"]["max_temp_c"] == 52.0
    assert summary["pi1"]["throttled_s"] == 0 and summary["pi3"]["completed"] == 96
    page = (tmp_path / "out/r.html").read_text()
    assert page.count("<svg") == 1 and "throttle 80" in page and "<path" in page
    res = CliRunner().invoke(cli, ["report", str(run), "-o", str(tmp_path / "r.svg")])
    assert res.exit_code == 0 and "<svg" in (tmp_path / "r.svg").read_text()
    res = CliRunner().invoke(cli, ["report", str(run), "-o", str(tmp_path / "r.txt")])
    assert res.exit_code != 0


def test_report_of_folder_without_telemetry_fails_clearly(tmp_path: Path) -> None:
    from edgekit.errors import InputError
    from edgekit.thermal.report import write_report

    with pytest.raises(InputError, match=r"no telemetry\.csv"):
        write_report(tmp_path, tmp_path / "x.html")
