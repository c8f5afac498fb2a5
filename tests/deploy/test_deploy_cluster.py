"""`edgekit deploy` end to end on the virtual cluster: real sshd, real Ray, real ONNX Runtime,
the real HTTP API, a real model (the PP-OCR direction classifier). One deployment is built up
step by step (the runtime install is the slow part, done once), so the tests run in order;
each fault is injected into that one deployment and the next test starts from its repair."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import killpoints
import numpy as np
import onnxruntime as ort
import psutil
import pytest
from helpers import infer_json, padded_bundle, sub_inventory

from edgekit import inventory
from edgekit.deploy import bundle as bundle_mod
from edgekit.deploy import head, ops, state, transfer, versions
from edgekit.deploy.flow import DeployOptions, deploy
from edgekit.deploy.layout import NodeLayout, deployment_dir
from edgekit.errors import ModelError
from edgekit.model import samples
from edgekit.remote.ssh import Connection

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
WORKERS = ["pi1", "pi2", "pi3"]
MODEL = "ppocr-cls"
PAD = 48_000_000  # padding of the later versions: long enough a push to interrupt


@pytest.fixture(scope="module")
def world(vcluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deploy")
    inv = sub_inventory(vcluster.inventory_path, tmp / "pis.txt", WORKERS)
    yield {"vc": vcluster, "tmp": tmp, "inv": inv, "model": samples.path(MODEL)}
    try:
        ops.undeploy(inv, purge=True)
    except Exception:
        head.stop(deployment_dir(inv) / "head")


def _opts(world, target: Path | None = None, **kw) -> DeployOptions:
    return DeployOptions(world["inv"], target or world["model"], name=MODEL, offline=True, **kw)


def _image() -> np.ndarray:
    return np.random.default_rng(7).random((1, 3, 48, 192), dtype=np.float32)


def _infer(world, api: str) -> np.ndarray:
    return infer_json(world["inv"], api, MODEL, _image())


def _how(world, name: str) -> str:
    """How deploy runs the node's services: user units where it has a systemd user manager
    (pi1, pi2 where the host can), edgekit's supervisor otherwise (pi3: init none)."""
    return "systemd" if world["vc"].record.node(name).init == "systemd" else "supervisor"


def _conn(world, name: str) -> Connection:
    return Connection(inventory.load(world["vc"].inventory_path).get(name))


def _active(world, name: str) -> str | None:
    with _conn(world, name) as c:
        root = c.run("echo $HOME/.edgekit", check=True).stdout.strip()
        return versions.active(c, NodeLayout(root), MODEL)


def _wait_partial(world, name: str, sha: str, done: threading.Event | subprocess.Popen) -> bool:
    """Poll the node until an upload of blob `sha` has started (True) or the deploy ended."""
    with _conn(world, name) as c:
        root = c.run("echo $HOME/.edgekit", check=True).stdout.strip()
        for _ in range(2000):
            if c.run(f"test -s {root}/blobs/.partial/{sha}").ok:
                return True
            if (done.is_set() if isinstance(done, threading.Event) else done.poll() is not None):
                return False
            time.sleep(0.02)
    return False


def _one_version(world, want: str) -> None:
    """Issue 13: `edgekit status --json`, the API's model metadata and the deploy state name
    the same version id, and the API serves /v2/models/{m}/versions/{that id}."""
    import urllib.request

    st = ops.status(world["inv"]).to_dict()
    token = (deployment_dir(world["inv"]) / "api-token").read_text().strip()
    req = urllib.request.Request(f"{world['api']}/v2/models/{MODEL}",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        meta = json.loads(resp.read())
    assert st["apps"][MODEL]["version"] == want, st["apps"]
    assert st["apps"][MODEL]["served_version"] == want, st["apps"]
    assert meta["versions"] == [want], meta
    got = infer_json(world["inv"], world["api"], MODEL, _image(), version=want)
    assert np.allclose(got, _infer(world, world["api"]))


def _pad_sha(bundle: Path) -> str:
    files = json.loads((bundle / "manifest.json").read_text())["files"]
    return next(f["sha256"] for f in files if f["path"] == "pad.bin")


def test_deploy_real_model_serves_on_every_node(world):
    res = deploy(_opts(world))
    assert res.ok, res.to_dict()
    assert all(res.nodes[n].healthy for n in WORKERS)
    assert {n: res.nodes[n].services for n in WORKERS} == {n: _how(world, n) for n in WORKERS}
    got = _infer(world, res.head["api_url"])
    want = ort.InferenceSession(str(world["model"])).run(None, {"x": _image()})[0].ravel()
    assert np.allclose(got, want, atol=1e-4), (got, want)
    world["api"], world["v1"] = res.head["api_url"], res.nodes["pi1"].version
    world["bundle"] = Path(json.loads(
        (deployment_dir(world["inv"]) / "state.json").read_text())["apps"][MODEL]["bundle"])
    _one_version(world, world["v1"])


def test_second_identical_deploy_sends_nothing(world):
    t0 = time.monotonic()
    res = deploy(_opts(world))
    elapsed = time.monotonic() - t0
    assert res.ok, res.to_dict()
    assert sum(r.sent_bytes for r in res.nodes.values()) == 0
    assert all(r.runtime == "up to date" for r in res.nodes.values())
    assert {n: r.services for n, r in res.nodes.items()} == {
        n: _how(world, n) + " (running)" for n in WORKERS}
    print(f"\nno-op redeploy of 3 nodes: {elapsed:.2f} s")  # measured, not asserted


def test_corrupted_file_on_a_node_is_detected_and_replaced(world):
    model = next(f for f in json.loads((world["bundle"] / "manifest.json").read_text())["files"]
                 if f["path"].endswith(".onnx"))
    with _conn(world, "pi2") as c:
        blob = c.run(f"echo $HOME/.edgekit/blobs/{model['sha256']}", check=True).stdout.strip()
        c.run(f"printf 'XXXX' | dd of={blob} bs=1 seek=100 conv=notrunc", check=True)
    res = deploy(_opts(world))
    assert res.ok, res.to_dict()
    assert res.nodes["pi2"].sent_bytes == model["bytes"]
    assert res.nodes["pi1"].sent_bytes == 0
    with _conn(world, "pi2") as c:
        assert transfer.hash_on_node(c, [blob])[blob] == model["sha256"]


def test_killed_deploy_keeps_previous_version_then_rerun_completes(world):
    b2 = padded_bundle(world["bundle"], world["tmp"] / "b2" / MODEL, PAD, seed=2)
    script = ("from edgekit.deploy.flow import DeployOptions, deploy;"
              f"deploy(DeployOptions({str(world['inv'])!r}, {str(b2)!r}, name={MODEL!r},"
              " offline=True))")
    proc = subprocess.Popen([sys.executable, "-c", script], env=os.environ.copy())
    try:
        assert _wait_partial(world, "pi1", _pad_sha(b2), proc), "the push never started"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # each node switches atomically at the end of its own push: pi1, caught mid-push, is on
    # its old version; a node whose push had ended before the kill may be on the new one,
    # complete (loaded machines: seen in CI), never on anything else
    v2 = bundle_mod.load(b2, MODEL).version
    seen = {n: _active(world, n) for n in WORKERS}
    assert seen["pi1"] == world["v1"] and set(seen.values()) <= {world["v1"], v2}, seen
    inv = world["inv"]
    # killed before pi1's switch: status says what the nodes and the API say (issue 16)
    st, real, bad = killpoints.truthful_status(inv, WORKERS, MODEL)
    assert not bad, (bad, st)
    assert real.on_disk["pi1"] == world["v1"] and not st["nodes"]["pi1"]["mismatch"]
    # killed again right after every node switched, before the API moved: each node's disk
    # is ahead of its workers, and status flags each one with the fix
    proc = killpoints.start_deploy(inv, b2, MODEL)
    try:
        switched = killpoints.wait_switched(inv, WORKERS, MODEL, v2, proc)
    finally:
        killpoints.kill(proc)
    st, real, bad = killpoints.truthful_status(inv, WORKERS, MODEL)
    assert not bad, (bad, st)
    if switched and real.api_version == world["v1"]:  # else the deploy got past the API
        assert sorted(st["mismatch"]) == WORKERS, st
        assert "edgekit deploy" in st["nodes"]["pi1"]["fix"]
    print(f"\nkilled after the switch (switched: {switched}): API at "
          f"{'v1' if real.api_version == world['v1'] else 'v2'}, flagged {st['mismatch']}")
    res = deploy(_opts(world, b2))
    assert res.ok, res.to_dict()
    assert res.nodes["pi1"].sent_bytes < PAD  # resumed from the partial upload
    assert {_active(world, n) for n in WORKERS} == {res.nodes["pi1"].version}
    assert killpoints.converged(inv, WORKERS, MODEL, v2) == []
    st, _, bad = killpoints.truthful_status(inv, WORKERS, MODEL)
    assert not bad and not st["mismatch"], (bad, st)
    assert killpoints.looping(inv, WORKERS, MODEL, watch_s=3.0) == []
    world["v2"], world["b2"] = res.nodes["pi1"].version, b2
    _one_version(world, world["v2"])  # a redeploy of new content: a new id, shown alike


def _cut_ssh(user: str) -> int:
    """Kill the node's SSH sessions (not its listening sshd): the host loses the link."""
    n = 0
    for p in psutil.process_iter(["username", "name", "ppid"]):
        if p.info["username"] == user and p.info["name"] == "sshd":
            p.kill()
            n += 1
    return n


def test_node_lost_mid_push_keeps_its_version_and_rerun_completes(world):
    b3 = padded_bundle(world["bundle"], world["tmp"] / "b3" / MODEL, PAD, seed=3)
    done, box = threading.Event(), {}

    def run() -> None:
        try:
            box["res"] = deploy(_opts(world, b3))
        finally:
            done.set()

    t = threading.Thread(target=run)
    t.start()
    started = _wait_partial(world, "pi2", _pad_sha(b3), done)
    cut = _cut_ssh(world["vc"].record.node("pi2").user) if started else 0
    t.join()
    assert started and cut, "the push to pi2 was not caught in flight"
    res = box["res"]
    assert not res.ok and not res.nodes["pi2"].ok and res.nodes["pi2"].step == "push"
    assert res.nodes["pi1"].ok and res.nodes["pi1"].healthy and res.nodes["pi3"].healthy
    assert _active(world, "pi2") == world["v2"]  # the lost node still has its old version
    again = deploy(_opts(world, b3))
    assert again.ok, again.to_dict()
    assert again.nodes["pi2"].healthy and again.nodes["pi1"].sent_bytes == 0
    assert _active(world, "pi2") == again.nodes["pi1"].version


def test_rollback_switches_back(world):
    res = ops.rollback(world["inv"], MODEL, world["v2"])
    assert res.ok, res.to_dict()
    assert {_active(world, n) for n in WORKERS} == {world["v2"]}
    # the running API rolled its workers (no restart) to the rolled-back files on their nodes
    assert all(res.nodes[n].healthy for n in WORKERS), res.to_dict()
    st = ops._load(world["inv"])[2]
    assert st.apps[MODEL].version == world["v2"]
    _one_version(world, world["v2"])


def test_unreachable_and_32bit_nodes_are_reported_others_proceed(world):
    inv = world["inv"]
    good = inv.read_text()
    sub_inventory(world["vc"].inventory_path, inv, [*WORKERS, "pi4"])
    with inv.open("a") as fh:
        fh.write("nobody@127.0.0.1:1 name=ghost\n")
    dep = deployment_dir(inv)
    try:
        before = (dep / "state.json").read_bytes()
        strict = deploy(_opts(world, world["b2"], strict=True))
        assert not strict.ok and "--strict" in strict.error
        assert "32-bit" in strict.nodes["pi4"].detail
        assert "unreachable" in strict.nodes["ghost"].detail
        assert (dep / "state.json").read_bytes() == before  # nothing touched
        assert {_active(world, n) for n in WORKERS} == {world["v2"]}
        res = deploy(_opts(world, world["b2"]))
        assert not res.ok and all(res.nodes[n].ok and res.nodes[n].healthy for n in WORKERS)
        assert not res.nodes["pi4"].ok and not res.nodes["ghost"].ok
        assert "pi4" not in state.load(dep, str(inv)).nodes
    finally:
        inv.write_text(good)


def test_model_that_fits_no_node_is_refused_at_plan_time(world):
    from helpers import make_bundle

    big = make_bundle(world["tmp"] / "big" / "huge", seed=5, mem_bytes=64 * 2**30)
    with pytest.raises(ModelError, match="needs 65536 MB"):
        deploy(DeployOptions(world["inv"], big, dry_run=True))


def test_disk_full_keeps_old_version(world):
    from helpers import make_bundle

    from edgekit.deploy.bundle import load
    from edgekit.deploy.push import Retention, push_node

    rec = world["vc"].record.node("pi3")
    small = Path(f"/var/tmp/ek-small-{rec.user}")
    small.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(small)], check=True)
    try:
        subprocess.run(["chown", rec.user, str(small)], check=True)
        b1 = load(make_bundle(world["tmp"] / "d1" / "tiny", seed=1))
        b2 = load(make_bundle(world["tmp"] / "d2" / "tiny", seed=2, extra_bytes=30_000_000))
        with _conn(world, "pi3") as c:
            lay = NodeLayout(str(small))
            push_node(c, lay, b1, Retention([], 2))
            with pytest.raises(transfer.DiskFullError, match="not enough disk space") as exc:
                push_node(c, lay, b2, Retention([], 2))
            assert "node pi3" in str(exc.value.where)
            assert versions.active(c, lay, "tiny") == b1.version
            assert c.run(f"ls {lay.partial} 2>/dev/null | wc -l").stdout.strip() == "0"
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_inventory_change_adds_and_removes_nodes(world):
    inv = world["inv"]
    sub_inventory(world["vc"].inventory_path, inv, ["pi1", "pi2"])  # pi3 leaves
    res = deploy(_opts(world, world["b2"]))
    assert res.ok, res.to_dict()
    assert res.nodes["pi3"].step == "removed"
    with _conn(world, "pi3") as c:
        assert not c.run("ls $HOME/.edgekit/apps 2>/dev/null").stdout.strip()
        assert not c.run("ps -u $(id -u) -o args= | grep -c '[r]aylet'").stdout.strip("0\n")
    sub_inventory(world["vc"].inventory_path, inv, WORKERS)  # and comes back
    res = deploy(_opts(world, world["b2"]))
    assert res.ok and res.nodes["pi3"].healthy, res.to_dict()
    assert res.nodes["pi3"].runtime == "up to date"  # undeploy of a removed node keeps it


def test_undeploy_leaves_no_edgekit_process(world):
    res = ops.undeploy(world["inv"])
    assert res.ok, res.to_dict()
    for name in WORKERS:
        with _conn(world, name) as c:
            ps = c.run("ps -u $(id -u) -o args=").stdout
            assert "ray" not in ps and "edgekit" not in ps, ps
            kept = c.run("ls $HOME/.edgekit").stdout.split()
            assert "runtime" in kept and "apps" not in kept
            assert "edgekit-" not in c.run("ls $HOME/.config/systemd/user/ 2>/dev/null").stdout
