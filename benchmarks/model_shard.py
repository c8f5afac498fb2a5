"""Pipeline sharding on real PyPI models, fp32 and int8: DP partition vs the naive split.

    .venv/bin/python benchmarks/model_shard.py [--no-profile] [--link-mbps 1000]

For K = 2, 3, 4: predicted slowest stage and balance ratio (slowest / mean) of the DP plan and
of the equal-nodes split, and the bytes crossing each cut per request. Node costs come from
ONNX Runtime's profiler on this machine (or MAC counts with --no-profile). Every plan is
validated (chained stages == whole model) before it is reported.

What the graph allows: every contiguous split is enumerated (``balance.exhaustive``) to give
the lowest slowest stage (it must equal the DP's: ``dp_exact``) and the best balance any
contiguous split reaches; ``bound_ms`` = max(largest single node, total compute / K) is a
floor for any split at all. A plan whose ``best_balance`` exceeds 1.15 cannot be balanced
within 15 % by any contiguous cut of that graph under this cost model.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from model_data import datasets

from edgekit.model import balance, partition, samples
from edgekit.model.loader import load_onnx
from edgekit.model.plan import Targets, node_times, shard_model
from edgekit.model.quantize import QuantizeOptions, quantize_model

MODELS = ["yolov8n", "ppocr-det", "ppocr-rec", "ppocr-cls", "silero-vad", "minilm-l6"]


def _bottleneck(res) -> str:
    slow = max(res.stages, key=lambda s: s.predicted_ms)
    sent = sum(t.bytes for t in slow.outputs)
    return (f"stage {slow.index} ({slow.nodes} nodes): compute {slow.compute_ms:.2f} ms + "
            f"send {slow.transfer_ms:.2f} ms ({sent:,} B)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--link-mbps", type=float, default=1000.0)
    args = ap.parse_args()
    data = datasets()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-shard-") as tmp:
        for name in MODELS:
            sample, calib, held, kind = data[name]
            variants = {"fp32": samples.path(sample)}
            if name != "silero-vad":  # its int8 barely shrinks (weights inside If bodies)
                q = Path(tmp) / f"{name}.int8.onnx"
                dynamic = name == "minilm-l6"  # transformer: dynamic int8, as ORT advises
                quantize_model(samples.path(sample), q, calib, held,
                               QuantizeOptions(per_channel=not dynamic, dynamic=dynamic,
                                               min_cosine=-1.0), kind)
                variants["int8"] = q
            for precision, path in variants.items():
                model = load_onnx(path)
                # one profile per model, shared by K = 2, 3, 4 (re-profiling on a shared
                # machine made K = 3 look slower than K = 2)
                times = None if args.no_profile else node_times(model, held[0])
                for k in (2, 3, 4):
                    res = shard_model(model, Targets(k, link_bytes_per_s=args.link_mbps * 1e6 / 8),
                                      held[:2], measure=not args.no_profile, times=times)
                    ex = balance.exhaustive(res.problem, k,
                                            link_bytes_per_s=args.link_mbps * 1e6 / 8)
                    rows.append({
                        "model": name, "precision": precision, "k": k,
                        "nodes": sum(s.nodes for s in res.stages),
                        "dp_slowest_ms": round(res.slowest_ms, 3),
                        "dp_balance": round(res.balance_ratio, 3),
                        "naive_slowest_ms": round(res.naive_slowest_ms, 3),
                        "dp_exact": abs(ex.slowest_ms - res.slowest_ms) <= 1e-9 * res.slowest_ms,
                        "balance_at_optimum": round(ex.balance_at_optimum, 3),
                        "best_balance": round(ex.best_balance, 3),
                        "best_balance_slowest_ms": round(ex.best_balance_slowest_ms, 3),
                        "bottleneck": _bottleneck(res),
                        # option, not default: a stage sending while computing the next request
                        "overlap_slowest_ms": round(partition.solve(
                            res.problem, k, link_bytes_per_s=args.link_mbps * 1e6 / 8,
                            overlap=True).slowest_ms, 3),
                        "bound_ms": round(res.bound_ms, 3),
                        "largest_node": f"{res.largest_node} ({res.largest_node_ms:.2f} ms)",
                        "splits_checked": ex.splits,
                        "naive_balance": round(res.naive_balance_ratio, 3),
                        "cut_bytes": [sum(t.bytes for t in s.outputs) for s in res.stages[:-1]],
                        "cut_tensors": [len(s.outputs) for s in res.stages[:-1]],
                        "stage_nodes": [s.nodes for s in res.stages],
                        "validated_exact": res.validation.exact,
                        "cost_source": res.cost_source,
                    })
                    print(rows[-1], file=sys.stderr, flush=True)
    head = ["model", "precision", "k", "dp_slowest_ms", "dp_balance", "balance_at_optimum",
            "best_balance", "best_balance_slowest_ms", "bound_ms", "dp_exact", "overlap_slowest_ms",
            "naive_slowest_ms", "naive_balance", "bottleneck", "validated_exact"]
    print(" | ".join(head))
    for r in rows:
        print(" | ".join(str(r[h]) for h in head))
    worse = [r for r in rows if r["dp_slowest_ms"] > r["naive_slowest_ms"] + 1e-9]
    print(f"DP slower than naive in {len(worse)} of {len(rows)} plans")
    off = [r for r in rows if r["dp_balance"] > 1.15]
    print(f"{len(off)} of {len(rows)} plans above 1.15; of these, no split as fast as the DP's "
          f"reaches 1.15 in {sum(r['balance_at_optimum'] > 1.15 for r in off)}, no split at all "
          f"in {sum(r['best_balance'] > 1.15 for r in off)}; DP == exhaustive in "
          f"{sum(r['dp_exact'] for r in rows)} of {len(rows)}")
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
