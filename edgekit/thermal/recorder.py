"""Telemetry history: one folder per run under `$EDGEKIT_HOME/telemetry/<run>/` holding
`telemetry.csv` (one row per node per controller tick) and `decisions.csv` (every change of
state/weight with its reason). CSV: readable anywhere, appendable, no extra dependency."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import IO, Any

from edgekit import settings

TELEMETRY_FIELDS = [
    "t_head_s",
    "node",
    "temp_c",
    "freq_mhz",
    "max_freq_mhz",
    "throttled_now",
    "throttled_raw",
    "power_w",
    "power_source",
    "util",
    "requests_per_s",
    "completed_total",
    "p95_ms",
    "weight",
    "state",
    "predicted_c",
    "stale",
    "skew_s",
    "energy_j",
]
DECISION_FIELDS = ["t_head_s", "node", "state", "weight", "reason"]


def default_run_dir(run: str | None = None) -> Path:
    """`$EDGEKIT_HOME/telemetry/<run>` (run defaults to a UTC timestamp)."""
    name = run or time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return settings.EDGEKIT_HOME / "telemetry" / name


class Recorder:
    """Appends rows to the run's CSV files; flushes every write so a crash loses nothing."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._files: list[IO[str]] = []
        self._telemetry = self._open("telemetry.csv", TELEMETRY_FIELDS)
        self._decisions = self._open("decisions.csv", DECISION_FIELDS)

    def _open(self, name: str, fields: list[str]) -> csv.DictWriter:
        path = self.run_dir / name
        new = not path.exists() or path.stat().st_size == 0
        fh = path.open("a", newline="")
        self._files.append(fh)
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        return writer

    def telemetry(self, row: dict[str, Any]) -> None:
        self._telemetry.writerow({k: _cell(row.get(k)) for k in TELEMETRY_FIELDS})
        self._files[0].flush()

    def decision(self, row: dict[str, Any]) -> None:
        self._decisions.writerow({k: _cell(row.get(k)) for k in DECISION_FIELDS})
        self._files[1].flush()

    def close(self) -> None:
        for fh in self._files:
            fh.close()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return round(value, 4)
    return value


def read_telemetry(run_dir: Path) -> list[dict[str, Any]]:
    """Rows of a run's telemetry.csv with numbers as floats ("" -> None)."""
    path = Path(run_dir) / "telemetry.csv"
    rows = []
    with path.open(newline="") as fh:
        for raw in csv.DictReader(fh):
            row: dict[str, Any] = {}
            for k, v in raw.items():
                if v in ("", None):
                    row[k] = None
                elif k in ("node", "state", "power_source"):
                    row[k] = v
                elif v in ("True", "False"):
                    row[k] = v == "True"
                else:
                    try:
                        row[k] = float(v)
                    except ValueError:
                        row[k] = v
            rows.append(row)
    return rows
