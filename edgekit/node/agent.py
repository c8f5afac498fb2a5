"""edgekit's node agent service: every few seconds it writes <root>/run/agent.json with the
node's sensor sample (edgekit.thermal.agent.Sampler: temperature, clock, throttling, power,
memory) and the active version of every deployed model, for `edgekit status`.

    python -m edgekit.node.agent ROOT NODE_NAME

The thermal controller reads live telemetry through its own Ray actor; this service is what
remains on the node when Ray is down, so `status` can still say what the board is doing.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

# not a climb: Sampler is thermal's node-side sampling (sensor files, no Ray at import), the
# same one the thermal Ray agent uses on this node, so `status` and the controller read alike
from edgekit.thermal import config
from edgekit.thermal.agent import Sampler


def active_versions(root: Path) -> dict[str, str]:
    out = {}
    for current in sorted(root.glob("apps/*/current")):
        try:
            out[current.parent.name] = Path(os.readlink(current)).name
        except OSError:
            continue
    return out


def snapshot(root: Path, sampler: Sampler) -> dict[str, Any]:
    """What agent.json holds; the sample becomes plain JSON values here (its one boundary)."""
    try:
        sample: dict[str, Any] = sampler.sample().to_dict()
    except Exception as exc:  # a broken sensor must not stop the agent
        sample = {"error": f"{type(exc).__name__}: {exc}"}
    return {"time": time.time(), "pid": os.getpid(), "apps": active_versions(root),
            "sample": sample}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m edgekit.node.agent ROOT NODE_NAME", file=sys.stderr)
        return 2
    root, name = Path(argv[0]), argv[1]
    (root / "run").mkdir(parents=True, exist_ok=True)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    sampler = Sampler(name, firmware_clock=False)
    while not stop:
        tmp = root / "run" / "agent.json.tmp"
        tmp.write_text(json.dumps(snapshot(root, sampler), default=str))
        os.replace(tmp, root / "run" / "agent.json")
        time.sleep(config.status_file_period_s)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
