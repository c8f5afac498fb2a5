"""Models and an `edgekit serve` launcher shared by the serve tests (imported by conftest).

Real ONNX models built in place (affine, a runtime failure, a hang, pipeline bundles) and a
real `edgekit serve` subprocess: nothing here stands in for the server or the runtime.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


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


def spin_model(path: Path) -> Path:
    """y = float(n) after a Loop of n empty iterations: n = 3 answers at once, n = 10**12
    keeps the worker busy for hours (a worker that hangs, with a real runtime)."""
    from onnx import TensorProto, helper, numpy_helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["v_in", "one"], ["v_out"])],
        "step",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.ones(1, np.float32), "one")],
    )
    g = helper.make_graph(
        [helper.make_node("Squeeze", ["n", "axes"], ["m"]),
         helper.make_node("Loop", ["m", "true", "zero"], ["y"], body=body)],
        "spin",
        [helper.make_tensor_value_info("n", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.array([0], np.int64), "axes"),
         numpy_helper.from_array(np.array(True), "true"),
         numpy_helper.from_array(np.zeros(1, np.float32), "zero")],
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


class ServerProc:
    """One `edgekit serve` subprocess: its URL, token, log file and process."""

    def __init__(self, url: str, token: str, log: Path, proc: subprocess.Popen, args: list):
        self.url, self.token, self.log, self.proc, self.args = url, token, log, proc, args

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def start_server(ray_cluster, tmp_path_factory, options: list[str], models: dict,
                 port: int | None = None, token: str | None = None) -> ServerProc:
    """Start `edgekit serve` with `options` and `models` (name -> path); wait until ready."""
    from edgekit.serve.localcluster import _free_port

    token = token or "t0k-" + os.urandom(8).hex()
    tok = tmp_path_factory.mktemp("tok") / "token"
    tok.write_text(token)
    tok.chmod(0o600)
    port = port or _free_port()
    args = [sys.executable, "-m", "edgekit.cli.main", "serve", "--ray-address",
            ray_cluster.address, "--port", str(port), "--token-file", str(tok), "--json",
            *options]
    for name, path in models.items():
        args += ["--model", f"{name}={path}"]
    log = tmp_path_factory.mktemp("log") / "serve.log"
    return launch(ray_cluster, tmp_path_factory, args, log, f"http://127.0.0.1:{port}", token)


def launch(ray_cluster, tmp_path_factory, args: list, log: Path, url: str,
           token: str) -> ServerProc:
    """Run `args` (an `edgekit serve` command line), appending to `log`; wait until ready."""
    from edgekit.client import Client

    with open(log, "a") as fh:
        env = {
            **ray_cluster.env(),
            "EDGEKIT_THERMAL_POLICY": "off",
            "EDGEKIT_HOME": str(tmp_path_factory.mktemp("ekhome")),
        }
        proc = subprocess.Popen(args, env=env, stdout=fh, stderr=subprocess.STDOUT)
    client = Client(url, token=token, retry_for_s=0)
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
    return ServerProc(url, token, log, proc, args)
