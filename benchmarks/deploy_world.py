"""A virtual cluster to deploy to, for the deploy benchmarks (deploy_kill.py,
reboot_rejoin.py): its own EDGEKIT_HOME in a temp folder, node wheels pinned once (as
tests/deploy/conftest.py does, so edits in the checkout mid-run change nothing), the wheel
cache shared with the tests (`EDGEKIT_TEST_WHEEL_CACHE`, default
~/.cache/edgekit/test-wheelhouse), always torn down. Also puts tests/deploy on sys.path for
its helpers (bundles, inventories, killpoints)."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "deploy"))

from edgekit import settings  # noqa: E402
from edgekit.virtual.cluster import NodeSpec, VirtualCluster  # noqa: E402

#: two Pi 4 and a Pi 5 with fans; every node with a systemd user manager, so a reboot
#: brings its services back by themselves (as lingering units do on a Pi)
SPECS = [NodeSpec("pi4", cooling="fan"), NodeSpec("pi5", cooling="fan"),
         NodeSpec("pi4", cooling="fan")]


def _pin_wheels(home: Path) -> None:
    from edgekit.deploy import wheels

    cache = Path(os.environ.get("EDGEKIT_TEST_WHEEL_CACHE")
                 or Path.home() / ".cache" / "edgekit" / "test-wheelhouse")
    cache.mkdir(parents=True, exist_ok=True)
    (home / "wheelhouse").symlink_to(cache)
    pinned = home / "node-wheels"
    pinned.mkdir()
    arch = wheels.norm_arch(platform.machine())
    built = wheels.edgekit_wheel(home / "wheelhouse", arch)
    (pinned / built.name).write_bytes(built.read_bytes())
    os.environ[wheels.NODE_WHEEL_ENV] = str(pinned)


@contextlib.contextmanager
def world(specs: list[NodeSpec] | None = None) -> Iterator[tuple[VirtualCluster, Path]]:
    """(the cluster, a scratch folder) with EDGEKIT_HOME set for this process."""
    if os.geteuid() != 0:
        sys.exit("needs root: the virtual cluster makes users, cgroups and sshd (use sudo)")
    scratch = Path(tempfile.mkdtemp(prefix="ek-bench-"))
    home = scratch / "home"
    home.mkdir()
    os.environ["EDGEKIT_HOME"] = str(home)
    settings.EDGEKIT_HOME = home
    _pin_wheels(home)
    try:
        with VirtualCluster.up(specs or SPECS, home=home) as vc:
            yield vc, scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def undeploy(inv: Path) -> None:
    """Take the deployment down (runtimes too); at least its head if undeploy fails."""
    from edgekit.deploy import head, ops
    from edgekit.deploy.layout import deployment_dir

    try:
        ops.undeploy(inv, purge=True)
    except Exception:
        head.stop(deployment_dir(inv) / "head")


def finish(out: dict, path: Path | None, table: str = "") -> None:
    """Print the table (if any) and the JSON; also write the JSON to `path` when given."""
    import json

    if table:
        print(table)
    print(json.dumps(out, indent=1))
    if path:
        path.write_text(json.dumps(out, indent=1))
