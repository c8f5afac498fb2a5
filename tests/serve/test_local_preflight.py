"""`edgekit serve` without --local checks before it joins Ray: model paths first, then that
the cluster (`--ray-address auto` included) answers, takes our token and is an edgekit one.

Against a real Ray head of our own (token auth) standing in for "someone else's Ray on this
machine": `auto` is pointed at it through RAY_ADDRESS, which is what Ray's own discovery reads
first. Before, serve attached to such a cluster and logged auth errors for 120 s; the bound
here (a subprocess timeout, not a timing assertion) would catch that.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.errors import ClusterError, InputError, ModelError
from edgekit.serve.preflight import check_cluster, check_models

FAIL_FAST_S = 90.0  # far below the 120 s of auth errors this replaced


@pytest.fixture(scope="module")
def foreign_ray():
    """A Ray head with token auth and no edgekit node (yet)."""
    from edgekit.errors import ClusterError
    from edgekit.serve.localcluster import LocalCluster

    try:
        cluster = LocalCluster(nodes=[]).start()
    except ClusterError:  # once in a full-suite run Ray's GCS missed its start-up deadline
        cluster = LocalCluster(nodes=[]).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def model(tmp_path: Path) -> Path:
    from edgekit.model import samples

    return Path(samples.path("ppocr-cls"))


def _serve(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    done = subprocess.run(
        [sys.executable, "-m", "edgekit.cli.main", "serve", *args],
        env={**base, "EDGEKIT_HOME": str(tmp_path / "home"), **env},
        capture_output=True, text=True, timeout=FAIL_FAST_S, stdin=subprocess.DEVNULL)
    done.stderr = " ".join(done.stderr.split())  # one line, however the terminal wraps
    return done


def _other_token(tmp_path: Path) -> dict[str, str]:
    tok = tmp_path / "other-token"
    tok.write_text(os.urandom(32).hex())
    tok.chmod(0o600)
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(tok)}


def test_model_paths_checked_before_ray(tmp_path: Path, model: Path) -> None:
    # an address nothing listens on: the model error must come first, naming the file
    done = _serve(tmp_path, {}, "--ray-address", "127.0.0.1:1", "--model",
                  f"m={tmp_path / 'missing.onnx'}", "--json")
    assert done.returncode == 3
    err = json.loads(done.stdout)["error"]
    assert err["where"].endswith("missing.onnx") and "no such model file" in err["message"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"no manifest\.json"):
        check_models([str(tmp_path / "empty")])
    with pytest.raises(InputError, match="given twice"):
        check_models([f"a={model}", f"a={model}"])
    check_models([str(model), f"b={model}"])  # the file's stem names it


def test_auto_on_a_foreign_ray_fails_fast_naming_the_token(tmp_path: Path, model: Path,
                                                           foreign_ray) -> None:
    done = _serve(tmp_path, {"RAY_ADDRESS": foreign_ray.address, **_other_token(tmp_path)},
                  str(model))
    assert done.returncode == 5, done.stderr
    assert "(found by --ray-address auto) refused this process's Ray token" in done.stderr
    assert "edgekit serve --local" in done.stderr  # the way out is named
    # no token configured at all: the same clear refusal
    done = _serve(tmp_path, {"RAY_ADDRESS": foreign_ray.address}, str(model))
    assert done.returncode == 5 and "refused this process's Ray token" in done.stderr


def test_ray_cluster_without_edgekit_nodes_is_refused(tmp_path: Path, model: Path,
                                                      foreign_ray) -> None:
    right = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(foreign_ray.token_path)}
    done = _serve(tmp_path, right, "--ray-address", foreign_ray.address, str(model), "--json")
    assert done.returncode == 5
    err = json.loads(done.stdout)["error"]
    assert err["kind"] == "ClusterError"
    assert f"the Ray cluster at {foreign_ray.address} is not an edgekit cluster" in err["message"]
    assert "edgekit-node-<name>" in err["message"] and "--local" in err["hint"]


def test_unreachable_address_fails_at_connect(tmp_path: Path, model: Path) -> None:
    from edgekit.serve.localcluster import _free_port

    addr = f"127.0.0.1:{_free_port()}"  # free: nothing listens there
    done = _serve(tmp_path, {}, "--ray-address", addr, str(model))
    assert done.returncode == 5 and f"cannot reach Ray at {addr}" in done.stderr


def test_edgekit_cluster_passes_and_missing_nodes_are_named(foreign_ray, monkeypatch) -> None:
    """Once a node with `edgekit-node-pi1` joins, the cluster passes; --nodes of one it
    lacks is refused naming it (check_cluster in this process: the probe is a child)."""
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(foreign_ray.token_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    foreign_ray.start_node("pi1")
    assert check_cluster(foreign_ray.address) == foreign_ray.address
    assert check_cluster(foreign_ray.address, ["pi1"]) == foreign_ray.address
    # pi9 may join while it serves; unless more are demanded than are live
    assert check_cluster(foreign_ray.address, ["pi1", "pi9"]) == foreign_ray.address
    with pytest.raises(ClusterError, match=r"nodes not in the Ray cluster at .*: pi9 \(at "):
        check_cluster(foreign_ray.address, ["pi1", "pi9"], min_nodes=2)
    with pytest.raises(ClusterError, match=r"pi8, pi9"):
        check_cluster(foreign_ray.address, ["pi8", "pi9"])
