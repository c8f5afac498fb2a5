"""What `edgekit infer` and `edgekit bench` conclude from an answer: whether an output is a
classifier's scores (and its top classes), and whether a load test passed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import InputError

#: a [1, N] output whose values lie in [0, 1] and sum to 1 within this is a softmax
PROB_SUM_TOLERANCE = 1e-3
#: bench fails when more than this share of its requests were refused (503) by default
MAX_REFUSED_SHARE = 0.5
#: `edgekit bench` exit code when the run failed (errors, too many 503s, nothing succeeded)
EXIT_BENCH_FAILED = 1


def read_labels(path: Path) -> list[str]:
    """One class label per line (blank lines ignored)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read labels: {exc}", where=str(path)) from exc
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise InputError("no labels in the file (one class label per line)", where=str(path))
    return labels


def is_probabilities(arr: np.ndarray) -> bool:
    """[1, N] (N >= 2) floats in [0, 1] summing to 1: a softmax over N classes."""
    if arr.ndim != 2 or arr.shape[0] != 1 or arr.shape[1] < 2 or arr.dtype.kind != "f":
        return False
    row = arr[0].astype(np.float64)
    if not np.all(np.isfinite(row)) or row.min() < 0.0 or row.max() > 1.0:
        return False
    return abs(float(row.sum()) - 1.0) <= PROB_SUM_TOLERANCE


def output_entry(name: str, arr: np.ndarray, top_k: int,
                 labels: list[str] | None) -> dict[str, Any]:
    """One output as `infer` reports it: the top-k classes when it is a classifier's (labels
    given for exactly its N classes, or a softmax), else the tensor (small) or a summary."""
    entry: dict[str, Any] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
    classes = arr.ndim == 2 and arr.shape[0] == 1 and arr.dtype.kind in "fiu"
    if labels is not None and classes and arr.shape[1] != len(labels):
        raise InputError(f"output '{name}' has {arr.shape[1]} values but {len(labels)} labels "
                         "were given", hint="--labels needs one line per class")
    if (labels is not None and classes) or is_probabilities(arr):
        entry["kind"] = "classes"
        idx = np.argsort(arr[0])[::-1][:top_k]
        entry["top_k"] = [{"class": int(i), "score": float(arr[0, i]),
                           **({"label": labels[i]} if labels else {})} for i in idx]
        return entry
    entry["kind"] = "tensor"
    if arr.size <= 64:
        entry["data"] = arr.tolist()
    elif arr.size:
        finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
        entry.update(min=float(finite.min()) if finite.size else None,
                     max=float(finite.max()) if finite.size else None,
                     mean=float(finite.mean()) if finite.size else None,
                     nonfinite=int(arr.size - finite.size))
    return entry


def entry_lines(name: str, entry: dict[str, Any]) -> list[str]:
    """The human lines for one output entry (plain text, no markup)."""
    lines = [f"  {name} {entry['shape']} {entry['dtype']}"]
    for t in entry.get("top_k", []):
        label = f"  {t['label']}" if "label" in t else ""
        lines.append(f"    class {t['class']:>5}  {t['score']:.4f}{label}")
    if "data" in entry:
        lines.append(f"    {entry['data']}")
    if "mean" in entry:
        lines.append(f"    min {_g(entry['min'])} max {_g(entry['max'])} "
                     f"mean {_g(entry['mean'])}"
                     + (f" ({entry['nonfinite']} NaN/Inf)" if entry.get("nonfinite") else ""))
        if len(entry["shape"]) == 2 and entry["shape"][0] == 1:
            lines.append("    (not probabilities; give --labels FILE to read it as classes)")
    return lines


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def bench_verdict(summary: dict[str, Any], max_refused: float) -> dict[str, Any]:
    """Pass or fail, and why: any error, more than `max_refused` of the requests refused
    (503), or no request answered at all."""
    total = summary["requests"]
    refused = summary["refused_503"] / total if total else 0.0
    problems = []
    if summary["errors"]:
        problems.append(f"{summary['errors']} of {total} requests failed")
    if refused > max_refused:
        problems.append(f"{refused:.0%} of the requests were refused (503), more than "
                        f"--max-refused {max_refused:.0%}")
    if not summary["ok"]:
        problems.append("no request succeeded")
    return {"refused_share": round(refused, 4), "max_refused": max_refused,
            "passed": not problems, "problems": problems}
