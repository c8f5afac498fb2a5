"""Acceptance of the foundation: `edgekit cluster up --nodes 3`, then `edgekit nodes check` on
the inventory it wrote shows 3 ready Pi 4 / Pi 5 nodes over real SSH (systemd where a node
runs a user manager, as a Pi does), and `cluster down` leaves nothing running. Everything
through the CLI a user types."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from vcluster_helpers import needs_cluster

from edgekit.virtual import usermanager

pytestmark = [needs_cluster, pytest.mark.cluster]


def edgekit(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGEKIT_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "edgekit.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=180)


def test_up_check_down_through_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "ekhome"
    systemd = usermanager.unavailable() is None
    init = "systemd,none,systemd" if systemd else "none"
    up = edgekit(home, "cluster", "up", "--nodes", "3", "--board", "pi4,pi4,pi5", "--init", init,
                 "--json")
    assert up.returncode == 0, up.stderr
    inventory = home / "virtual" / "inventory.txt"
    users = [line.split("@")[0] for line in inventory.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    saved = inventory.read_text()
    try:
        check = edgekit(home, "nodes", "check", "--nodes", str(inventory), "--json")
        assert check.returncode == 0, check.stdout + check.stderr
        nodes = json.loads(check.stdout)["nodes"]
        assert [n["verdict"] for n in nodes] == ["ready"] * 3
        assert [n["model"].split(" Model")[0] for n in nodes] == [
            "Raspberry Pi 4", "Raspberry Pi 4", "Raspberry Pi 5"]
        assert ["asimddp" in n["simd"] for n in nodes] == [False, False, True]
        assert all(n["cores"] == 4 and n["temp_c"] and n["throttled"] == "0x0" for n in nodes)
        assert all(n["user"] == u for n, u in zip(nodes, users, strict=True))
        assert [n["systemd"] for n in nodes] == [systemd, False, systemd]
        assert nodes[1]["systemd_user"] == ""  # the probe asks the user manager only if booted
    finally:
        down = edgekit(home, "cluster", "down", "--json")
    assert down.returncode == 0, down.stderr
    left = [p.info for p in psutil.process_iter(["pid", "username", "name"])
            if p.info["username"] in users]
    assert left == []
    copy = tmp_path / "old-inventory.txt"  # `down` removes the cluster's own inventory
    copy.write_text(saved)
    again = edgekit(home, "nodes", "check", "--nodes", str(copy), "--timeout", "2", "--json")
    assert again.returncode == 4  # nothing answers any more
