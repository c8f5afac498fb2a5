"""`role=head` in the inventory, end to end on the virtual cluster: pi1 runs the Ray head and the
inference API as its own services (user units where it has a systemd user manager), pi3 joins
it (edgekit's supervisor: init none); the host runs no head and reaches the API through an SSH
tunnel for verify, status, infer and bench. Then a new version, rollback, the role removed
(the head comes back to the host) and undeploy. The tests run in order on one deployment."""

from __future__ import annotations

import json
import subprocess
import sys
import time
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


def _on(hn, name: str, command: str) -> str:
    node = inventory.load(hn["vc"].inventory_path).get(name)
    with Connection(node) as c:
        return c.run(command, check=True).stdout


class _SteadyLoad:
    """`edgekit bench`'s load generator through its own tunnel to the API on pi1, in a
    thread until stopped. It does not ride out an unreachable API (retry_for_s=0): an API
    restart would show as errors and retries, a refusal as refused_503."""

    def __init__(self, hn):
        import asyncio
        import threading

        from edgekit.serve.loadgen import BenchSettings, run_bench

        self.stop, self.summary = threading.Event(), {}
        self._reach = headnode.reach(_st(hn))
        url = self._reach.__enter__()
        settings = BenchSettings(3600.0, concurrency=2, retry_for_s=0.0, stop=self.stop,
                                 token=(hn["dep"] / "api-token").read_text().strip())

        def run() -> None:
            rep = asyncio.run(run_bench(url, MODEL, {"x": _image()}, settings))
            self.summary = rep.summary()

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def finish(self) -> dict:
        self.stop.set()
        self.thread.join(180)
        self._reach.__exit__(None, None, None)
        return self.summary


def test_new_version_then_rollback_roll_without_an_api_restart_under_load(hn):
    """Issue 16: a new version under a steady load, then a rollback: the API is never
    restarted (its process and its serving marker stay), 0 errors and 0 refused requests
    (counted, not timed); the API's config still names what it serves, for a later start."""
    src = Path(_st(hn).apps[MODEL].bundle)
    b2 = padded_bundle(src, hn["tmp"] / "b2" / MODEL, 1_000_000, seed=4)
    mark = _on(hn, HEAD, "cat $HOME/.edgekit/run/api.serving").strip()
    load = _SteadyLoad(hn)
    try:
        res = deploy(_opts(hn, b2))
        back = ops.rollback(hn["inv"], MODEL, hn["v1"])
    finally:
        got = load.finish()
    assert res.ok, res.to_dict()
    v2 = res.nodes[HEAD].version
    assert v2 != hn["v1"] and res.head["api"] == "reloaded", res.head
    assert sorted(res.head["load"]["ok"]) == sorted(NODES), res.head
    assert back.ok, back.to_dict()
    assert all(back.nodes[n].healthy for n in NODES), back.to_dict()
    assert _st(hn).apps[MODEL].version == hn["v1"]
    print(f"\nsteady load through a deploy and a rollback: {got}")
    assert got["ok"] > 0 and got["errors"] == 0 and got["refused_503"] == 0, got
    assert got["retried"] == 0, got  # the API never stopped answering
    # the same API process throughout (its marker is the config it started with) ...
    assert _on(hn, HEAD, "cat $HOME/.edgekit/run/api.serving").strip() == mark
    # ... and its config names the version now served, for its next start
    cfg = json.loads(_on(hn, HEAD, "cat $HOME/.edgekit/run/api.json"))
    assert cfg["version"] == hn["v1"]
    token = (hn["dep"] / "api-token").read_text().strip()
    with headnode.reach(_st(hn)) as url:
        h = verify.check(url, token, [MODEL])
    assert {h.served[n][MODEL] for n in NODES} == {hn["v1"]}, h.served


def test_a_worker_that_cannot_load_the_new_version_leaves_the_old_serving(hn):
    """pi3's folder of the new version is damaged (complete marker, wrong model bytes) and
    the self-test is off, so only its worker finds out: its own error (sha256 mismatch, not
    ActorDiedError) is in the deploy report, the API's status and log; pi3 keeps serving
    the old version, pi1 serves the new one, the deploy is degraded."""
    from edgekit.deploy import bundle as bundle_mod

    src = Path(_st(hn).apps[MODEL].bundle)
    b3 = padded_bundle(src, hn["tmp"] / "b3" / MODEL, 1_000_000, seed=5)
    v3 = bundle_mod.load(b3, MODEL).version
    files = json.loads((b3 / "manifest.json").read_text())["files"]
    onnx_file = next(f["path"] for f in files if f["path"].endswith(".onnx"))
    node = inventory.load(hn["vc"].inventory_path).get("pi3")
    with Connection(node) as c:
        folder = c.run(f"echo $HOME/.edgekit/apps/{MODEL}/versions/{v3}", check=True
                       ).stdout.strip()
        paths = [f["path"] for f in files] + ["manifest.json"]
        c.run(" ".join(["mkdir -p", folder, *{str(Path(folder, p).parent) for p in paths}]),
              check=True)
        sftp = c.sftp()
        try:
            for f in [{"path": p} for p in paths]:
                data = b"damaged" if f["path"] == onnx_file else (b3 / f["path"]).read_bytes()
                with sftp.open(f"{folder}/{f['path']}", "wb") as fh:
                    fh.write(data)
            with sftp.open(f"{folder}/.complete", "wb") as fh:
                fh.write(b"")
        finally:
            sftp.close()
    opts = _opts(hn, b3)
    opts.selftest = False
    res = deploy(opts)
    assert res.outcome == "degraded" and res.serving == [HEAD], res.to_dict()
    r3 = res.nodes["pi3"]
    assert r3.kind == "load-failed" and "sha256 mismatch" in r3.detail, r3
    assert "ActorDiedError" not in r3.detail, r3
    token = (hn["dep"] / "api-token").read_text().strip()
    with headnode.reach(_st(hn)) as url:
        for _ in range(90):  # pi3's old worker may be coming back (replaced in place)
            h = verify.check(url, token, [MODEL])
            if "pi3" in h.served:
                break
            time.sleep(1)
        got = Client(url, token=token).infer(MODEL, {"x": _image()})
    assert h.served[HEAD][MODEL] == v3 and h.served["pi3"][MODEL] == hn["v1"], h.served
    assert "sha256 mismatch" in h.load_errors.get("pi3", ""), h.load_errors
    assert np.allclose(next(iter(got.values())), _want(), atol=1e-4)
    assert "sha256 mismatch" in ops.logs(hn["inv"], "head", "api", 200)
    _on(hn, "pi3", f"rm -rf {folder}")


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
