"""Benchmark: a real transformer (all-MiniLM-L6-v2, samples.path("minilm-l6")) pruned by
``edgekit prune`` at 2:4 and 1:4, run by ONNX Runtime with the EdgekitSparseLinear custom op.

Accuracy: cosine of sentence embeddings, pruned vs dense, on held-out real English sentences
(Python's own reference prose, ``pydoc_data.topics``; every other sentence, the rest calibrate
the activation-aware variant), and whether each sentence's nearest neighbour among the others
stays the same. Criteria per pattern: |w| ("magnitude"), |w| x input norm ("wanda"), and
wanda on the feed-forward layers only (attention projections stay dense fp32).
Speed: dense ORT vs pruned ORT, same threads, one sentence
padded to 128 tokens and a batch of 8 real sentences; and the cost of the extension's default
``.tolist()`` output path against the ndarray path ortops installs.
Finally the 2:4 activation-aware model is served by the real serving path: a Ray worker actor
of edgekit.serve (which registers the custom op itself) answers a batch, checked against ORT
in this process.
Needs the ``tokenizers`` package (benchmark only; it ships with transformers).
Run: .venv/bin/python benchmarks/kernels_prune_model.py [--threads 2]"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np

FFN = ["*intermediate.dense*", "encoder.layer.?.output.dense*"]  # 2/3 of the linear weights


def sentences() -> list[str]:
    import pydoc_data.topics as topics

    text = " ".join(topics.topics.values())
    out = []
    for s in re.split(r"(?<=[.!?])\s+", text):
        s = s.strip()
        if 8 <= len(s.split()) <= 40 and re.fullmatch(r"[A-Za-z0-9 ,;:()'\"\-.]+", s):
            out.append(s)
    return sorted(set(out))


def feeds(tok, texts: list[str], pad_to: int | None = None) -> dict[str, np.ndarray]:
    tok.no_padding()
    tok.enable_padding(length=pad_to) if pad_to else tok.enable_padding()
    enc = tok.encode_batch(texts)
    return {"input_ids": np.array([e.ids for e in enc], np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], np.int64)}


def best_ms(sess, feed: dict, reps: int = 10) -> float:
    sess.run(None, feed)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        sess.run(None, feed)
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def embed(sess, tok, texts: list[str]) -> np.ndarray:
    return np.concatenate([sess.run(None, feeds(tok, texts[i:i + 16]))[0]
                           for i in range(0, len(texts), 16)])


def serve_check(path: str, feed: dict, want: np.ndarray) -> dict:
    """Serve the pruned model from a local Ray worker actor and compare its answer."""
    import ray

    from edgekit.serve.worker import remote_worker_class

    tmp = tempfile.mkdtemp(prefix="ekbench-")
    ray.init(num_cpus=1, resources={"edgekit-node-pi1": 1}, include_dashboard=False,
             namespace="edgekit-bench", _temp_dir=tmp, log_to_driver=False)
    try:
        worker = remote_worker_class().options(resources={"edgekit-node-pi1": 1}).remote(
            "pi1", "pi1/minilm-2of4", "onnxruntime", Path(path).read_bytes(), 2)
        ray.get(worker.infer.remote(feed), timeout=300)  # warm-up: builds the layers
        out, ms, node = ray.get(worker.infer.remote(feed), timeout=300)
    finally:
        ray.shutdown()
    diff = float(np.abs(out["sentence_embedding"] - want).max())
    print(f"served by Ray worker on {node}: compute {ms:.2f} ms, max |diff| vs local {diff:.2e}")
    return {"node": node, "compute_ms": ms, "max_abs_diff": diff}


def main() -> None:
    import onnxruntime as ort
    from onnxruntime_extensions import PyCustomOpDef, _ocos
    from tokenizers import Tokenizer

    from edgekit.model import samples
    from edgekit.native import ortops, variant
    from edgekit.native.prune import Layers, prune_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    model = str(samples.path("minilm-l6"))
    tok = Tokenizer.from_file(str(samples.path("minilm-l6-tokenizer")))
    tok.enable_truncation(128)
    every = sentences()
    calib_texts, texts = every[0::2], every[1::2]
    calibration = [feeds(tok, calib_texts[i:i + 16]) for i in range(0, len(calib_texts), 16)]

    def session(path: str, custom: bool):
        so = ortops.session_options() if custom else ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

    dense = session(model, False)
    ref = embed(dense, tok, texts)
    sim_ref = ref @ ref.T
    np.fill_diagonal(sim_ref, -2)
    one, batch = feeds(tok, texts[:1], pad_to=128), feeds(tok, texts[1:9])
    result = {"variant": variant(), "threads": args.threads, "sentences": len(texts),
              "batch8_tokens": list(batch["input_ids"].shape),
              "dense_ms": {"1x128": best_ms(dense, one), "8 sentences": best_ms(dense, batch)}}
    print(f"variant {variant()}, threads {args.threads}, {len(texts)} held-out sentences "
          f"({len(calib_texts)} calibrate); "
          f"dense ORT 1x128 {result['dense_ms']['1x128']:.2f} ms, "
          f"8 sentences {batch['input_ids'].shape} {result['dense_ms']['8 sentences']:.2f} ms")
    with tempfile.TemporaryDirectory(prefix="ek-prune-") as tmp:
        for pattern in ((2, 4), (1, 4)):
            for crit in ("magnitude", "wanda", "wanda FFN only"):
                out = str(Path(tmp) / f"minilm-{pattern[0]}of{pattern[1]}-{crit[:5]}.onnx")
                report, _ = prune_model(model, out, pattern,
                                        Layers(FFN if crit.endswith("only") else None),
                                        calibration=calibration if crit != "magnitude" else None)
                sess = session(out, True)
                got = embed(sess, tok, texts)
                cos = (ref * got).sum(1) / np.linalg.norm(got, axis=1)
                sim = got @ got.T
                np.fill_diagonal(sim, -2)
                nn_same = float((sim.argmax(1) == sim_ref.argmax(1)).mean())
                r = {"layers_pruned": len(report.layers),
                     "size_mb": [report.size_before / 1e6, report.size_after / 1e6],
                     "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
                     "nearest_neighbour_same": nn_same,
                     "ms": {"1x128": best_ms(sess, one), "8 sentences": best_ms(sess, batch)}}
                if crit == "magnitude":  # the extension's own .tolist() output path, once
                    PyCustomOpDef.install_hooker(_ocos._on_pyop_invocation)
                    r["ms_tolist"] = {"1x128": best_ms(sess, one, 3),
                                      "8 sentences": best_ms(sess, batch, 3)}
                    ortops._install_fast_returns(ortops._OPDEF)
                if pattern == (2, 4) and crit == "wanda":
                    result["served"] = serve_check(out, batch, sess.run(None, batch)[0])
                key = f"{pattern[0]}:{pattern[1]} {crit}"
                result[key] = r
                tl = r.get("ms_tolist")
                print(f"{key}: {len(report.layers)} layers, {report.size_before / 1e6:.1f} -> "
                      f"{report.size_after / 1e6:.1f} MB; embedding cosine mean "
                      f"{cos.mean():.4f} min {cos.min():.4f}, nearest neighbour kept "
                      f"{nn_same:.1%}; ms 1x128 {r['ms']['1x128']:.2f}, 8 sentences "
                      f"{r['ms']['8 sentences']:.2f}"
                      + (f" (extension's tolist path: {tl['1x128']:.2f}, "
                         f"{tl['8 sentences']:.2f})" if tl else ""))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
