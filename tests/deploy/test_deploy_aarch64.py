"""The real Pi stack end to end: `edgekit deploy --offline` to an aarch64 Pi 4 (Cortex-A72), an
aarch64 Pi 5 (Cortex-A76) and an x86 node. The aarch64 wheelhouse (ORT, Ray, numpy, LiteRT,
onnxruntime-extensions) and edgekit's cross-compiled kernels are built on the host and pushed;
each node self-tests the model with its own runtime; Ray runs aarch64 raylets and workers
under qemu-user; answers through the API from each aarch64 node equal ONNX Runtime here.

Slow: emulation makes a Pi 4 node's runtime install, Ray start and first model load take
minutes (the whole module ~15-25 min on this 2-core machine), so it runs only when asked:
    ./dev.sh test --qemu-deploy tests/deploy/test_deploy_aarch64.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from helpers import sub_inventory
from vcluster_helpers import SKIP_REASON

from edgekit import settings
from edgekit.deploy import head, ops
from edgekit.deploy.flow import DeployOptions, deploy
from edgekit.deploy.layout import deployment_dir
from edgekit.model import samples
from edgekit.virtual import qemu, state
from edgekit.virtual.cluster import NodeSpec, VirtualCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.qemu, pytest.mark.qemu_deploy,
              pytest.mark.timeout(3000)]  # the first deploy under qemu alone takes 5-15 min
NODES = ["pi1", "pi2", "pi3"]
ARM = ["pi1", "pi2"]
WANT_KERNELS = {"pi1": "neon", "pi2": "neon-dotprod", "pi3": "avx2"}
VERIFY_S = 1500.0  # a Pi 4 node under qemu: Ray start ~2 min, first worker + model load more


@pytest.fixture(scope="module")
def a64world(ek_home: Path, tmp_path_factory: pytest.TempPathFactory):
    why = SKIP_REASON or qemu.unavailable()
    if why:
        pytest.skip(f"aarch64 nodes: {why}")
    specs = [NodeSpec("pi4", cooling="fan", arch="aarch64"),
             NodeSpec("pi5", cooling="fan", arch="aarch64"),
             NodeSpec("pi4", cooling="fan", init="none")]
    vc = VirtualCluster.up(specs, home=tmp_path_factory.mktemp("ekhome-a64"))
    # deploy trusts host keys from the session's EDGEKIT_HOME: record this cluster's there
    state.add_known_hosts(settings.EDGEKIT_HOME / "known_hosts",
                          [n.host_key_line for n in vc.nodes])
    tmp = tmp_path_factory.mktemp("deploy-a64")
    inv = sub_inventory(vc.inventory_path, tmp / "pis.txt", NODES)
    world = {"vc": vc, "inv": inv, "tmp": tmp}
    try:
        yield world
    finally:
        try:
            ops.undeploy(inv, purge=True)
        except Exception:
            head.stop(deployment_dir(inv) / "head")
        vc.down()


def _deploy(world, target: Path, name: str) -> dict:
    t0 = time.monotonic()
    res = deploy(DeployOptions(world["inv"], target, name=name, offline=True,
                               verify_timeout_s=VERIFY_S))
    out = res.to_dict()
    out["wall_s"] = round(time.monotonic() - t0, 1)
    keys = ("ok", "step", "detail", "runtime", "seconds", "selftest")
    print(f"\n[a64] deploy {name}: {out['wall_s']} s; per node:",
          {n["node"]: {k: n.get(k) for k in keys} for n in out["nodes"]})
    assert res.ok, json.dumps(out, indent=1, default=str)[-6000:]
    return out


def _infer_each_node(world, api: str, model: str, feeds: dict[str, np.ndarray],
                     want: dict[str, np.ndarray], atol: float) -> dict[str, int]:
    """Concurrent binary requests until every aarch64 node has answered; each answer checked."""
    from edgekit.client import Client

    token = (deployment_dir(world["inv"]) / "api-token").read_text().strip()
    served: dict[str, int] = {}

    def one(_i: int) -> str:
        client = Client(api, token=token, timeout_s=600)
        got = client.infer(model, feeds)
        assert sorted(got) == sorted(want), (sorted(got), sorted(want))
        for name, w in want.items():
            np.testing.assert_allclose(np.asarray(got[name]).ravel(), w.ravel(), atol=atol,
                                       rtol=1e-3, err_msg=f"{model} output {name}")
        return client.last_node or "?"

    deadline = time.monotonic() + 900
    with ThreadPoolExecutor(4) as pool:
        while not all(n in served for n in ARM) and time.monotonic() < deadline:
            for node in pool.map(one, range(8)):
                served[node] = served.get(node, 0) + 1
    assert all(n in served for n in ARM), served
    return served


def _status(world) -> dict:
    proc = subprocess.run([sys.executable, "-m", "edgekit.cli.main", "status", "--nodes",
                           str(world["inv"]), "--json"], capture_output=True, text=True,
                          timeout=600, check=False, env={**os.environ, "COLUMNS": "160"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_ppocr_cls_on_aarch64_pi4_pi5_and_x86(a64world):
    import onnxruntime as ort

    model = samples.path("ppocr-cls")
    out = _deploy(a64world, model, "ppocr-cls")
    nodes = {n["node"]: n for n in out["nodes"]}
    assert all(nodes[n]["healthy"] for n in NODES)
    assert all(nodes[n]["selftest"].get("ok") for n in NODES), nodes
    st = _status(a64world)
    kernels = {n: st["nodes"][n].get("kernels") for n in NODES}
    assert kernels == WANT_KERNELS, kernels
    x = np.random.default_rng(7).random((1, 3, 48, 192), dtype=np.float32)
    sess = ort.InferenceSession(str(model))
    want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x}), strict=True))
    served = _infer_each_node(a64world, out["head"]["api_url"], "ppocr-cls", {"x": x}, want,
                              atol=1e-4)
    print(f"[a64] ppocr-cls answers per node: {served}")


def test_pruned_model_runs_sparse_layers_on_neon(a64world):
    import onnxruntime as ort

    from edgekit.native import ortops
    from edgekit.native.prune import Layers, prune_model
    from tests.native.test_prune_ort import _model

    src, pruned = a64world["tmp"] / "m.onnx", a64world["tmp"] / "m.pruned.onnx"
    _model(src)
    report, _ = prune_model(src, pruned, (2, 4), Layers(min_params=1000))
    assert report.layers and ortops.uses_custom_op(str(pruned))
    out = _deploy(a64world, pruned, "sparse")
    st = _status(a64world)
    assert {n: st["nodes"][n].get("kernels") for n in NODES} == WANT_KERNELS
    x = np.random.default_rng(5).standard_normal((4, 128)).astype(np.float32)
    sess = ort.InferenceSession(str(pruned), ortops.session_options())
    want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x}), strict=True))
    served = _infer_each_node(a64world, out["head"]["api_url"], "sparse", {"x": x}, want,
                              atol=1e-4)
    print(f"[a64] pruned model answers per node: {served}")


def test_tflite_model_on_aarch64(a64world):
    # last: LiteRT joins the node requirements, so the runtime is installed again (minutes)
    from ai_edge_litert.interpreter import Interpreter

    model = samples.path("face-detection")
    out = _deploy(a64world, model, "face-detection")
    interp = Interpreter(model_path=str(model))
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    x = np.random.default_rng(3).random(inp["shape"], dtype=np.float32)
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    want = {o["name"]: interp.get_tensor(o["index"]) for o in interp.get_output_details()}
    served = _infer_each_node(a64world, out["head"]["api_url"], "face-detection",
                              {inp["name"]: x}, want, atol=1e-3)
    print(f"[a64] face-detection answers per node: {served}")
