"""One Ray cluster (head + pi1..pi3, token auth on) and one `edgekit serve` per test session.

The server runs with `--compress` (int8 tensors between pipeline stages) and the real thermal
controller (`--controller thermal`) in watch-only mode (EDGEKIT_THERMAL_POLICY=off), so its
power readings flow into energy per inference without it re-weighting nodes under other tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

# Ray reads its auth mode when it is imported: set it before any test imports ray.
os.environ["RAY_AUTH_MODE"] = "token"


def _save(model, path: Path) -> Path:
    import onnx

    model.ir_version = 10
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def affine_model(path: Path) -> Path:
    """y = 2x + 1 over FP32 [-1, 4] (batchable)."""
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "two"], ["t"]),
            helper.make_node("Add", ["t", "one"], ["y"]),
        ],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [
            numpy_helper.from_array(np.float32(2.0), "two"),
            numpy_helper.from_array(np.float32(1.0), "one"),
        ],
    )
    return _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


def boom_model(path: Path) -> Path:
    """Reshape [-1,4] to [3,-1]: valid for 3 rows, fails inside the runtime for 1 row."""
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["y"])],
        "boom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, None])],
        [numpy_helper.from_array(np.array([3, -1], np.int64), "s")],
    )
    return _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


def chain_bundle(folder: Path, stages: int = 2) -> Path:
    """A sharded bundle: stage i computes x_{i+1} = 2 x_i + 1 (whole: 2^k x + 2^k - 1)."""
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.model.bundle import FORMAT_VERSION, Manifest, StageEntry, TensorEntry, write_bundle

    work = folder.parent / f"{folder.name}-src"
    work.mkdir(parents=True, exist_ok=True)
    entries, payload = [], {}
    for i in range(stages):
        a, b = f"t{i}" if i else "x", f"t{i + 1}" if i < stages - 1 else "y"
        g = helper.make_graph(
            [
                helper.make_node("Mul", [a, "two"], ["m"]),
                helper.make_node("Add", ["m", "one"], [b]),
            ],
            f"s{i}",
            [helper.make_tensor_value_info(a, TensorProto.FLOAT, ["N", 4])],
            [helper.make_tensor_value_info(b, TensorProto.FLOAT, ["N", 4])],
            [
                numpy_helper.from_array(np.float32(2.0), "two"),
                numpy_helper.from_array(np.float32(1.0), "one"),
            ],
        )
        f = _save(
            helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]),
            work / f"stage{i}.onnx",
        )
        payload[f.name] = f
        entries.append(
            StageEntry(
                i,
                f.name,
                [TensorEntry(a, "float32", ["N", 4])],
                [TensorEntry(b, "float32", ["N", 4])],
                0,
            )
        )
    manifest = Manifest(
        FORMAT_VERSION,
        "chain",
        "1",
        "onnxruntime",
        [],
        entries,
        [TensorEntry("x", "float32", ["N", 4])],
        [TensorEntry("y", "float32", ["N", 4])],
    )
    write_bundle(folder, manifest, payload)
    return folder


@pytest.fixture(scope="session")
def ray_cluster():
    from edgekit.serve.localcluster import LocalCluster

    cluster = LocalCluster(nodes=["pi1", "pi2", "pi3"]).start()
    cluster.apply_env()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def model_files(tmp_path_factory):
    from edgekit.model import samples

    d = tmp_path_factory.mktemp("models")
    return {
        "cls": samples.path("ppocr-cls"),
        "affine": affine_model(d / "affine.onnx"),
        "boom": boom_model(d / "boom.onnx"),
        "chain": chain_bundle(d / "chain"),
        "chain3": chain_bundle(d / "chain3", stages=3),
        "face": samples.path("face-detection"),
    }


@pytest.fixture(scope="session")
def server(ray_cluster, model_files, tmp_path_factory):
    """`edgekit serve` as a real subprocess; yields (url, token, cluster)."""
    from edgekit.client import Client
    from edgekit.serve.localcluster import _free_port

    token = "t0k-" + os.urandom(8).hex()
    tok = tmp_path_factory.mktemp("tok") / "token"
    tok.write_text(token)
    tok.chmod(0o600)
    port = _free_port()
    args = [
        sys.executable,
        "-m",
        "edgekit.cli.main",
        "serve",
        "--ray-address",
        ray_cluster.address,
        "--port",
        str(port),
        "--token-file",
        str(tok),
        "--json",
        "--max-queue",
        "4",
        "--batch",
        "affine=8:2",
        "--compress",
        "--controller",
        "thermal",
    ]
    for name, path in model_files.items():
        args += ["--model", f"{name}={path}"]
    log = tmp_path_factory.mktemp("log") / "serve.log"
    with open(log, "w") as fh:
        env = {
            **ray_cluster.env(),
            "EDGEKIT_THERMAL_POLICY": "off",
            "EDGEKIT_HOME": str(tmp_path_factory.mktemp("ekhome")),
        }
        proc = subprocess.Popen(args, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    client = Client(url, token=token)
    deadline = time.monotonic() + 240
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"edgekit serve exited: {log.read_text()[-3000:]}")
        try:
            if client.ready():
                break
        except Exception:  # not listening yet
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"edgekit serve not ready: {log.read_text()[-3000:]}")
        time.sleep(0.5)
    try:
        yield url, token, ray_cluster
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
