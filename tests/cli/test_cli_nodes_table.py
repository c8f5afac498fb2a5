"""`edgekit nodes check` at 80 and 120 columns: every node's name, board, verdict and reason
on screen, less important columns dropped (and named), nothing cut with an ellipsis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cli_screens import rows, screen, words

from edgekit.cli.nodes import _table
from edgekit.remote.probe import NodeReport
from edgekit.tables import Col, FitTable

REASON_PI2 = ["python 3.9 is older than 3.11", "only 500 MB disk free in home (need 1024 MB)"]


def _reports() -> list[NodeReport]:
    common = dict(arch="aarch64", cores=4, mem_total_mb=4096, mem_avail_mb=3100,
                  disk_free_mb=20000, python="3.11.2", temp_c=52.3, freq_mhz=1500,
                  max_freq_mhz=1500, throttled="0x0")
    reports = [
        NodeReport("pi1", address="pi@10.0.0.1", reachable=True,
                   model="Raspberry Pi 4 Model B Rev 1.4", simd=["asimd"], native="neon",
                   **common),
        NodeReport("kitchen-pi5", address="pi@10.0.0.2", reachable=True, problems=REASON_PI2,
                   model="Raspberry Pi 5 Model B Rev 1.0", simd=["asimd", "asimddp"],
                   **common),
        NodeReport("pi3", address="pi@10.0.0.3:2222", reachable=False,
                   problems=["ssh: [Errno 111] Connection refused"]),
    ]
    for r in reports:
        r.settle()
    return reports


def test_80_columns_every_node_board_verdict_and_reason() -> None:
    text = screen(_table(_reports()), 80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    on_screen = words(text)
    for name in ("pi1", "kitchen-pi5", "pi3"):
        assert name in on_screen
    assert "r1.4" in on_screen and "r1.0" in on_screen  # both boards, whole
    by_node = rows(text)
    assert by_node["pi1"].startswith("Pi 4 B r1.4") and " ready" in by_node["pi1"]
    assert by_node["kitchen-pi5"].startswith("Pi 5 B r1.0")
    assert "not ready " + "; ".join(REASON_PI2) in by_node["kitchen-pi5"]
    assert "unreachable ssh: [Errno 111] Connection refused" in by_node["pi3"]
    # the dropped columns are named, not silently gone
    assert "not shown at 80 columns:" in text and "disk" in text


def test_120_columns_full_layout_when_reasons_are_short() -> None:
    reports = [r for r in _reports() if r.ready]
    text = screen(_table(reports), 120)
    header = text.splitlines()[1] + text.splitlines()[2]
    for col in ("node", "board", "arch", "kernels", "RAM free", "disk", "py", "temp", "clock",
                "thr", "verdict"):
        assert col in header, col
    assert "not shown" not in text and "Pi 4 B r1.4" in text and "1500/1500" in text


def test_120_columns_keeps_more_than_80() -> None:
    narrow, wide = screen(_table(_reports()), 80), screen(_table(_reports()), 120)
    assert len(wide.splitlines()[0]) > len(narrow.splitlines()[0])
    assert "aarch64" in wide and "aarch64" not in narrow


def test_fit_table_rejects_a_row_of_the_wrong_length() -> None:
    table = FitTable([Col("a"), Col("b")])
    try:
        table.add_row("only one")
    except ValueError as exc:
        assert "1 cells for 2 columns" in str(exc)
    else:
        raise AssertionError("a short row was accepted")


def test_fit_table_cells_are_not_markup() -> None:
    table = FitTable([Col("node"), Col("reason", wrap=True)])
    table.add_row("pi1", "[red]not a style[/red] [Errno 2]")
    assert "[red]not a style[/red] [Errno 2]" in screen(table, 80)


def test_cli_nodes_check_at_80_columns_against_closed_ports(tmp_path: Path) -> None:
    """The real command: two inventory lines whose SSH ports refuse the connection."""
    inv = tmp_path / "pis.txt"
    inv.write_text("pi@127.0.0.1:9 name=pi1\npi@127.0.0.1:1 name=attic-node-with-long-name\n")
    env = {**os.environ, "COLUMNS": "80", "EDGEKIT_HOME": str(tmp_path / "home")}
    r = subprocess.run([sys.executable, "-m", "edgekit.cli.main", "nodes", "check", "--nodes",
                        str(inv), "--timeout", "3"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 4, r.stderr
    assert max(len(line) for line in r.stdout.splitlines()) <= 80
    for word in ("pi1", "attic-node-with-long-name", "unreachable", "refused", "0/2"):
        assert word in r.stdout, (word, r.stdout)
