"""Fixtures for the virtual Pi cluster: real sshd, real users, real cgroups (needs root)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from vcluster_helpers import SKIP_REASON

from edgekit.virtual.cluster import NodeSpec, VirtualCluster


@pytest.fixture(scope="session")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualCluster]:
    """pi1: bare Pi 4 in a warm room (heats fast); pi2: fan-cooled Pi 5 (the idle
    neighbour); pi3: Pi 4 with a 32-bit personality."""
    if SKIP_REASON:
        pytest.skip(SKIP_REASON)
    home = tmp_path_factory.mktemp("edgekit-home")
    specs = [
        NodeSpec("pi4", cooling="none", ambient_c=35.0),
        NodeSpec("pi5", cooling="fan"),
        NodeSpec("pi4", cooling="heatsink", linux32=True),
    ]
    vc = VirtualCluster.up(specs, home=home)
    try:
        yield vc
    finally:
        vc.down()
