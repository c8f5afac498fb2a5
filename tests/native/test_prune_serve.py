"""A pruned model served by the real serving path: a Ray worker actor (edgekit.serve.worker)
loads the model bytes through serve.runtime, which must register the EdgekitSparseLinear
custom op by itself; the answers must match the same pruned model run locally."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from ray_auth import token_auth

from tests.native.test_prune_ort import _model

ray = pytest.importorskip("ray")
pytest.importorskip("onnxruntime_extensions")


@pytest.fixture
def ray_local():
    ray_tmp = tempfile.mkdtemp(prefix="eknat-")  # AF_UNIX paths must stay under 107 bytes
    with token_auth(Path(ray_tmp)):
        ray.init(num_cpus=1, resources={"edgekit-node-pi1": 1}, include_dashboard=False,
                 namespace="edgekit-native-test", _temp_dir=ray_tmp, log_to_driver=False)
        yield
        ray.shutdown()
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_worker_actor_serves_pruned_model(tmp_path: Path, ray_local: None) -> None:
    import onnxruntime as ort

    from edgekit.native import ortops
    from edgekit.native.prune import Layers, prune_model
    from edgekit.serve.worker import remote_worker_class

    src, out = tmp_path / "m.onnx", tmp_path / "m.pruned.onnx"
    _model(src)
    report, _ = prune_model(src, out, (2, 4), Layers(min_params=1000))
    assert len(report.layers) == 2 and ortops.uses_custom_op(str(out))
    x = np.random.default_rng(3).standard_normal((4, 128)).astype(np.float32)
    local = ort.InferenceSession(str(out), ortops.session_options()).run(None, {"x": x})[0]

    worker = remote_worker_class().options(resources={"edgekit-node-pi1": 1}).remote(
        "pi1", "pi1/m.pruned", "onnxruntime", out.read_bytes(), 1)
    outputs, compute_ms, node = ray.get(worker.infer.remote({"x": x}), timeout=120)
    assert node == "pi1" and compute_ms > 0
    np.testing.assert_allclose(outputs["y"], local, rtol=1e-5, atol=1e-5)
    meta = ray.get(worker.describe.remote(), timeout=60)
    assert [s.name for s in meta["outputs"]] == ["y"]
