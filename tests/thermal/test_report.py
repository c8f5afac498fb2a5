"""`edgekit report` drawn with matplotlib from recorded telemetry: every panel either has data
on round ticks or says "no data" (no axes), the last time label is inside the picture, and
the .html, .svg and .png outputs all come from the same recording."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.cli.main import cli
from edgekit.thermal.recorder import Recorder
from edgekit.thermal.report import _figure, _load, write_report

pytest.importorskip("matplotlib")


def record(run: Path, seconds: float, power: bool, step: float = 0.7) -> Path:
    """Two nodes over ``seconds`` with uneven sample times (as a real controller ticks)."""
    rec = Recorder(run)
    t, i = 1000.0, 0
    while t - 1000.0 <= seconds:
        for node, base in (("pi1", 55.0), ("pi2", 61.0)):
            rec.telemetry({
                "t_head_s": round(t, 3), "node": node, "temp_c": base + 0.37 * i,
                "freq_mhz": 1800 if i < 20 else 1500, "max_freq_mhz": 1800,
                "throttled_now": int(i >= 20), "power_w": 4.2 + 0.01 * i if power else None,
                "requests_per_s": 3.3, "completed_total": 3 * i, "state": "serving",
            })
        t, i = t + step, i + 1
    rec.close()
    return run


def _panels(run: Path) -> tuple:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = _figure(_load(run))
    FigureCanvasAgg(fig).draw()  # lays out: tick positions and text extents are final
    return fig, fig.axes


def test_every_panel_has_data_on_round_ticks(tmp_path) -> None:
    _, axes = _panels(record(tmp_path / "run", 37.1, power=True))
    assert [ax.get_title(loc="left") for ax in axes] == [
        "temperature (°C)", "ARM clock (MHz)", "throughput (req/s)", "power (W)"]
    for ax in axes:
        assert ax.axison and len(ax.get_lines()) >= 2
        for tick in ax.get_yticks():
            # round: a multiple of 1, 2, 2.5 or 5 times a power of ten, shown without noise
            assert re.fullmatch(r"-?\d+(\.\d{1,2})?", f"{tick:g}"), tick
    xticks = [t for t in axes[-1].get_xticks() if 0 <= t <= 37.1]
    assert all(float(t).is_integer() for t in xticks) and xticks[0] == 0
    labels = [t.get_text() for t in axes[-1].get_xticklabels() if t.get_text()]
    assert labels and axes[-1].get_xlabel() == "seconds since the run started"


def test_last_time_label_is_not_clipped(tmp_path) -> None:
    fig, axes = _panels(record(tmp_path / "run", 37.1, power=True))
    renderer = fig.canvas.get_renderer()
    width = fig.bbox.width
    shown = [t for t in axes[-1].get_xticklabels()
             if t.get_text() and t.get_visible() and 0 <= t.get_position()[0] <= 37.1]
    assert shown
    for label in shown:
        box = label.get_window_extent(renderer)
        assert box.x0 >= 0 and box.x1 <= width, (label.get_text(), box, width)


def test_panel_without_data_says_so_and_has_no_axes(tmp_path) -> None:
    _, axes = _panels(record(tmp_path / "run", 20, power=False))
    power = axes[-1]
    assert not power.axison and not power.get_lines()
    assert any("no data" in t.get_text() and "power" in t.get_text() for t in power.texts)
    # the time axis moved up to the lowest panel that has data
    assert axes[2].get_xlabel() == "seconds since the run started"
    assert [t.get_text() for t in axes[2].get_xticklabels() if t.get_text()]


def test_one_sample_still_draws_a_point(tmp_path) -> None:
    _, axes = _panels(record(tmp_path / "run", 0, power=True))
    assert all(ax.axison and ax.get_lines()[0].get_marker() == "o" for ax in axes)


def test_cli_writes_html_svg_png_from_the_recording(tmp_path) -> None:
    run = record(tmp_path / "run", 37.1, power=False)
    res = CliRunner().invoke(cli, ["report", str(run), "-o", str(tmp_path / "r.html"),
                                   "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)["nodes"]
    assert summary["pi1"]["mean_power_w"] is None and summary["pi2"]["throttled_s"] > 0
    page = (tmp_path / "r.html").read_text()
    assert page.count("<svg") == 1 and "<?xml" not in page and "no data" in page
    assert "throttle 80" in page and "<td>pi2</td>" in page
    res = CliRunner().invoke(cli, ["report", str(run), "-o", str(tmp_path / "r.svg")])
    assert res.exit_code == 0, res.output
    root = ET.fromstring((tmp_path / "r.svg").read_text())  # well-formed XML
    assert root.tag.endswith("svg")
    again = tmp_path / "again.svg"
    write_report(run, again)
    assert again.read_text() == (tmp_path / "r.svg").read_text()  # same run, same file
    res = CliRunner().invoke(cli, ["report", str(run), "-o", str(tmp_path / "r.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_output_kind_is_refused(tmp_path) -> None:
    run = record(tmp_path / "run", 3, power=True)
    res = CliRunner().invoke(cli, ["report", str(run), "-o", str(tmp_path / "r.pdf")])
    assert res.exit_code != 0 and ".pdf" in str(res.exception)
    assert not (tmp_path / "r.pdf").exists()
