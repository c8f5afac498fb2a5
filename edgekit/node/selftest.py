"""Node side of deploy's self-test: run the deployed model once, outside Ray, and compare.

    python -m edgekit.node.selftest CASE.npz --root ROOT --node NAME --threads N

CASE.npz (written by the host, edgekit.deploy.selftest) holds the stages this node serves,
their input tensors and the host's outputs for them, and the tolerance. Each stage file is
loaded exactly as a serving worker loads it (edgekit.serve.nodefiles: the file under
ROOT/apps/<model>/current, its sha256 checked; edgekit.serve.runtime: the same session
options and thread count), run once, and its outputs compared (edgekit.node.agreement).

Prints one JSON line (`{"selftest": 1, "ok": ..., ...}`: per-stage errors and cosine, load
and run seconds, runtime versions) and exits 0 when every output agrees, 1 when one does
not (a wrong answer), 2 when the runtime cannot import, load or run the model, 3 when the
case file cannot be read.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.node.agreement import Tolerance, compare

EXIT_WRONG, EXIT_LOAD, EXIT_CASE = 1, 2, 3
FORMAT = 1
#: ELF e_machine -> platform.machine() of that CPU
ELF_MACHINES = {0x3E: "x86_64", 0xB7: "aarch64", 0x28: "armv7l", 0x03: "i686"}
MARK = "selftest"  # the key that marks the report line among whatever else is printed
RUNTIME_PACKAGES = {"onnxruntime": ("onnxruntime", "onnxruntime"),
                    "litert": ("ai_edge_litert.interpreter", "ai-edge-litert")}


@dataclass
class StageCase:
    index: int
    file: str  # path inside the bundle (under apps/<model>/current on the node)
    sha256: str
    feeds: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]  # the host's outputs


@dataclass
class Case:
    app: str
    version: str
    runtime: str
    tolerance: Tolerance
    stages: list[StageCase]  # the ones this node serves
    sharded: bool = False  # the bundle has more than one stage (names as the worker does)


def pack(case: Case) -> bytes:
    """The case as one .npz (tensors by position; names in the JSON `meta` entry)."""
    arrays: dict[str, np.ndarray] = {}
    stages = []
    for s in case.stages:
        for k, arr in enumerate(s.feeds.values()):
            arrays[f"s{s.index}.in{k}"] = arr
        for k, arr in enumerate(s.expected.values()):
            arrays[f"s{s.index}.out{k}"] = arr
        stages.append({"index": s.index, "file": s.file, "sha256": s.sha256,
                       "inputs": list(s.feeds), "outputs": list(s.expected)})
    meta = {"format": FORMAT, "app": case.app, "version": case.version,
            "runtime": case.runtime, "tolerance": case.tolerance.to_dict(), "stages": stages,
            "sharded": case.sharded}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def unpack(data: bytes) -> Case:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes())
        if meta.get("format") != FORMAT:
            raise ValueError(f"case format {meta.get('format')} (this node reads {FORMAT})")
        stages = [StageCase(
            int(s["index"]), s["file"], s["sha256"],
            {n: z[f"s{s['index']}.in{k}"] for k, n in enumerate(s["inputs"])},
            {n: z[f"s{s['index']}.out{k}"] for k, n in enumerate(s["outputs"])},
        ) for s in meta["stages"]]
    return Case(meta["app"], meta["version"], meta["runtime"],
                Tolerance.from_dict(meta["tolerance"]), stages, bool(meta.get("sharded")))


def versions(runtime: str) -> dict[str, str]:
    """What computed the answer: Python, CPU architecture, numpy, the runtime, our kernels."""
    out = {"python": platform.python_version(), "machine": platform.machine(),
           "numpy": np.__version__}
    for dist in ("edgekit", RUNTIME_PACKAGES.get(runtime, (runtime, runtime))[1]):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    try:
        from edgekit import native

        out["kernels"] = native.variant()
    except Exception as exc:  # the report must still come out; say why instead
        out["kernels"] = f"unavailable ({type(exc).__name__}: {exc})"
    return out


def _run_stage(case: Case, s: StageCase, node: str, threads: int) -> dict[str, Any]:
    """Load and run one stage as a worker does; raises _Failure saying which step failed."""
    # serve's node-side modules on purpose, not a climb: the self-test vouches for the path a
    # serving worker takes, so it must be that code (same sha256 check, same session options),
    # not a copy. Both run on the node outside Ray: they import errors, serve.tensors (numpy)
    # and edgekit.native only, never Ray or aiohttp. Kept under serve/ with the worker, their
    # other user, rather than moved (tests/test_layers.py allows exactly these two).
    from edgekit.serve.nodefiles import NodeFile, read_verified
    from edgekit.serve.runtime import open_runtime, timed_run

    where = f"{case.app}[{s.index}]@{node}" if case.sharded else f"{case.app}@{node}"
    t0 = time.perf_counter()
    try:
        model = read_verified(NodeFile(case.app, s.file, s.sha256), node)
        runtime = open_runtime(case.runtime, model, threads, where)
    except Exception as exc:  # a missing file, a bad hash, a runtime refusing the model
        raise _Failure(f"cannot load stage {s.index} ({s.file}): {_text(exc)}") from exc
    load_s = time.perf_counter() - t0
    names = [t.name for t in runtime.inputs]  # a worker feeds a stage by its own input names
    missing = [n for n in names if n not in s.feeds]
    if missing:
        raise _Failure(f"stage {s.index} wants input(s) {missing} the host did not send")
    try:
        out, ms = timed_run(runtime, {n: s.feeds[n] for n in names})
    except Exception as exc:
        raise _Failure(f"stage {s.index} ({s.file}) failed to run: {_text(exc)}") from exc
    checks = []
    for name, ref in s.expected.items():
        if name not in out:
            checks.append({"name": name, "ok": False,
                           "why": f"the node's model has no output {name!r}"})
        else:
            checks.append(compare(name, out[name], ref, case.tolerance).to_dict())
    return {"index": s.index, "ok": all(c["ok"] for c in checks), "load_s": round(load_s, 3),
            "run_ms": round(ms, 3), "outputs": checks}


class _Failure(Exception):
    """The runtime cannot load or run a stage (the message says which and why)."""


def _emit(report: dict[str, Any], code: int, t0: float) -> int:
    report["seconds"] = round(time.perf_counter() - t0, 3)
    print(json.dumps({MARK: 1, **report}), flush=True)
    if code:
        print(f"self-test failed: {report.get('error')}", file=sys.stderr)
    return code


def run(case: Case, root: str, node: str, threads: int, t0: float) -> int:
    from edgekit.serve.nodefiles import ROOT_ENV  # node-side: see _run_stage

    os.environ[ROOT_ENV] = root  # where read_verified finds apps/<model>/current
    report: dict[str, Any] = {"node": node, "ok": False, "version": case.version,
                              "tolerance": case.tolerance.source}
    module = RUNTIME_PACKAGES.get(case.runtime, (case.runtime,))[0]
    t = time.perf_counter()
    try:
        __import__(module)
    except Exception as exc:  # ImportError, or an OSError from a missing shared library
        report["versions"] = versions(case.runtime)
        report["error"] = (f"{case.runtime} cannot be imported: {type(exc).__name__}: {exc}"
                           + diagnose(str(exc)))
        return _emit(report, EXIT_LOAD, t0)
    report["import_s"] = round(time.perf_counter() - t, 3)
    report["versions"] = versions(case.runtime)
    report["stages"] = []
    for s in case.stages:
        try:
            report["stages"].append(_run_stage(case, s, node, threads))
        except _Failure as exc:
            report["error"] = str(exc)
            return _emit(report, EXIT_LOAD, t0)
    wrong = [c["why"] for st in report["stages"] for c in st["outputs"] if not c["ok"]]
    report["ok"] = not wrong
    if wrong:
        report["error"] = "wrong answer: " + "; ".join(wrong)
    return _emit(report, EXIT_WRONG if wrong else 0, t0)


def diagnose(message: str) -> str:
    """For a loader error naming a shared library that is there ("cannot open shared object
    file: No such file or directory" is also what glibc says for another CPU's library): what
    is wrong with it, as far as its ELF header tells."""
    for path in re.findall(r"(/[^\s:]+\.so(?:\.[\d.]+)?)", message):
        try:
            with open(path, "rb") as fh:
                head = fh.read(20)
        except OSError:
            continue
        if len(head) < 20 or head[:4] != b"\x7fELF":
            return f" ({path} is not a shared library: damaged?)"
        built = ELF_MACHINES.get(int.from_bytes(head[18:20], "little"), "an unknown CPU")
        here = platform.machine()
        if built != here:
            return f" ({path} is built for {built}, this node is {here}: a wheel for another CPU)"
        return f" ({path} is there and is for {here}: a library it needs is missing?)"
    return ""


def _text(exc: BaseException) -> str:
    from edgekit.errors import EdgekitError

    return exc.render() if isinstance(exc, EdgekitError) else f"{type(exc).__name__}: {exc}"


def main(argv: list[str] | None = None) -> int:
    t0 = time.perf_counter()
    ap = argparse.ArgumentParser(prog="python -m edgekit.node.selftest")
    ap.add_argument("case", help=".npz written by edgekit deploy")
    ap.add_argument("--root", required=True, help="the node's deploy root")
    ap.add_argument("--node", required=True, help="this node's inventory name")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (as the worker)")
    args = ap.parse_args(argv)
    try:
        case = unpack(Path(args.case).read_bytes())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        report = {"node": args.node, "ok": False,
                  "error": f"cannot read the self-test case {args.case}: {exc}"}
        return _emit(report, EXIT_CASE, t0)
    return run(case, args.root, args.node, max(1, args.threads), t0)


if __name__ == "__main__":
    sys.exit(main())
