"""One Ray cluster (head + pi1..pi3, token auth on) and one `edgekit serve` per test session.

The server runs with `--compress` (int8 tensors between pipeline stages) and the real thermal
controller (`--controller thermal`) in watch-only mode (EDGEKIT_THERMAL_POLICY=off), so its
power readings flow into energy per inference without it re-weighting nodes under other tests.
"""

from __future__ import annotations

import os

import pytest
from serve_helpers import affine_model, boom_model, chain_bundle, start_server

# Ray reads its auth mode when it is imported: set it before any test imports ray.
os.environ["RAY_AUTH_MODE"] = "token"


@pytest.fixture(scope="session")
def ray_cluster():
    from edgekit.serve.localcluster import LocalCluster

    cluster = LocalCluster(nodes=["pi1", "pi2", "pi3"]).start()
    cluster.apply_env()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def model_files(tmp_path_factory):
    from edgekit.model import samples

    d = tmp_path_factory.mktemp("models")
    return {
        "cls": samples.path("ppocr-cls"),
        "affine": affine_model(d / "affine.onnx"),
        "boom": boom_model(d / "boom.onnx"),
        "chain": chain_bundle(d / "chain"),
        "chain3": chain_bundle(d / "chain3", stages=3),
        "face": samples.path("face-detection"),
    }


@pytest.fixture(scope="session")
def served(ray_cluster, model_files, tmp_path_factory):
    """The session's `edgekit serve` (ServerProc): every model of `model_files`."""
    options = ["--max-queue", "4", "--batch", "affine=8:2", "--compress",
               "--controller", "thermal"]
    proc = start_server(ray_cluster, tmp_path_factory, options, model_files)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def server(served, ray_cluster):
    """`edgekit serve` as a real subprocess; yields (url, token, cluster)."""
    return served.url, served.token, ray_cluster
