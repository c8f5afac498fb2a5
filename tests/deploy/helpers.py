"""Helpers for deploy tests: a real ONNX bundle, inventories cut from the virtual cluster's."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekit.model.bundle import FORMAT_VERSION, Manifest, StageEntry, TensorEntry, write_bundle
from edgekit.remote.ssh import Connection

#: a node runtime's site-packages, under the node's default root (~/.edgekit)
RUNTIME_SITE = '"$(ls -d $HOME/.edgekit/runtime/lib/python3*/site-packages)"'
RAY_FAULT_LINE = "ek_fault: this board's Ray cannot start"
#: imported by a .pth at every start of the runtime's Python: only `ray start` is refused,
#: so the self-test, the agent and raynode itself run as usual
RAY_FAULT = f'''import os, sys
if sys.argv[:1] and sys.argv[0].endswith("/ray") and sys.argv[1:2] == ["start"]:
    sys.stderr.write("{RAY_FAULT_LINE} (test fault)\\n")
    sys.stderr.flush()
    os._exit(1)
'''


def make_onnx(path: Path, n: int = 256, seed: int = 0) -> Path:
    """y = x @ W + b with an n x n float weight (n=256: about 256 KB)."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal((n,)).astype(np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, n])], [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def make_bundle(folder: Path, n: int = 256, seed: int = 0, extra_bytes: int = 0,
                mem_bytes: int | None = None) -> Path:
    """A real bundle (edgekit.model.bundle.write_bundle): model.onnx, optional data.bin."""
    tmp = folder.parent / f".{folder.name}-src"
    tmp.mkdir(parents=True, exist_ok=True)
    model = make_onnx(tmp / "model.onnx", n, seed)
    x = TensorEntry("x", "FP32", [-1, n])
    y = TensorEntry("y", "FP32", [-1, n])
    stage = StageEntry(0, "model.onnx", [x], [y], mem_bytes or 4 * model.stat().st_size)
    manifest = Manifest(FORMAT_VERSION, folder.name, "1", "onnxruntime", [], [stage], [x], [y])
    payload: dict[str, bytes | Path] = {"model.onnx": model}
    if extra_bytes:
        payload["data.bin"] = np.random.default_rng(seed + 1).bytes(extra_bytes)
    write_bundle(folder, manifest, payload, overwrite=True)
    return folder


def sub_inventory(src: Path, dest: Path, names: list[str], extra: dict[str, str] | None = None,
                  ) -> Path:
    """Lines of `src` for `names` (in that order), with `key=value` appended per node."""
    lines = {}
    for line in src.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name = next(p.split("=", 1)[1] for p in line.split() if p.startswith("name="))
            lines[name] = line
    out = [lines[n] + (f" {extra[n]}" if extra and n in extra else "") for n in names]
    dest.write_text("\n".join(out) + "\n")
    return dest


def padded_bundle(src: Path, folder: Path, pad_bytes: int, seed: int) -> Path:
    """A new version of bundle `src` (same model, same name): its files plus `pad_bytes` of
    random padding (pad.bin) that the workers never read, to make a push take a while."""
    from edgekit.model.bundle import verify

    manifest = verify(src)
    payload: dict[str, bytes | Path] = {f.path: src / f.path for f in manifest.files
                                        if f.path != "pad.bin"}
    payload["pad.bin"] = np.random.default_rng(seed).bytes(pad_bytes)
    write_bundle(folder, manifest, payload, overwrite=True)
    return folder


def infer_json(inv: Path, api: str, model: str, x: np.ndarray, name: str = "x",
               version: str | None = None) -> np.ndarray:
    """One JSON OIP request through a deployment's API (its token from the deploy state),
    to /versions/{version}/infer when given: the first output, flattened."""
    from edgekit.deploy.layout import deployment_dir

    token = (deployment_dir(inv) / "api-token").read_text().strip()
    body = {"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}]}
    path = f"{model}/versions/{version}" if version else model
    req = urllib.request.Request(f"{api}/v2/models/{path}/infer", json.dumps(body).encode(),
                                 method="POST", headers={"Authorization": f"Bearer {token}",
                                                         "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return np.array(json.loads(resp.read())["outputs"][0]["data"], dtype=np.float32)
    except urllib.error.HTTPError as exc:  # the server's answer says what went wrong
        raise AssertionError(f"{path}: HTTP {exc.code}: {exc.read()[:2000]!r}") from exc


def break_ray(conn: Connection) -> None:
    """A board whose Ray cannot start: the fault into its runtime (a Ray already running
    there is left alone; the next `ray start` exits 1, and every one after it)."""
    conn.run(f"cat > {RUNTIME_SITE}/ek_noray.py", stdin=RAY_FAULT, check=True)
    conn.run(f"echo 'import ek_noray' > {RUNTIME_SITE}/ek_noray.pth", check=True)


def heal_ray(conn: Connection) -> None:
    """The fault of `break_ray` removed (nothing else done: the node's Ray service retries)."""
    conn.run(f"rm -f {RUNTIME_SITE}/ek_noray.py {RUNTIME_SITE}/ek_noray.pth", check=False)
