"""Preprocessing and the int8 linear layer from Python: kernel vs numpy, shapes, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import NativeError
from edgekit.native import preprocess
from edgekit.native.linear import Int8Linear, gemm_s8_ref
from edgekit.native.sparse import parse_pattern, prune

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize(("hw", "size"), [((1, 1), (1, 1)), ((37, 53), (224, 224)),
                                          ((480, 640), (97, 131))])
def test_preprocess_matches_numpy(layout: str, hw: tuple[int, int], size: tuple[int, int]) -> None:
    img = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
    norm = preprocess.Normalize(MEAN, STD)
    out = preprocess.image_to_tensor(img, size, norm, layout)
    ref = preprocess._numpy_impl(*preprocess.plan(img, size, norm, layout, None))
    assert out.shape == ref.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=1e-5)
    for int8 in (preprocess.Int8(), preprocess.Int8(0.05, -3)):
        q = preprocess.image_to_tensor(img, size, norm, layout, int8)
        img_, p = preprocess.plan(img, size, norm, layout, int8)
        if int8.q_scale is None:
            m, s = np.array(MEAN, np.float32), np.array(STD, np.float32)
            assert p.q_scale == preprocess.default_q_scale(m, s, 1 / 255)
        qref = preprocess._numpy_impl(img_, p)
        assert q.dtype == np.int8 and np.abs(q.astype(int) - qref).max() <= 1


def test_preprocess_numpy_fallback_through_the_public_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the C library is not built, image_to_tensor gives the kernel's answer in numpy."""
    from edgekit.native import _lib

    img = np.random.default_rng(2).integers(0, 256, (30, 20, 3), dtype=np.uint8)
    norm, int8 = preprocess.Normalize(MEAN, STD), preprocess.Int8(0.04, 2)
    built = [preprocess.image_to_tensor(img, (9, 11), norm, "NHWC", q) for q in (None, int8)]
    monkeypatch.setattr(_lib, "LIB", None)
    plain = [preprocess.image_to_tensor(img, (9, 11), norm, "NHWC", q) for q in (None, int8)]
    np.testing.assert_allclose(plain[0], built[0], atol=1e-5)
    assert plain[1].dtype == np.int8 and np.abs(plain[1].astype(int) - built[1]).max() <= 1


def test_preprocess_strided_crop_and_gray() -> None:
    img = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    crop = img[5:40, 7:50]
    np.testing.assert_allclose(preprocess.image_to_tensor(crop, (16, 16)),
                               preprocess.image_to_tensor(crop.copy(), (16, 16)), atol=0)
    assert preprocess.image_to_tensor(img[:, :, 0], (8, 8)).shape == (1, 1, 8, 8)


def test_preprocess_refuses() -> None:
    img = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(NativeError, match="uint8"):
        preprocess.image_to_tensor(img.astype(np.float32), (2, 2))
    with pytest.raises(NativeError, match="std"):
        preprocess.image_to_tensor(img, (2, 2), preprocess.Normalize(0.0, (1.0, 0.0, 1.0)))
    with pytest.raises(NativeError, match="size"):
        preprocess.image_to_tensor(img, (0, 2))
    with pytest.raises(NativeError, match="layout"):
        preprocess.image_to_tensor(img, (2, 2), layout="CHW")
    with pytest.raises(NativeError, match="q_scale"):
        preprocess.image_to_tensor(img, (2, 2), int8=preprocess.Int8(q_scale=0.0))


@pytest.mark.parametrize("pattern", ["1:1", "1:2", "2:4", "1:4"])
@pytest.mark.parametrize(("rows", "n_out", "k_in"), [(1, 1, 4), (3, 9, 100), (17, 24, 64),
                                                     (33, 40, 200)])
def test_linear_exact_vs_reference(pattern: str, rows: int, n_out: int, k_in: int) -> None:
    n, m = parse_pattern(pattern)
    rng = np.random.default_rng(rows * n_out)
    packed = prune(rng.standard_normal((n_out, k_in)).astype(np.float32), n, m)
    xq = rng.integers(-127, 128, (rows, k_in), dtype=np.int8)
    xq[0, :3] = 127
    acc = Int8Linear(packed).acc(xq)
    np.testing.assert_array_equal(acc, gemm_s8_ref(xq, packed.dense_int8()))
    # each row of each group keeps exactly n of m
    nz = (packed.dense_int8().reshape(n_out, -1, m) != 0).sum(-1)
    assert nz.max() <= n


def test_linear_float_and_shapes() -> None:
    rng = np.random.default_rng(3)
    w = rng.standard_normal((48, 128)).astype(np.float32)
    bias = rng.standard_normal(48).astype(np.float32)
    layer = Int8Linear(prune(w, 2, 4), bias)
    x = rng.standard_normal((2, 5, 128)).astype(np.float32)
    y = layer(x)
    ref = x @ layer.packed.dense_float().T + bias
    assert y.shape == (2, 5, 48)
    assert np.abs(y - ref).max() <= 0.02 * np.abs(ref).max()
    assert layer(np.zeros((0, 128), np.float32)).shape == (0, 48)
    with pytest.raises(NativeError, match="last dimension"):
        layer(np.zeros((2, 127), np.float32))
    with pytest.raises(NativeError, match="NaN"):
        layer(np.full((1, 128), np.inf, np.float32))
    with pytest.raises(NativeError, match=r"-128|invalid"):
        layer.acc(np.full((1, 128), -128, np.int8))
    with pytest.raises(NativeError, match="pattern"):
        parse_pattern("3:4")
