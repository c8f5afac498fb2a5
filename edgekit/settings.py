"""edgekit's global tunables (where state lives, SSH, logs, firmware thresholds), each with its
unit in its name and a one-line reason. A package with tunables of its own keeps them in one
module of its own: serve/settings.py (`Tunables`, overridable per server) and
thermal/config.py.

Hardware figures come from ../shared/docs/pi-facts.md (Raspberry Pi documentation and
published measurements); see docs/ARCHITECTURE.md for sources.
"""

from __future__ import annotations

import os
from pathlib import Path

# --- where things live -------------------------------------------------------------------
#: Host-side state (known_hosts, deploy records, virtual cluster). Override with EDGEKIT_HOME.
EDGEKIT_HOME = Path(os.environ.get("EDGEKIT_HOME", Path.home() / ".edgekit"))
#: Root that node-side code reads hardware files under ("/" on a real Pi). The virtual
#: cluster sets it per node through sshd's SetEnv; node code never asks "am I emulated".
SYSROOT_ENV = "EDGEKIT_SYSROOT"

# --- SSH ---------------------------------------------------------------------------------
ssh_connect_timeout_s = 10.0  # TCP + handshake + auth; a Pi on Wi-Fi can take a few seconds
ssh_command_timeout_s = 60.0  # default per remote command
ssh_max_parallel = 16  # bounded pool: sshd's MaxStartups default is 10:30:100 per node

# --- logs ---------------------------------------------------------------------------------
#: every log edgekit writes for a service (node or head) is rotated at this size, keeping
#: this many old files (edgekit.node.logpipe): at most 3 x 10 MiB per service on an SD card
log_max_bytes = int(os.environ.get("EDGEKIT_LOG_MAX_BYTES", 10 * 1024 * 1024))
log_backups = int(os.environ.get("EDGEKIT_LOG_BACKUPS", 2))
#: recorded thermal runs kept under $EDGEKIT_HOME/telemetry (every API start is a new run)
telemetry_keep_runs = int(os.environ.get("EDGEKIT_TELEMETRY_KEEP_RUNS", 20))

# --- firmware thresholds (Raspberry Pi 4 / 5) ---------------------------------------------
throttle_temp_c = 80.0  # firmware starts stepping the ARM clock down
hard_limit_temp_c = 85.0  # temp_limit: ARM and GPU throttle hard
min_serving_ram_mb = 900  # Ray worker ~300 MiB + ORT session + model; below this refuse


def sysroot() -> Path:
    """Root under which node-side code finds /sys, /proc and friends (defaults to /)."""
    return Path(os.environ.get(SYSROOT_ENV, "/"))
