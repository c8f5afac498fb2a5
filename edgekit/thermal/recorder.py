"""Telemetry history: one folder per run under `$EDGEKIT_HOME/telemetry/<run>/` holding
`telemetry.csv` (one row per node per controller tick) and `decisions.csv` (every change of
state/weight with its reason). CSV: readable anywhere, appendable, no extra dependency.

A head runs for weeks: about 150 bytes per node per second is ~40 MB a day for three nodes,
and every API start opens a new run. So each file is rotated at settings.log_max_bytes
(`telemetry.csv` -> `telemetry.csv.1`, the new file starting with the header again; reports
read the current file) and only the newest settings.telemetry_keep_runs runs are kept."""

from __future__ import annotations

import csv
import shutil
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


class _CsvLog:
    """One CSV file, rotated to `<name>.1` (one backup) once it reaches `max_bytes`."""

    def __init__(self, path: Path, fields: list[str], max_bytes: int):
        self.path, self.fields, self.max_bytes = path, fields, max_bytes
        self._open()

    def _open(self) -> None:
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.fh: IO[str] = self.path.open("a", newline="")
        self.writer = csv.DictWriter(self.fh, fieldnames=self.fields, extrasaction="ignore")
        if new:
            self.writer.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        if self.fh.tell() >= self.max_bytes:
            self.fh.close()
            self.path.replace(self.path.with_name(self.path.name + ".1"))
            self._open()
        self.writer.writerow({k: _cell(row.get(k)) for k in self.fields})
        self.fh.flush()


class Recorder:
    """Appends rows to the run's CSV files; flushes every write so a crash loses nothing."""

    def __init__(self, run_dir: Path, max_bytes: int | None = None,
                 keep_runs: int | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        prune_runs(self.run_dir, settings.telemetry_keep_runs if keep_runs is None else keep_runs)
        cap = max_bytes or settings.log_max_bytes
        self._telemetry = _CsvLog(self.run_dir / "telemetry.csv", TELEMETRY_FIELDS, cap)
        self._decisions = _CsvLog(self.run_dir / "decisions.csv", DECISION_FIELDS, cap)

    def telemetry(self, row: dict[str, Any]) -> None:
        self._telemetry.write(row)

    def decision(self, row: dict[str, Any]) -> None:
        self._decisions.write(row)

    def close(self) -> None:
        self._telemetry.fh.close()
        self._decisions.fh.close()


def prune_runs(run_dir: Path, keep: int) -> list[Path]:
    """Remove the oldest recorded runs beside `run_dir` (folders holding a telemetry.csv)
    beyond the newest `keep`, never `run_dir` itself; returns what was removed."""
    runs = [p for p in run_dir.parent.iterdir()
            if p.is_dir() and p != run_dir and (p / "telemetry.csv").exists()]
    runs.sort(key=lambda p: p.stat().st_mtime)
    old = runs[:max(len(runs) - max(keep - 1, 0), 0)]
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    return old


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
