"""The virtual node's proc/stat: node code reads its own board's CPU use, not the host's."""

from pathlib import Path

from edgekit.thermal._procfs import CpuUtil
from edgekit.virtual.supervisor import _Node, publish_stat


def node(tmp_path: Path) -> _Node:
    return _Node(rec=None, board=None, group=None, sysroot=tmp_path, thermal=None,  # type: ignore[arg-type]
                 last_usage_ns=0, quota_cores=0.4)


def test_busy_share_follows_the_nodes_own_quota(tmp_path: Path) -> None:
    n = node(tmp_path)
    publish_stat(n, used_cores=0.0, dt_s=1.0)
    util = CpuUtil(tmp_path)  # primes from the file
    publish_stat(n, used_cores=0.2, dt_s=1.0)  # half of its 0.4-core quota
    half = util.read()
    assert half.source == "measured" and str(tmp_path) in half.detail
    assert abs(half.value - 0.5) < 0.02
    n.quota_cores = 0.2  # throttled: same work now saturates the board
    publish_stat(n, used_cores=0.2, dt_s=1.0)
    assert util.read().value > 0.98
    lines = (tmp_path / "proc/stat").read_text().splitlines()
    assert lines[0].startswith("cpu  ") and [ln.split()[0] for ln in lines[1:]] == [
        "cpu0", "cpu1", "cpu2", "cpu3"
    ]
