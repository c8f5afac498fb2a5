"""Benchmark: how much slower the emulated aarch64 boards are than this machine, per kind of
work, so the virtual cluster's timings can be read (and so nobody mistakes them for a Pi's).

The same workloads run three ways, one after the other in one run: natively (this machine's
Python, numpy, onnxruntime, our AVX2 kernels), and under qemu-user as a Pi 4 (Cortex-A72) and
a Pi 5 (Cortex-A76) with the arm64 userland of the aarch64 virtual nodes and the aarch64 wheels
deploy pushes there (numpy, onnxruntime, edgekit with its NEON kernels). One thread everywhere.
Timings under qemu say nothing about a real Pi's speed; the ratios say what emulation costs.

Run (root not needed; needs the rootfs `edgekit cluster up --arch aarch64` builds and the
aarch64 wheelhouse a deploy test downloads):
    .venv/bin/python benchmarks/qemu_slowdown.py [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from edgekit.deploy import wheels
from edgekit.model import samples
from edgekit.virtual import qemu, rootfs

#: runs unchanged natively and under qemu; prints one JSON line of best milliseconds
GUEST = r"""
import json, os, sys, time
os.environ["OMP_NUM_THREADS"] = "1"
import numpy as np
import onnxruntime as ort
from ek_bench_models import matmul_integer  # written by the host beside this script
reps, model = int(sys.argv[1]), sys.argv[2]
def best(fn, n=reps):
    fn(); t = []
    for _ in range(n):
        s = time.perf_counter(); fn(); t.append(time.perf_counter() - s)
    return min(t) * 1e3
so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
rng = np.random.default_rng(0)
out = {}
out["python loop (300k)"] = best(lambda: sum(i * i for i in range(300_000)))
a = rng.standard_normal((128, 128)).astype(np.float32)
out["numpy fp32 matmul 128^3"] = best(lambda: a @ a)
cls = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
x = rng.random((1, 3, 48, 192), dtype=np.float32)
out["ORT fp32 CNN (ppocr-cls)"] = best(lambda: cls.run(None, {"x": x}))
mm = ort.InferenceSession(matmul_integer(64, 384, 384), so, providers=["CPUExecutionProvider"])
xi = rng.integers(-127, 128, (64, 384)).astype(np.int8)
out["ORT int8 MatMulInteger 64x384x384"] = best(lambda: mm.run(None, {"x": xi}))
from edgekit.native import variant
from edgekit.native.linear import Int8Linear
from edgekit.native.sparse import prune
w = rng.standard_normal((384, 384)).astype(np.float32)
xf = rng.standard_normal((64, 384)).astype(np.float32)
for name, pat in (("dense", (1, 1)), ("2:4", (2, 4))):
    layer = Int8Linear(prune(w, *pat), threads=1)
    out[f"edgekit int8 {name} 64x384x384"] = best(lambda f=layer: f(xf))
print(json.dumps({"variant": variant(), "ms": out}))
"""

#: a MatMulInteger model as raw protobuf bytes, built with onnx on the host (the guest has no
#: onnx package): written to a module the guest imports
HELPER = '''
MODELS = {models!r}
def matmul_integer(m, k, n):
    return MODELS[(m, k, n)]
'''


def matmul_integer_bytes(m: int, k: int, n: int) -> bytes:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(1).integers(-127, 128, (k, n))
                                .astype(np.int8), "w")
    g = helper.make_graph([helper.make_node("MatMulInteger", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.INT8, [m, k])],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model.SerializeToString()


def aarch64_site(tmp: Path) -> Path:
    """numpy, onnxruntime (and what it imports) and edgekit's aarch64 wheel, unzipped."""
    cache = wheels_cache()
    houses = sorted(cache.glob("offline-aarch64-cp311-*"))
    if not houses:
        sys.exit(f"no aarch64 wheelhouse under {cache}: run a deploy to an aarch64 node first")
    site = tmp / "site"
    wanted = ("numpy-", "onnxruntime-", "flatbuffers-", "packaging-", "protobuf-", "coloredlogs-",
              "humanfriendly-", "sympy-", "mpmath-")
    for whl in houses[0].glob("*.whl"):
        if whl.name.startswith(wanted) and "extensions" not in whl.name:
            zipfile.ZipFile(whl).extractall(site)
    zipfile.ZipFile(wheels.edgekit_wheel(cache, "aarch64")).extractall(site)
    return site


def wheels_cache() -> Path:
    env = os.environ.get("EDGEKIT_TEST_WHEEL_CACHE")
    return Path(env) if env else Path.home() / ".cache/edgekit/test-wheelhouse"


def run(argv: list[str], env: dict[str, str]) -> dict:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False,
                          timeout=3600)
    if proc.returncode != 0:
        sys.exit(f"{argv[0]} failed: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    found, why = qemu.find()
    # invoked by hand, not through binfmt: the real binary (a "-binfmt-P" name makes qemu
    # expect binfmt's argument layout)
    binary = found.resolve() if found else None
    lower = rootfs.path()
    if binary is None or not (lower / rootfs.STAMP).exists():
        sys.exit(f"needs qemu-user 8+ and the aarch64 rootfs ({why or lower})")
    model = str(samples.path("ppocr-cls"))
    with tempfile.TemporaryDirectory(prefix="ek-qemu-bench-") as t:
        tmp = Path(t)
        helper_dir = tmp / "helper"
        helper_dir.mkdir()
        models = {(64, 384, 384): matmul_integer_bytes(64, 384, 384)}
        (helper_dir / "ek_bench_models.py").write_text(HELPER.format(models=models))
        script = tmp / "guest.py"
        script.write_text(GUEST)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("QEMU_", "PYTHON"))}
        results = {"x86_64 (native)": run(
            [sys.executable, str(script), str(args.reps), model],
            {**base, "PYTHONPATH": str(helper_dir)})}
        site = aarch64_site(tmp)
        py = lower / "usr/bin/python3.11"
        for board, cpu in (("Pi 4 (A72)", "cortex-a72"), ("Pi 5 (A76)", "cortex-a76")):
            results[board] = run(
                [str(binary), "-cpu", cpu, "-L", str(lower), str(py), str(script),
                 str(max(2, args.reps // 2)), model],
                {**base, "PYTHONPATH": f"{helper_dir}:{site}"})
    native = results["x86_64 (native)"]["ms"]
    names = list(native)
    cols = list(results)
    print(f"{'workload':36} " + " ".join(f"{c:>20}" for c in cols) + "   x A72   x A76")
    print(f"{'kernel variant':36} " + " ".join(f"{results[c]['variant']:>20}" for c in cols))
    for name in names:
        ms = [results[c]["ms"][name] for c in cols]
        print(f"{name:36} " + " ".join(f"{v:17.2f} ms" for v in ms)
              + f" {ms[1] / ms[0]:7.0f} {ms[2] / ms[0]:7.0f}")
    print(json.dumps({"results": results,
                      "slowdown": {n: {c: results[c]["ms"][n] / native[n] for c in cols[1:]}
                                   for n in names}}))


if __name__ == "__main__":
    main()
