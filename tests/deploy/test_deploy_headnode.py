"""`role=head` in the inventory, end to end on the virtual cluster: pi1 runs the Ray head and the
inference API as its own services (user units where it has a systemd user manager), pi3 joins
it (edgekit's supervisor: init none); the host runs no head and reaches the API through an SSH
tunnel for verify, status, infer and bench. Then a new version, rollback, the role removed
(the head comes back to the host) and undeploy. The tests run in order on one deployment."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from helpers import padded_bundle, sub_inventory

from edgekit import inventory
from edgekit.client import Client
from edgekit.deploy import head, headnode, ops, state, verify
from edgekit.deploy.flow import DeployOptions, deploy
from edgekit.deploy.layout import deployment_dir
from edgekit.model import samples
from edgekit.node import supervisor
from edgekit.remote.ssh import Connection

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
NODES = ["pi1", "pi3"]
HEAD = "pi1"
MODEL = "ppocr-cls"


@pytest.fixture(scope="module")
def hn(vcluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("headnode")
    inv = sub_inventory(vcluster.inventory_path, tmp / "pis.txt", NODES, {HEAD: "role=head"})
    world = {"vc": vcluster, "tmp": tmp, "inv": inv, "dep": deployment_dir(inv)}
    yield world
    try:
        ops.undeploy(inv, purge=True)
    except Exception:
        head.stop(deployment_dir(inv) / "head")


def _opts(hn, target: Path | None = None) -> DeployOptions:
    return DeployOptions(hn["inv"], target or samples.path(MODEL), name=MODEL, offline=True)


def _image() -> np.ndarray:
    return np.random.default_rng(11).random((1, 3, 48, 192), dtype=np.float32)


def _want() -> np.ndarray:
    return ort.InferenceSession(str(samples.path(MODEL))).run(None, {"x": _image()})[0]


def _ps(hn, name: str) -> str:
    node = inventory.load(hn["vc"].inventory_path).get(name)
    with Connection(node) as c:
        return c.run("ps -u $(id -u) -o args=").stdout


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekit.cli.main", *args],
                          capture_output=True, text=True, timeout=300)


def _how(hn, name: str) -> str:
    return "systemd" if hn["vc"].record.node(name).init == "systemd" else "supervisor"


def _st(hn) -> state.DeployState:
    return state.load(hn["dep"], str(hn["inv"]))


def test_deploy_puts_ray_head_and_api_on_the_head_node(hn):
    res = deploy(_opts(hn))
    assert res.ok, res.to_dict()
    assert all(res.nodes[n].healthy and res.nodes[n].step == "serving" for n in NODES)
    assert {n: res.nodes[n].services for n in NODES} == {n: _how(hn, n) for n in NODES}
    assert res.head["where"] == HEAD and "tunnel" in res.head and "warning" not in res.head
    hn["v1"] = res.nodes[HEAD].version
    st = _st(hn)
    assert st.head.where == HEAD and st.head.api_url.startswith("http://127.0.0.1:")
    # the Ray head (GCS) and the API run as pi1's user; pi3 runs a raylet only
    ps1, ps3 = _ps(hn, HEAD), _ps(hn, "pi3")
    assert "gcs_server" in ps1 and "edgekit.deploy.head api" in ps1, ps1
    assert "raylet" in ps3 and "gcs_server" not in ps3 and "edgekit.deploy.head" not in ps3
    raylets = [ln for ln in ps1.splitlines() if ln.split(" ", 1)[0].endswith("/raylet")]
    assert len(raylets) == 1, ps1  # the head is the node's one raylet, not a second one
    # nothing runs for this deployment on the host
    assert supervisor.running_pid(hn["dep"] / "head") is None
    mine = str(hn["dep"])
    host = subprocess.run(["ps", "-e", "-o", "args="], capture_output=True, text=True).stdout
    assert mine not in host
    # the API answers only on pi1's loopback: the tunnel reaches it
    token = (hn["dep"] / "api-token").read_text().strip()
    with headnode.reach(st) as url:
        assert url != st.head.api_url
        h = verify.check(url, token, [MODEL])
        assert h.ready and h.alive_nodes == set(NODES)
        got = Client(url, token=token).infer(MODEL, {"x": _image()})
        # one version id: the API on the node (reading the node's copy) shows deploy's
        assert h.versions[MODEL] == hn["v1"]
    assert np.allclose(next(iter(got.values())), _want(), atol=1e-4)
    assert ops.status(hn["inv"]).apps[MODEL]["served_version"] == hn["v1"]


def test_redeploy_restarts_nothing(hn):
    res = deploy(_opts(hn))
    assert res.ok, res.to_dict()
    assert sum(r.sent_bytes for r in res.nodes.values()) == 0
    assert {n: res.nodes[n].services for n in NODES} == {
        n: _how(hn, n) + " (running)" for n in NODES}
    assert res.head["api"] == "running"


def test_cli_infer_bench_status_logs_through_the_tunnel(hn):
    x = hn["tmp"] / "x.npy"
    np.save(x, _image())
    inv = str(hn["inv"])
    out = _cli("infer", "--nodes", inv, "--model", MODEL, "--input", str(x), "--json")
    assert out.returncode == 0, out.stderr
    entry = next(iter(json.loads(out.stdout)["outputs"].values()))
    want = _want()[0]
    assert [t["class"] for t in entry["top_k"]] == list(np.argsort(want)[::-1])
    assert np.allclose([t["score"] for t in entry["top_k"]], np.sort(want)[::-1], atol=1e-4)
    out = _cli("bench", "--nodes", inv, "--model", MODEL, "--duration", "3", "--concurrency",
               "2", "--json")
    assert out.returncode == 0, out.stderr
    b = json.loads(out.stdout)
    assert b["ok"] > 0 and b["errors"] == 0, b
    out = _cli("status", "--nodes", inv, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    s = json.loads(out.stdout)
    assert s["api_ready"] and s["tunnel"] and s["head"]["where"] == HEAD
    assert all(s["nodes"][n]["healthy"] for n in NODES)
    assert s["nodes"][HEAD]["services"].get("api") is True, s["nodes"][HEAD]
    out = _cli("monitor", "--nodes", inv, "--once", "--json")
    assert out.returncode == 0, out.stderr
    assert set(json.loads(out.stdout)["nodes"]) == set(NODES)  # the thermal controller's rows
    out = _cli("logs", "--nodes", inv, "head", "--service", "api")
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    out = _cli("logs", "--nodes", inv, HEAD, "--service", "ray-head")
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    # the API token is on pi1 only as a 0600 file, and in no process's arguments
    ps1 = _ps(hn, HEAD)
    assert (hn["dep"] / "api-token").read_text().strip() not in ps1


def test_new_version_then_rollback_restart_the_api_on_the_node(hn):
    src = Path(_st(hn).apps[MODEL].bundle)
    b2 = padded_bundle(src, hn["tmp"] / "b2" / MODEL, 1_000_000, seed=4)
    res = deploy(_opts(hn, b2))
    assert res.ok, res.to_dict()
    v2 = res.nodes[HEAD].version
    assert v2 != hn["v1"] and res.head["api"] == "restarted"
    back = ops.rollback(hn["inv"], MODEL, hn["v1"])
    assert back.ok, back.to_dict()
    assert all(back.nodes[n].healthy for n in NODES), back.to_dict()
    assert _st(hn).apps[MODEL].version == hn["v1"]
    # the process serving on pi1 runs the rewritten config (its marker: that file's sha256)
    node = inventory.load(hn["vc"].inventory_path).get(HEAD)
    with Connection(node) as c:
        cfg = c.run("cat $HOME/.edgekit/run/api.json", check=True).stdout
        mark = c.run("cat $HOME/.edgekit/run/api.serving", check=True).stdout.strip()
    assert json.loads(cfg)["version"] == hn["v1"]
    assert mark == hashlib.sha256(cfg.encode()).hexdigest()


def test_removing_the_role_brings_the_head_back_to_the_host(hn):
    sub_inventory(hn["vc"].inventory_path, hn["inv"], NODES)
    try:
        res = deploy(_opts(hn))
        assert res.ok, res.to_dict()
        assert res.head["where"] == "host" and all(res.nodes[n].healthy for n in NODES)
        assert supervisor.running_pid(hn["dep"] / "head") is not None
        ps1 = _ps(hn, HEAD)
        assert "edgekit.deploy.head" not in ps1 and "gcs_server" not in ps1, ps1
        got = Client(res.head["api_url"], token=(hn["dep"] / "api-token").read_text().strip()
                     ).infer(MODEL, {"x": _image()})
        assert np.allclose(next(iter(got.values())), _want(), atol=1e-4)
    finally:
        sub_inventory(hn["vc"].inventory_path, hn["inv"], NODES, {HEAD: "role=head"})


def test_undeploy_leaves_no_process(hn):
    assert deploy(_opts(hn)).ok  # the head back on pi1 first: undeploy stops it there
    res = ops.undeploy(hn["inv"])
    assert res.ok, res.to_dict()
    assert supervisor.running_pid(hn["dep"] / "head") is None
    for name in NODES:
        ps = _ps(hn, name)
        assert "ray" not in ps and "edgekit" not in ps, ps
        node = inventory.load(hn["vc"].inventory_path).get(name)
        with Connection(node) as c:
            assert "edgekit-" not in c.run("ls $HOME/.config/systemd/user/ 2>/dev/null").stdout
