"""The kernel thread pool: concurrent Python callers (ctypes releases the GIL) and fork."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from edgekit.native import _lib
from edgekit.native.linear import Int8Linear
from edgekit.native.sparse import prune

pytestmark = pytest.mark.skipif(_lib.LIB is None, reason="native library not built")


def _layer() -> tuple[Int8Linear, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    layer = Int8Linear(prune(rng.standard_normal((512, 1024)).astype(np.float32), 2, 4), threads=2)
    xq = rng.integers(-127, 128, (48, 1024)).astype(np.int8)  # ~12M MACs: split over threads
    return layer, xq, layer.acc(xq)


def test_concurrent_callers_get_exact_results() -> None:
    layer, xq, want = _layer()
    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(lambda _: layer.acc(xq), range(16)))
    for got in results:
        np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_child_after_fork_runs_threaded_calls() -> None:
    layer, xq, want = _layer()  # the pool's workers exist in the parent now
    pid = os.fork()
    if pid == 0:  # child: must build its own workers rather than wait on the parent's
        ok = np.array_equal(layer.acc(xq), want)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
