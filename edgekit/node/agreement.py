"""Does a node's output agree with the host's reference? The rule of deploy's self-test.

Pure numpy (it runs on the node, inside `python -m edgekit.node.selftest`, and on the host in
unit tests). Per output tensor:

- float tensors, and 8/16-bit integer tensors (quantized values, as TFLite int8 models
  return them): the largest |node - host| must stay within ``atol + rtol * max|host|`` (or a
  wider bound given for that output by the bundle's quantization report, see
  edgekit.deploy.selfcase), and the cosine similarity of the two must reach ``min_cosine``
  (unless the whole output is within that bound of zero: its direction is noise then).
  float16 outputs get at least ``FP16_RTOL`` / at most ``FP16_MIN_COSINE``: half precision
  cannot do better.
- 32/64-bit integer and bool tensors (class ids, indices, counts): equal, element for element.
- NaN or infinity must sit where the host has the same value; a shape or dtype other than the
  host's is a failure.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

FP16_RTOL = 1e-2
FP16_MIN_COSINE = 0.999


@dataclass(frozen=True)
class Tolerance:
    rtol: float  # allowed max |node - host|, as a fraction of max |host| ...
    atol: float  # ... plus this
    min_cosine: float
    source: str  # where the numbers come from (shown in reports)
    #: output name -> a wider bound on max |node - host| for that output (from a bundle's
    #: quantization report); the larger of it and atol + rtol * max|host| applies
    max_abs: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tolerance:
        return cls(float(d["rtol"]), float(d["atol"]), float(d["min_cosine"]), str(d["source"]),
                   {str(k): float(v) for k, v in (d.get("max_abs") or {}).items()})


@dataclass
class OutputCheck:
    name: str
    ok: bool
    max_abs_error: float
    max_rel_error: float  # max |node - host| / max |host|
    cosine: float
    allowed_abs: float
    why: str = ""  # the failure, in words

    def to_dict(self) -> dict[str, Any]:
        """For the JSON report: an infinite error (shape mismatch, NaN) becomes null."""
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v
                for k, v in asdict(self).items()}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two tensors (flattened); two zero tensors agree (1.0)."""
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


def _exact(dtype: np.dtype) -> bool:
    return dtype.kind == "b" or (dtype.kind in "iu" and dtype.itemsize >= 4)


def compare(name: str, got: np.ndarray, ref: np.ndarray, tol: Tolerance) -> OutputCheck:
    """Check one output of the node (`got`) against the host's (`ref`)."""
    got, ref = np.asarray(got), np.asarray(ref)
    if got.shape != ref.shape or got.dtype != ref.dtype:
        return OutputCheck(name, False, float("inf"), float("inf"), 0.0, 0.0,
                           f"output {name!r} is {got.dtype}{list(got.shape)}, the host's is "
                           f"{ref.dtype}{list(ref.shape)}")
    g, r = got.astype(np.float64), ref.astype(np.float64)
    finite = np.isfinite(r) & np.isfinite(g)
    odd = ~finite & ~((g == r) | (np.isnan(g) & np.isnan(r)))
    if odd.any():
        return OutputCheck(name, False, float("inf"), float("inf"), 0.0, 0.0,
                           f"output {name!r} has {int(odd.sum())} NaN/inf value(s) where the "
                           "host has others")
    g, r = g[finite], r[finite]
    diff = float(np.max(np.abs(g - r), initial=0.0))
    scale = float(np.max(np.abs(r), initial=0.0))
    rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
    cos = cosine(g, r)
    if _exact(ref.dtype):
        wrong = int(np.count_nonzero(g != r))
        why = f"output {name!r}: {wrong} of {g.size} values differ" if wrong else ""
        return OutputCheck(name, not wrong, diff, rel, cos, 0.0, why)
    rtol, floor = tol.rtol, tol.min_cosine
    if ref.dtype == np.float16:
        rtol, floor = max(rtol, FP16_RTOL), min(floor, FP16_MIN_COSINE)
    allowed = max(tol.atol + rtol * scale, tol.max_abs.get(name, 0.0))
    why = ""
    if diff > allowed:
        why = (f"output {name!r}: max |node - host| {diff:.3g} > allowed {allowed:.3g} "
               f"(cosine {cos:.6f})")
    elif cos < floor and scale > allowed:  # below the noise bound, direction means nothing
        why = f"output {name!r}: cosine {cos:.6f} < {floor:.6f} (max |diff| {diff:.3g})"
    return OutputCheck(name, not why, diff, rel, cos, allowed, why)
