"""A one-node Ray cluster (token auth) and one `edgekit serve` for the infer/bench CLI tests,
started only by the tests that ask for `served`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Ray reads its auth mode when it is imported: set it before any test imports ray.
os.environ["RAY_AUTH_MODE"] = "token"
# the serve tests' model builders and server launcher (real `edgekit serve` subprocess)
sys.path.insert(0, str(Path(__file__).parent.parent / "serve"))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from serve_helpers import affine_model, boom_model, start_server

    from edgekit.model import samples
    from edgekit.serve.localcluster import LocalCluster

    d = tmp_path_factory.mktemp("models")
    models = {"cls": samples.path("ppocr-cls"), "affine": affine_model(d / "affine.onnx"),
              "boom": boom_model(d / "boom.onnx")}
    cluster = LocalCluster(nodes=["pi1"]).start()
    try:
        proc = start_server(cluster, tmp_path_factory, ["--max-queue", "2"], models)
        try:
            yield proc, cluster
        finally:
            proc.stop()
    finally:
        cluster.stop()
