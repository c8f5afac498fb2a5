"""What a rolling update (rolling.py) checks before it moves traffic to a new version's worker:
whether the node has the memory to run it beside the old one, and the self-test of the new
replica through the real request path.

The self-test is deploy's (edgekit.deploy.selfcase): the same fixed input, derived from the
bundle version alone, and the same tolerance (edgekit.node.agreement). The reference is
computed on the head with the same runtime code the workers use (one thread, the stages
chained); the new replica answers over its own channel, pipeline links included, before the
router ever sends it a request. Deploy's own self-test ran the model on each node outside
Ray; this one tests the worker that will take the traffic.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.deploy import selfcase
from edgekit.model.bundle import FORMAT_VERSION, Manifest
from edgekit.node.agreement import Tolerance, compare
from edgekit.serve.health import actors_of
from edgekit.serve.models import ModelSpec
from edgekit.serve.placement import ModelInfo
from edgekit.serve.router import Replica

MB = 1 << 20
#: A new worker process beside the old one costs the process itself before any model:
#: Python, numpy, ONNX Runtime and Ray's core worker, about 150 MB resident on x86-64 and
#: aarch64 alike; 200 MB leaves room for the channel's buffers.
WORKER_OVERHEAD_BYTES = 200 * MB
#: ... plus the stage's own memory as the plan counts it (the bundle manifest's mem_bytes:
#: weights and activations), or twice its file when the manifest has none, times this factor
#: for ONNX Runtime's arena and the allocator's slack while the session is built (both
#: versions' sessions are then resident at once, and a board that swaps is worse than a
#: board that is briefly out of routing).
MEMORY_FACTOR = 1.5


def stage_need(spec: ModelSpec, index: int) -> int:
    """Bytes a new worker of stage `index` needs free on its node to load beside the old."""
    stage = spec.stages[index]
    own = stage.mem_bytes or 2 * stage.file.stat().st_size
    return int(own * MEMORY_FACTOR) + WORKER_OVERHEAD_BYTES


async def free_memory(replicas: list[Replica], node: str, timeout_s: float) -> int | None:
    """Bytes available on `node` as a live worker there reads it (proc/meminfo under the
    node's sysroot); None when no worker there answers."""
    for r in replicas:
        for s in actors_of(r):
            if s.node != node or s.dead or s.actor is None:
                continue
            try:
                return int(await asyncio.wait_for(s.actor.memory.remote(), timeout_s))
            except Exception:  # this worker cannot say: try another on the node
                continue
    return None


@dataclass
class Reference:
    """The self-test of one version: the fixed input, the head's outputs, the tolerance."""

    feeds: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    tolerance: Tolerance


def reference(spec: ModelSpec, info: ModelInfo) -> Reference:
    """Run the stages of `spec` chained on the head, as deploy's selfcase does on the host."""
    from edgekit.serve.runtime import open_runtime

    feeds = selfcase.make_inputs(info.inputs, spec.preprocess, selfcase.seed_of(spec.version))
    carry: dict[str, np.ndarray] = dict(feeds)
    for st in spec.stages:
        rt = open_runtime(spec.runtime, st.file.read_bytes(), 1,
                          f"{spec.name}[{st.index}] (reference on the head)")
        carry.update(rt.run({t.name: carry[t.name] for t in rt.inputs}))
    outputs = {t.name: carry[t.name] for t in info.outputs}
    return Reference(feeds, outputs, _tolerance(spec))


def _tolerance(spec: ModelSpec) -> Tolerance:
    manifest = spec.manifest or Manifest(FORMAT_VERSION, spec.name, spec.label, spec.runtime,
                                         [], [], [], [])
    if manifest.quantization:
        return selfcase.tolerance(manifest, True)
    try:  # int8 operators without a report: needs onnx, which a head node may lack
        quantized = selfcase.is_quantized(spec.stages[0].file, spec.runtime)
    except ImportError:
        quantized = True  # the wider bound: a float model passes it too
    return selfcase.tolerance(manifest, quantized)


async def selftest(transport: Any, replica: Replica, ref: Reference, timeout_s: float) -> str:
    """"" when the new replica answers the fixed input within the tolerance, else why not."""
    try:
        final, _ = transport.start(replica, ref.feeds)
        out, _, _ = await asyncio.wait_for(final, timeout_s)
    except TimeoutError:
        return f"self-test: no answer within {timeout_s:.0f} s"
    except Exception as exc:  # the worker's own error text, whatever it is
        return f"self-test: {type(exc).__name__}: {str(exc)[:300]}"
    wrong = []
    for name, want in ref.outputs.items():
        if name not in out:
            wrong.append(f"output '{name}' missing")
            continue
        check = compare(name, np.asarray(out[name]), want, ref.tolerance)
        if not check.ok:
            wrong.append(check.why or f"output '{name}' differs")
    return f"self-test: wrong answer: {'; '.join(wrong)}" if wrong else ""
