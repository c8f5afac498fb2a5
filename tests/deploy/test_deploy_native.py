"""The native kernels on a deployed node, and a node without them, on the virtual cluster.

pi3 (x86-64, edgekit's supervisor) first gets a node runtime from an edgekit wheel whose
native library is missing (the session's x86-64 wheel with the .so taken out, as a build that
could not compile would leave it): it serves the real PP-OCR classifier correctly on the numpy
fallback, and `edgekit status`, its --json, the API's /edgekit/status and `edgekit nodes
check` all show the fallback as a warning. Then the real wheel: a new runtime (the wheel,
so the fingerprint, changed), the worker runs the AVX2 kernels and every report says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from helpers import infer_json, sub_inventory

from edgekit.deploy import head, ops, wheels
from edgekit.deploy.flow import DeployOptions, deploy
from edgekit.deploy.layout import deployment_dir
from edgekit.model import samples
from edgekit.node import stack

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
NODE = "pi3"
MODEL = "ppocr-cls"


@pytest.fixture(scope="module")
def world(vcluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("native")
    inv = sub_inventory(vcluster.inventory_path, tmp / "pis.txt", [NODE])
    yield {"tmp": tmp, "inv": inv, "model": samples.path(MODEL)}
    try:
        ops.undeploy(inv, purge=True)
    except Exception:
        head.stop(deployment_dir(inv) / "head")


def _without_library(wheel: Path, folder: Path) -> Path:
    """A copy of `wheel` (same name and tag) without the native library, RECORD to match."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / wheel.name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == wheels.NATIVE_LIB_MEMBER:
                continue
            if item.filename.endswith(".dist-info/RECORD"):
                data = b"".join(line for line in data.splitlines(keepends=True)
                                if not line.startswith(wheels.NATIVE_LIB_MEMBER.encode()))
            dst.writestr(item, data)
    return out


def _cell(table: str, node: str, column: str) -> str:
    """One cell of a rich table, its wrapped lines joined."""
    lines = table.splitlines()
    names = [c.strip() for c in next(ln for ln in lines if "┃" in ln).split("┃")]
    at = names.index(column)
    rows = [[c.strip() for c in ln.split("│")] for ln in lines if ln.startswith("│")]
    start = next(i for i, r in enumerate(rows) if r[1] == node)
    parts = [rows[start][at]]
    for r in rows[start + 1:]:
        if r[1]:  # the next node's row
            break
        parts.append(r[at])
    return " ".join(p for p in parts if p)


def _image() -> np.ndarray:
    return np.random.default_rng(11).random((1, 3, 48, 192), dtype=np.float32)


def _infer_equals_local_ort(world, api: str) -> None:
    x = _image()
    got = infer_json(world["inv"], api, MODEL, x)
    want = ort.InferenceSession(str(world["model"])).run(None, {"x": x})[0].ravel()
    assert np.allclose(got, want, atol=1e-4), (got, want)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}  # one line per warning, whatever the terminal
    return subprocess.run([sys.executable, "-m", "edgekit.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def _deploy(world) -> None:
    res = deploy(DeployOptions(world["inv"], world["model"], name=MODEL, offline=True))
    assert res.ok and res.nodes[NODE].healthy, res.to_dict()
    assert res.nodes[NODE].runtime == "provisioned"  # another wheel: another runtime
    world["api"] = res.head["api_url"]


def test_node_without_the_native_library_warns_everywhere_and_still_serves(world, monkeypatch):
    pinned = wheels.pinned_wheels(os.environ[wheels.NODE_WHEEL_ENV])["x86_64"]
    monkeypatch.setenv(wheels.NODE_WHEEL_ENV, str(_without_library(pinned, world["tmp"] / "nn")))
    _deploy(world)
    _infer_equals_local_ort(world, world["api"])

    st = ops.status(world["inv"]).to_dict()
    node = st["nodes"][NODE]
    assert node["kernels"] == stack.FALLBACK
    assert node["warning"].startswith("native library missing: numpy fallback")
    assert "libedgekit_native.so not in the install" in node["warning"]
    assert node["onnxruntime"] == stack.describe()["onnxruntime"]

    text = _cli("status", "--nodes", str(world["inv"]))
    assert text.returncode == 0, text.stdout + text.stderr
    # the status table gives it as pi3's reason (edgekit.tables wraps, never cuts it): the
    # reason cell of pi3's row and of the lines its wrapped cells continue on
    assert _cell(text.stdout, "pi3", "reason").startswith(
        "native library missing: numpy fallback"), text.stdout
    js = _cli("status", "--nodes", str(world["inv"]), "--json")
    assert json.loads(js.stdout)["nodes"][NODE]["kernels"] == stack.FALLBACK

    check = _cli("nodes", "check", "--nodes", str(world["inv"]), "--json")
    probed = json.loads(check.stdout)["nodes"][0]
    assert probed["native"] == stack.FALLBACK and probed["ready"]
    assert any("native library missing: numpy fallback" in w for w in probed["warnings"])


def test_real_wheel_is_a_new_runtime_running_the_native_kernels(world):
    from edgekit import native

    _deploy(world)  # the session's pinned wheels again: the fingerprint changes back
    _infer_equals_local_ort(world, world["api"])
    host = stack.describe()
    node = ops.status(world["inv"]).to_dict()["nodes"][NODE]
    assert native.variant() != stack.FALLBACK  # the host compiled its library: nodes match
    assert (node["kernels"], node["warning"]) == (native.variant(), "")
    # an ONNX bundle: ai-edge-litert is not installed on the node (LiteRT bundles add it)
    assert (node["onnxruntime"], node["litert"]) == (host["onnxruntime"], "")

    text = _cli("status", "--nodes", str(world["inv"]))
    assert native.variant() in text.stdout and "numpy fallback" not in text.stdout
    assert f"onnxruntime {host['onnxruntime']}" in text.stdout
    check = _cli("nodes", "check", "--nodes", str(world["inv"]), "--json")
    probed = json.loads(check.stdout)["nodes"][0]
    assert (probed["native"], probed["onnxruntime"]) == (native.variant(), host["onnxruntime"])
    assert not any("numpy" in w for w in probed["warnings"])
