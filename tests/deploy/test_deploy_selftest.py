"""Deploy's self-test on the virtual cluster: real sshd, the real node runtime (a venv with
ONNX Runtime), the real PP-OCR classifier, the real API. Faults are put into a node's
installed runtime the way they happen on a board: a runtime whose ONNX Runtime computes a
wrong answer (a .pth hook in its site-packages perturbs InferenceSession.run), one whose
native module is built for another CPU (its ELF header says aarch64: the import fails), a
test that hangs and one that dies of SIGILL. The tests run in order on one deployment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from helpers import infer_json, padded_bundle, sub_inventory

from edgekit import inventory
from edgekit.deploy import head, ops, selftest, state, verify
from edgekit.deploy.bundle import load
from edgekit.deploy.flow import DeployOptions, deploy
from edgekit.deploy.layout import deployment_dir
from edgekit.model import samples
from edgekit.remote.ssh import Connection

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
NODES = ["pi1", "pi2", "pi3"]
MODEL = "ppocr-cls"
SITE = '"$(ls -d $HOME/.edgekit/runtime/lib/python3*/site-packages)"'

#: put into a node runtime's site-packages with a .pth that imports it (Debian's own
#: sitecustomize.py would shadow one of ours); MODE is set per fault
FAULT = '''
import importlib.abc, importlib.machinery, os, signal, sys, time

MODE = "__MODE__"


class _Wrong(importlib.abc.MetaPathFinder):
    """ONNX Runtime that adds 0.01 to every float output: a subtly wrong kernel."""

    def find_spec(self, name, path=None, target=None):
        if name != "onnxruntime.capi.onnxruntime_inference_collection":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            run = module.InferenceSession.run

            def wrong(self, output_names, input_feed, run_options=None):
                outs = run(self, output_names, input_feed, run_options)
                return [o + 0.01 if o.dtype.kind == "f" else o for o in outs]

            module.InferenceSession.run = wrong

        spec.loader.exec_module = exec_module
        return spec


if MODE == "wrong":
    sys.meta_path.insert(0, _Wrong())
elif any("selftest-hang" in a for a in sys.argv):
    time.sleep(3600)
elif any("selftest-sigill" in a for a in sys.argv):
    os.kill(os.getpid(), signal.SIGILL)
'''


@pytest.fixture(scope="module")
def sw(vcluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("selftest")
    inv = sub_inventory(vcluster.inventory_path, tmp / "pis.txt", NODES)
    world = {"vc": vcluster, "tmp": tmp, "inv": inv, "model": samples.path(MODEL)}
    yield world
    for name in NODES:  # whatever a failed test left in a runtime
        _heal(world, name)
    try:
        ops.undeploy(inv, purge=True)
    except Exception:
        head.stop(deployment_dir(inv) / "head")


def _conn(world, name: str) -> Connection:
    return Connection(inventory.load(world["vc"].inventory_path).get(name))


def _node_run(world, name: str, cmd: str) -> str:
    with _conn(world, name) as c:
        return c.run(cmd, check=True).stdout


def _add_fault(world, name: str, mode: str) -> None:
    with _conn(world, name) as c:
        c.run(f"cat > {SITE}/ek_fault.py", stdin=FAULT.replace("__MODE__", mode), check=True)
        c.run(f"echo 'import ek_fault' > {SITE}/ek_fault.pth", check=True)


def _foreign_arch_ort(world, name: str) -> None:
    """ONNX Runtime's native module as a wheel for another CPU would have it: the ELF header
    names aarch64 (e_machine 0xB7) on this x86-64 node. The original is kept aside."""
    _node_run(world, name, f"cd {SITE}/onnxruntime/capi && for f in onnxruntime_pybind11_state*.so;"
              ' do cp "$f" "$f.hidden" && printf "\\267\\000" | dd of="$f" bs=1 seek=18 '
              "conv=notrunc 2>/dev/null; done")


def _heal(world, name: str) -> None:
    _node_run(world, name, f"rm -f {SITE}/ek_fault.py {SITE}/ek_fault.pth; "
              f"cd {SITE}/onnxruntime/capi 2>/dev/null && for f in *.hidden; do "
              '[ -e "$f" ] && mv "$f" "${f%.hidden}"; done; true')


def _opts(world, target: Path | None = None) -> DeployOptions:
    return DeployOptions(world["inv"], target or world["model"], name=MODEL, offline=True)


def _image() -> np.ndarray:
    return np.random.default_rng(5).random((1, 3, 48, 192), dtype=np.float32)


def _infer(world, api: str) -> np.ndarray:
    return infer_json(world["inv"], api, MODEL, _image())


def _want(world) -> np.ndarray:
    return ort.InferenceSession(str(world["model"])).run(None, {"x": _image()})[0].ravel()


def _bundle(sw) -> Path:
    st = state.load(deployment_dir(sw["inv"]), str(sw["inv"]))
    return Path(st.apps[MODEL].bundle)


def test_every_node_passes_its_selftest_before_serving(sw):
    res = deploy(_opts(sw))
    assert res.ok, res.to_dict()
    for name in NODES:
        t = res.nodes[name].selftest
        assert t["ok"] and not t["cached"] and res.nodes[name].healthy, (name, t)
        assert t["versions"]["onnxruntime"] == ort.__version__
        assert t["max_abs_error"] < 1e-4 and t["min_cosine"] > 0.9999
        assert t["stages"][0]["index"] == 0 and t["import_s"] is not None
        print(f"\nself-test {name}: {t['seconds']:.2f} s at the host, node {t['node_seconds']} s "
              f"(import {t['import_s']} s, load {t['stages'][0]['load_s']} s, "
              f"run {t['stages'][0]['run_ms']} ms)")
    assert np.allclose(_infer(sw, res.head["api_url"]), _want(sw), atol=1e-4)
    st = state.load(deployment_dir(sw["inv"]), str(sw["inv"]))
    assert all(st.nodes[n].selftest.endswith(":s0:t" + str(st.nodes[n].cores)) for n in NODES)


def test_identical_redeploy_reuses_the_passes(sw):
    t0 = time.monotonic()
    res = deploy(_opts(sw))
    elapsed = time.monotonic() - t0
    assert res.ok, res.to_dict()
    assert all(res.nodes[n].selftest == {"ok": True, "cached": True} for n in NODES)
    print(f"\nno-op redeploy with cached self-tests: {elapsed:.2f} s")  # measured, not asserted


def test_wrong_and_unloadable_runtimes_are_refused_the_others_serve(sw):
    b2 = padded_bundle(_bundle(sw), sw["tmp"] / "b2" / MODEL, 1000, seed=2)
    sw["b2"] = b2
    _add_fault(sw, "pi1", "wrong")
    _foreign_arch_ort(sw, "pi2")
    # a runtime broken after its install is invisible to the fingerprint: a new version
    # (self-tests are remembered per version) must catch it; through the CLI, for --json
    proc = subprocess.run(
        [sys.executable, "-m", "edgekit.cli.main", "deploy", "--nodes", str(sw["inv"]),
         str(b2), "--name", MODEL, "--offline", "--json"],
        capture_output=True, text=True, timeout=900, env=os.environ.copy(), check=False)
    out = json.loads(proc.stdout) if proc.stdout.strip() else {}
    nodes = {n["node"]: n for n in out.get("nodes", [])}
    seen = {n: {k: v.get(k) for k in ("ok", "step", "runtime", "detail")} for n, v in nodes.items()}
    assert proc.returncode == 8, (seen, proc.stderr[-3000:])  # partial: pi3 serves, 1 and 2 not
    pi1, pi2, pi3 = nodes["pi1"], nodes["pi2"], nodes["pi3"]
    assert not pi1["ok"] and pi1["step"] == "selftest", pi1
    assert "wrong answer: output 'save_infer_model/scale_0.tmp_1'" in pi1["detail"]
    assert "max |node - host| 0.01" in pi1["detail"] and not pi1["selftest"]["ok"]
    assert not pi2["ok"] and pi2["step"] == "selftest", pi2
    assert "onnxruntime cannot be imported: ImportError" in pi2["detail"]
    assert "onnxruntime_pybind11_state" in pi2["detail"]
    assert "is built for aarch64, this node is x86_64" in pi2["detail"]
    assert pi3["ok"] and pi3["healthy"] and pi3["selftest"]["ok"], pi3
    # the API routes to pi3 alone, and answers right
    token = (deployment_dir(sw["inv"]) / "api-token").read_text().strip()
    h = verify.check(out["head"]["api_url"], token, [MODEL])
    assert h.ready and h.alive_nodes == {"pi3"}, h
    for _ in range(4):
        assert np.allclose(_infer(sw, out["head"]["api_url"]), _want(sw), atol=1e-4)
    assert state.load(deployment_dir(sw["inv"]), str(sw["inv"])).nodes["pi1"].selftest == ""


def test_repaired_nodes_pass_and_serve_again(sw):
    for name in ("pi1", "pi2"):
        _heal(sw, name)
    res = deploy(_opts(sw, sw["b2"]))
    assert res.ok, res.to_dict()
    assert all(not res.nodes[n].selftest["cached"] for n in ("pi1", "pi2"))
    assert res.nodes["pi3"].selftest == {"ok": True, "cached": True}, res.nodes["pi3"].runtime
    assert all(res.nodes[n].healthy for n in NODES)
    assert np.allclose(_infer(sw, res.head["api_url"]), _want(sw), atol=1e-4)


def test_hung_and_crashing_selftests_are_reported(sw):
    test = selftest.SelfTest(load(sw["b2"]))
    ns = state.load(deployment_dir(sw["inv"]), str(sw["inv"])).nodes["pi3"]
    _add_fault(sw, "pi3", "argv")
    try:
        with _conn(sw, "pi3") as c:
            t0 = time.monotonic()
            hung = selftest.run_case(c, ns.root, test.payload([0]), "hang", 1, 5.0)
            assert time.monotonic() - t0 < 60
            crashed = selftest.run_case(c, ns.root, test.payload([0]), "sigill", 1, 60.0)
            left = c.run("ps -u $(id -u) -o args= | grep -c '[s]elftest-hang'").stdout.strip()
    finally:
        _heal(sw, "pi3")
    assert not hung.ok and "did not finish within 5 s" in hung.detail, hung
    assert not crashed.ok and "died of SIGILL" in crashed.detail, crashed
    assert left == "0"  # the hung test was killed on the node, not just abandoned
