"""`edgekit deploy` through systemd user units, for real: the virtual nodes run a systemd user
manager as a Pi does, so deploy takes the same path it takes on a board. The services run as
units, systemd restarts a killed Ray worker and the node serves again, a reboot of the node
brings them back without a deploy, and undeploy leaves no unit and no process."""

from __future__ import annotations

import time

import pytest
from helpers import sub_inventory

from edgekit import inventory
from edgekit.deploy import head, ops, verify
from edgekit.deploy.flow import DeployOptions, deploy
from edgekit.deploy.layout import deployment_dir
from edgekit.model import samples
from edgekit.remote.ssh import Connection
from edgekit.virtual import usermanager

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
NODES = ["pi1", "pi2"]
MODEL = "ppocr-cls"
UNITS = "edgekit-ray-worker.service edgekit-agent.service"


@pytest.fixture(scope="module")
def sd(vcluster, tmp_path_factory):
    if vcluster.record.node("pi1").init != "systemd":
        pytest.skip(f"no systemd user manager on the virtual nodes: {usermanager.unavailable()}")
    inv = sub_inventory(vcluster.inventory_path, tmp_path_factory.mktemp("sd") / "sd.txt", NODES)
    res = deploy(DeployOptions(inv, samples.path(MODEL), name=MODEL, offline=True))
    token = (deployment_dir(inv) / "api-token").read_text().strip()
    yield {"vc": vcluster, "inv": inv, "res": res, "token": token}
    try:
        ops.undeploy(inv)
    except Exception:
        head.stop(deployment_dir(inv) / "head")


def _conn(sd, name: str) -> Connection:
    return Connection(inventory.load(sd["vc"].inventory_path).get(name))


def _units(c: Connection) -> list[str]:
    return c.run(f"systemctl --user is-active {UNITS}").stdout.split()


def _main_pid(c: Connection) -> int:
    out = c.run("systemctl --user show -p MainPID --value edgekit-ray-worker.service")
    return int(out.stdout.strip() or 0)


def _generation(sd, node: str) -> tuple[bool, int]:
    """(alive, generation) of the node's replica as the API sees it (a recreated worker
    has a higher generation)."""
    _, status = verify._get(f"{sd['res'].head['api_url']}/edgekit/status", sd["token"])
    for r in (status or {}).get("replicas", []):
        if r["nodes"] == [node]:
            return bool(r["alive"]), max(r["generations"])
    return False, -1


def _serves_again(sd, node: str, before: int, timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive, gen = _generation(sd, node)
        if alive and gen > before:
            return
        time.sleep(1.0)
    pytest.fail(f"{node}: no new live worker after {timeout_s:.0f} s: {_generation(sd, node)}")


def test_services_run_as_user_units(sd):
    res = sd["res"]
    assert res.ok, res.to_dict()
    assert {n: res.nodes[n].services for n in NODES} == {n: "systemd" for n in NODES}
    for name in NODES:
        with _conn(sd, name) as c:
            assert _units(c) == ["active", "active"]
            assert _main_pid(c) in sd["vc"].group(name).pids()  # under the board's CPU cap
            assert not c.run("test -e $HOME/.edgekit/run/supervisor.pid").ok
    st = ops.status(sd["inv"]).to_dict()
    assert all(st["nodes"][n]["systemd"] for n in NODES)
    assert st["nodes"]["pi1"]["services"] == {"ray-worker": True, "agent": True}


def test_killed_ray_worker_is_restarted_by_systemd_and_serves_again(sd):
    _, before = _generation(sd, "pi1")
    with _conn(sd, "pi1") as c:
        old = _main_pid(c)
        c.run(f"kill -9 {old}", check=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (_main_pid(c) not in (0, old)
                                                    and _units(c) == ["active", "active"]):
            time.sleep(0.5)
        assert _main_pid(c) not in (0, old), "systemd did not restart the Ray worker"
        restarts = c.run("systemctl --user show -p NRestarts --value edgekit-ray-worker.service")
        assert int(restarts.stdout.strip()) >= 1  # by systemd (2 seen once: a start that failed)
    _serves_again(sd, "pi1", before)


def test_reboot_brings_the_services_back_without_a_deploy(sd):
    _, before = _generation(sd, "pi2")
    with _conn(sd, "pi2") as c:
        old = _main_pid(c)
    sd["vc"].reboot("pi2")
    with _conn(sd, "pi2") as c:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _units(c) != ["active", "active"]:
            time.sleep(0.5)
        assert _units(c) == ["active", "active"]
        assert _main_pid(c) != old
    _serves_again(sd, "pi2", before)


def test_undeploy_leaves_no_unit_and_no_process(sd):
    res = ops.undeploy(sd["inv"])
    assert res.ok, res.to_dict()
    for name in NODES:
        with _conn(sd, name) as c:
            ps = c.run("ps -u $(id -u) -o args=").stdout
            assert "ray" not in ps and "edgekit" not in ps, ps
            assert "edgekit-" not in c.run("ls $HOME/.config/systemd/user/ 2>/dev/null").stdout
            listed = c.run("systemctl --user list-units --all --no-legend 'edgekit-*'").stdout
            assert not listed.strip(), listed
