"""One virtual cluster for the deploy tests (real users, sshd, cgroups), always torn down.

pi1-pi3 are healthy Pi 4/Pi 5 boards; pi4 has a 32-bit personality (deploy must refuse it).
pi1, pi2 (and pi4) run a systemd user manager where this host can (deploy runs their services
as user units); pi3 has none, so the same deployments also take edgekit's supervisor path.
EDGEKIT_HOME points at a temp folder for the whole session, so host state, known_hosts and
the wheel cache never touch the real one. EDGEKIT_NODE_WHEEL pins a folder with one edgekit
wheel per node architecture (the host's; the other where its cross compiler is installed), each
carrying the native library built for it.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekit import settings

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "virtual"))

from vcluster_helpers import SKIP_REASON

from edgekit.virtual.cluster import NodeSpec, VirtualCluster


@pytest.fixture(scope="session")
def ek_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("ekhome")
    old_env, old_setting = os.environ.get("EDGEKIT_HOME"), settings.EDGEKIT_HOME
    os.environ["EDGEKIT_HOME"] = str(home)
    settings.EDGEKIT_HOME = home
    # the wheel cache may be shared between runs (CI keeps it): building it is the slow part
    cache = os.environ.get("EDGEKIT_TEST_WHEEL_CACHE")
    if cache:
        Path(cache).mkdir(parents=True, exist_ok=True)
        (home / "wheelhouse").symlink_to(cache)
    # one edgekit wheel per node architecture for the whole session: colleagues editing the
    # checkout mid-run must not change the node runtime between two deploys of a test
    from edgekit.deploy import wheels

    pinned = home / "node-wheels"
    pinned.mkdir()
    host = wheels.norm_arch(platform.machine())
    arches = [a for a in wheels.NODE_ARCHES if a == host or shutil.which(wheels.CROSS_CC[a])]
    for arch in arches:
        built = wheels.edgekit_wheel(home / "wheelhouse", arch)
        (pinned / built.name).write_bytes(built.read_bytes())
    old_wheel = os.environ.get(wheels.NODE_WHEEL_ENV)
    os.environ[wheels.NODE_WHEEL_ENV] = str(pinned)
    yield home
    if old_wheel is None:
        os.environ.pop(wheels.NODE_WHEEL_ENV, None)
    else:
        os.environ[wheels.NODE_WHEEL_ENV] = old_wheel
    settings.EDGEKIT_HOME = old_setting
    if old_env is None:
        os.environ.pop("EDGEKIT_HOME", None)
    else:
        os.environ["EDGEKIT_HOME"] = old_env


@pytest.fixture(scope="session")
def vcluster(ek_home: Path) -> Iterator[VirtualCluster]:
    if SKIP_REASON:
        pytest.skip(SKIP_REASON)
    specs = [NodeSpec("pi4", cooling="fan"), NodeSpec("pi5", cooling="fan"),
             NodeSpec("pi4", cooling="fan", init="none"), NodeSpec("pi4", linux32=True)]
    vc = VirtualCluster.up(specs, home=ek_home)
    try:
        yield vc
    finally:
        vc.down()
