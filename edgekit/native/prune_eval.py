"""Whole-model check of a pruned model against its dense original, both run by ONNX Runtime:
cosine similarity and top-1 agreement of the first output on held-out inputs, and latency."""

from __future__ import annotations

import time

import numpy as np

from edgekit.native.prune import PruneReport

_ORT_INT = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


def synth_inputs(path: str, count: int = 8, seq_len: int = 128, seed: int = 1) -> list[dict]:
    """Inputs shaped from the model's declared inputs: ids in [0, 1000), masks of ones,
    token types of zeros, float tensors N(0, 1); symbolic dims become 1 (first) or seq_len."""
    import onnxruntime as ort

    from edgekit.native import ortops

    sess = ort.InferenceSession(path, sess_options=ortops.session_options(),
                                providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        feed = {}
        for inp in sess.get_inputs():
            shape = [d if isinstance(d, int) and d > 0 else (1 if i == 0 else seq_len)
                     for i, d in enumerate(inp.shape)]
            name = inp.name.lower()
            if inp.type in _ORT_INT:
                dt = _ORT_INT[inp.type]
                if "mask" in name:
                    feed[inp.name] = np.ones(shape, dt)
                elif "type" in name:
                    feed[inp.name] = np.zeros(shape, dt)
                else:
                    feed[inp.name] = rng.integers(0, 1000, shape).astype(dt)
            else:
                feed[inp.name] = rng.standard_normal(shape).astype(np.float32)
        feeds.append(feed)
    return feeds


def _best_ms(sess, feed: dict, reps: int) -> float:
    sess.run(None, feed)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        sess.run(None, feed)
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def evaluate(report: PruneReport, feeds: list[dict], threads: int = 0, reps: int = 5) -> None:
    """Fill report.cosine, top1_agreement, dense_ms and pruned_ms."""
    import onnxruntime as ort

    from edgekit.native import ortops

    def session(path: str, custom: bool):
        so = ortops.session_options() if custom else ort.SessionOptions()
        so.intra_op_num_threads = threads
        return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])

    dense, pruned = session(report.model, False), session(report.output, True)
    cosines, agree, total = [], 0, 0
    for feed in feeds:
        a = dense.run(None, feed)[0].astype(np.float64)
        b = pruned.run(None, feed)[0].astype(np.float64)
        fa, fb = a.reshape(-1), b.reshape(-1)
        cosines.append(float(fa @ fb / (np.linalg.norm(fa) * np.linalg.norm(fb) + 1e-30)))
        if a.ndim >= 2 and a.shape[-1] > 1:
            agree += int((a.argmax(-1) == b.argmax(-1)).sum())
            total += a[..., 0].size
    report.cosine = round(float(np.mean(cosines)), 6)
    report.top1_agreement = round(agree / total, 4) if total else None
    report.dense_ms = round(_best_ms(dense, feeds[0], reps), 3)
    report.pruned_ms = round(_best_ms(pruned, feeds[0], reps), 3)
