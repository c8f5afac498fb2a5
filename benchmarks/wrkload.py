"""Closed-loop load from `wrk` (the C HTTP benchmark tool, apt package `wrk`): the same
binary OIP request as `edgekit bench` sends, back to back on N connections.

Why beside `edgekit bench`: the server's cost is what a saturated-throughput row measures,
and on a 2-core machine the load generator's own CPU comes out of the same cores. Reading a
1 MB answer costs the aiohttp client 0.6-1.5 ms of Python per request here; wrk reads it in C
(epoll, one buffer), as a remote client would cost the cluster nothing. Both are reported.

No Lua `response()` hook: wrk would copy every body into Lua; its own summary already counts
non-2xx answers and socket errors.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

_SCRIPT = """
wrk.method = "POST"
local f = assert(io.open(os.getenv("EK_WRK_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Inference-Header-Content-Length"] = os.getenv("EK_WRK_HLEN")
wrk.headers["Authorization"] = "Bearer " .. os.getenv("EK_WRK_TOKEN")
"""


def available() -> str | None:
    """None if wrk can run, else why not."""
    return None if shutil.which("wrk") else "wrk is not installed (./dev.sh setup installs it)"


def run(url: str, body: bytes, header_len: int, token: str, connections: int,
        duration_s: float) -> dict[str, float]:
    """Requests per second that answered 2xx, and the failures wrk counted."""
    with tempfile.TemporaryDirectory(prefix="ek-wrk-") as tmp:
        body_file, script = Path(tmp) / "body", Path(tmp) / "infer.lua"
        body_file.write_bytes(body)
        script.write_text(_SCRIPT)
        # the token reaches wrk by environment, not on its command line (ps shows that)
        env = {**os.environ, "EK_WRK_BODY": str(body_file), "EK_WRK_HLEN": str(header_len),
               "EK_WRK_TOKEN": token}
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--latency",
             "-s", str(script), url], env=env, capture_output=True, text=True,
            timeout=duration_s + 60, check=True).stdout
    return parse(out)


def parse(out: str) -> dict[str, float]:
    """wrk's summary: requests/s minus the non-2xx share, failures, latency percentiles."""
    total = int(re.search(r"(\d+) requests in", out).group(1))
    per_s = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    failed = int(bad.group(1)) if bad else 0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    failed += sum(int(g) for g in errors.groups()) if errors else 0
    lat = {q: _ms(m.group(2)) for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M)
           for q in [m.group(1)]}
    return {"per_s": round(per_s * (total - min(failed, total)) / max(total, 1), 2),
            "requests": total, "failed": failed,
            "p50_ms": lat.get("50", float("nan")), "p99_ms": lat.get("99", float("nan"))}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()
    return round(float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit], 3)
