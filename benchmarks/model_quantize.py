"""Quantization on real PyPI models: size ratio, accuracy against fp32, int8/fp32 latency.

    .venv/bin/python benchmarks/model_quantize.py [--json]

Prints a table, then one JSON document. Latency is this machine (x86-64), single thread.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from model_data import datasets

from edgekit.model import samples
from edgekit.model.quantize import QuantizeOptions, quantize_model

CONFIGS = {
    "ppocr-det": [QuantizeOptions(per_channel=False), QuantizeOptions(per_channel=True)],
    "ppocr-cls": [QuantizeOptions(per_channel=False), QuantizeOptions(per_channel=True)],
    "ppocr-rec": [QuantizeOptions(per_channel=True), QuantizeOptions(dynamic=True)],
    "silero-vad": [QuantizeOptions(dynamic=True)],
    "minilm-l6": [QuantizeOptions(dynamic=True), QuantizeOptions(dynamic=True, per_channel=True)],
}


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp:
        for name, (sample, calib, held, kind) in datasets().items():
            for opts in CONFIGS[name]:
                opts.min_cosine = -1.0  # measure, never refuse
                out = Path(tmp) / f"{name}.onnx"
                res = quantize_model(samples.path(sample), out, calib, held, opts, kind)
                ev = res.evaluation
                top1 = [o.top1_agreement for o in ev.outputs if o.top1_agreement is not None]
                rows.append({
                    "model": name, "mode": res.mode, "data": kind,
                    "calib": len(calib), "held_out": len(held),
                    "fp32_mb": round(ev.fp32_bytes / 1e6, 3),
                    "int8_mb": round(ev.int8_bytes / 1e6, 3),
                    "size_ratio": round(ev.size_ratio, 3),
                    "min_cosine": round(ev.min_cosine, 5),
                    "max_abs_err": round(max(o.max_abs_error for o in ev.outputs), 5),
                    "mean_abs_err": round(max(o.mean_abs_error for o in ev.outputs), 6),
                    "top1": round(min(top1), 4) if top1 else None,
                    "fp32_ms": round(ev.fp32_ms, 3), "int8_ms": round(ev.int8_ms, 3),
                    "speed_ratio": round(ev.speed_ratio, 3),
                })
                print(rows[-1], file=sys.stderr, flush=True)
    head = ["model", "mode", "size_ratio", "min_cosine", "max_abs_err", "top1", "fp32_ms",
            "int8_ms", "speed_ratio"]
    print(" | ".join(head))
    for r in rows:
        print(" | ".join(str(r[h]) for h in head))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
