"""Codec and wire format: C kernel vs numpy fallback (exact), edge cases, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import NativeError
from edgekit.native import _lib, codec, variant


@pytest.mark.parametrize("n", [0, 1, 31, 32, 33, 1000])
@pytest.mark.parametrize("block", [32, 0, 7])
@pytest.mark.parametrize("sdt", [np.float16, np.float32])
def test_encode_matches_numpy(n: int, block: int, sdt: type) -> None:
    rng = np.random.default_rng(n + block)
    x = (rng.standard_normal(n) * rng.choice([1e-3, 1.0, 1e4], n)).astype(np.float32)
    q, s = codec.encode_q8(x, block, sdt)
    q2, s2 = codec._encode_numpy(x, block, np.empty_like(q), np.empty_like(s))
    np.testing.assert_array_equal(q, q2)
    np.testing.assert_array_equal(s.view(np.uint8), s2.view(np.uint8))
    assert q.min(initial=0) >= -127
    y = codec.decode_q8(q, s, x.shape, block)
    # error bound: half a quantization step of the block (fp16 scale rounding included)
    if n:
        assert np.abs(y - x).max() <= np.abs(x).max() / 127 * 0.51 + 1e-12


def test_extremes_saturate() -> None:
    x = np.array([1e30, -1e30, 3.0, 0.0] * 8, np.float32)
    q, s = codec.encode_q8(x, 32, np.float16)
    assert s[0] == np.float16(65504) and q.max() == 127 and q.min() == -127
    q, s = codec.encode_q8(np.zeros(40, np.float32))
    assert not q.any() and not s.any()


def test_nonfinite_refused() -> None:
    x = np.ones(64, np.float32)
    x[40] = np.nan
    with pytest.raises(NativeError, match="NaN"):
        codec.encode_q8(x)


def test_fp16_exact() -> None:
    bits = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    h = bits.view(np.float16)
    f = codec.from_fp16(h)
    finite = np.isfinite(h)
    np.testing.assert_array_equal(f[finite], h[finite].astype(np.float32))
    x = np.random.default_rng(0).standard_normal(1001).astype(np.float32) * 1e4
    np.testing.assert_array_equal(codec.to_fp16(x), x.astype(np.float16))


@pytest.mark.parametrize("kind", ["q8", "fp16", "raw"])
def test_pack_roundtrip(kind: str) -> None:
    x = np.random.default_rng(1).standard_normal((2, 3, 50)).astype(np.float32)
    y = codec.unpack(codec.pack(x, kind))
    assert y.shape == x.shape and y.dtype == np.float32
    tol = {"q8": 0.03, "fp16": 2e-3, "raw": 0.0}[kind]
    assert np.abs(y - x).max() <= tol
    ids = np.arange(12, dtype=np.int64).reshape(3, 4)
    np.testing.assert_array_equal(codec.unpack(codec.pack(ids, kind)), ids)
    big = np.ones((64, 1024), np.float32)
    assert len(codec.pack(big, "q8")) < big.nbytes / 3.7


def test_unpack_rejects_garbage() -> None:
    data = codec.pack(np.ones(100, np.float32))
    for bad in (b"", b"nope" * 8, data[:-1], data + b"x"):
        with pytest.raises(NativeError):
            codec.unpack(bad)


def test_bad_arguments() -> None:
    with pytest.raises(NativeError, match="scale_dtype"):
        codec.encode_q8(np.ones(3, np.float32), 32, np.int8)
    with pytest.raises(NativeError, match="shape"):
        codec.decode_q8(np.zeros(10, np.int8), np.ones(1, np.float16), (3, 3))
    with pytest.raises(NativeError, match="dtype"):
        codec.encode_q8(np.array(["a"]))


def test_variant_reported() -> None:
    assert variant() in {"avx2", "neon", "neon-dotprod", "portable", "numpy-fallback"}
    if _lib.LIB is not None:
        assert variant() != "numpy-fallback"
