"""Fixtures of the model tooling tests."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest


@pytest.fixture
def save(tmp_path: Path):
    def _save(model: onnx.ModelProto, name: str = "m.onnx") -> Path:
        path = tmp_path / name
        onnx.save(model, str(path))
        return path

    return _save
