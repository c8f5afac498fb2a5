"""N:M magnitude pruning and int8 packing of a weight matrix, in the layout the kernel takes.

W is [N out, K in]; along K every group of m inputs keeps n (2:4, 1:4, 1:2; 1:1 is dense).
One mask is shared by each block of 8 output channels (chosen by the block's summed |w|),
so the kernels gather each activation once per 8 channels; every row still has exactly n
nonzeros per group of m. Weights become int8 in [-127, 127] with one scale per channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.errors import NativeError

BLOCK_CH = 8
PATTERNS = {(1, 1), (1, 2), (2, 4), (1, 4)}


@dataclass(frozen=True)
class PackedWeights:
    """Kept int8 weights [N, K*n/m], their positions [ceil(N/8), K*n/m], per-channel scales."""

    vals: np.ndarray
    pos: np.ndarray
    wscale: np.ndarray
    n: int
    m: int
    k_in: int

    @property
    def n_out(self) -> int:
        return int(self.vals.shape[0])

    def dense_int8(self) -> np.ndarray:
        """The pruned int8 matrix [N, K] with zeros where weights were removed."""
        return scatter(self.vals, self.pos, self.n, self.m, self.k_in)

    def dense_float(self) -> np.ndarray:
        """The pruned, quantized weights as float32 [N, K] (what the kernel computes with)."""
        return self.dense_int8().astype(np.float32) * self.wscale[:, None]


def parse_pattern(text: str) -> tuple[int, int]:
    """'2:4' -> (2, 4); NativeError for unsupported patterns."""
    try:
        n, m = (int(v) for v in text.split(":"))
    except ValueError:
        raise NativeError(f"pattern {text!r} is not N:M", where="--pattern") from None
    if (n, m) not in PATTERNS:
        raise NativeError(f"pattern {text} unsupported (2:4, 1:4, 1:2, 1:1)", where="--pattern")
    return n, m


def prune(w: np.ndarray, n: int, m: int, input_norms: np.ndarray | None = None) -> PackedWeights:
    """Prune a float weight [N, K] to n:m (masks shared per 8 channels), int8-quantize.

    Scores are |w|, or with ``input_norms`` (the L2 norm of each of the K inputs over
    calibration data) |w| * norm: a weight on an input that is always small matters little
    (the activation-aware criterion of Sun et al., "Wanda", 2023).
    """
    w = np.asarray(w, np.float32)
    if w.ndim != 2 or w.size == 0:
        raise NativeError(f"shape {w.shape}: a non-empty [out, in] matrix expected", where="weight")
    if (n, m) not in PATTERNS:
        raise NativeError(f"pattern {n}:{m} unsupported", where="prune")
    n_out, k_in = w.shape
    if k_in % m:
        raise NativeError(f"input size {k_in} is not a multiple of {m}", where="weight")
    if not np.isfinite(w).all():
        raise NativeError("weights hold NaN or infinity", where="weight")
    groups = k_in // m
    nblk = -(-n_out // BLOCK_CH)
    padded = np.zeros((nblk * BLOCK_CH, k_in), np.float32)
    padded[:n_out] = w
    if input_norms is not None:
        norms = np.asarray(input_norms, np.float32).reshape(-1)
        if norms.shape != (k_in,) or not np.isfinite(norms).all():
            raise NativeError(f"input_norms shape {norms.shape}, ({k_in},) finite expected",
                              where="prune")
        padded = padded * norms[None, :]
    score = np.abs(padded).reshape(nblk, BLOCK_CH, groups, m).sum(axis=1)  # [nblk, G, m]
    keep = np.sort(np.argsort(-score, axis=2, kind="stable")[:, :, :n], axis=2)  # [nblk, G, n]
    per_ch = np.repeat(keep, BLOCK_CH, axis=0)[:n_out]  # [N, G, n]
    kept = np.take_along_axis(w.reshape(n_out, groups, m), per_ch, axis=2).reshape(n_out, -1)
    amax = np.abs(kept).max(axis=1)
    wscale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    vals = np.clip(np.rint(kept / wscale[:, None]), -127, 127).astype(np.int8)
    return PackedWeights(vals, keep.reshape(nblk, -1).astype(np.uint8), wscale, n, m, k_in)


def scatter(vals: np.ndarray, pos: np.ndarray, n: int, m: int, k_in: int) -> np.ndarray:
    """Expand kept values back to a dense [N, K] matrix."""
    n_out = vals.shape[0]
    groups = k_in // m
    dense = np.zeros((n_out, groups, m), vals.dtype)
    per_ch = np.repeat(pos.reshape(-1, groups, n), BLOCK_CH, axis=0)[:n_out].astype(np.int64)
    np.put_along_axis(dense, per_ch, vals.reshape(n_out, groups, n), axis=2)
    return dense.reshape(n_out, k_in)
