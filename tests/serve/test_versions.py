"""Issue 13/14: one version id for a bundle everywhere, and the author's version addressable.

The API's version of a bundle is `edgekit.model.bundle.Bundle.version` (what deploy, status
and rollback show); the version its author gave (`bundle create --version`, "1" by default)
names it too, so `/v2/models/{m}/versions/1` works as Triton users expect."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from serve_helpers import chain_bundle

from edgekit.model.bundle import open_bundle, sha256_file
from edgekit.serve.models import load_model_spec


def _get(url: str, token: str) -> tuple[int, dict]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _infer(url: str, token: str, path: str) -> tuple[int, dict]:
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                   "data": [1.0, 2.0, 3.0, 4.0]}]}).encode()
    req = urllib.request.Request(f"{url}/v2/models/{path}/infer", body, method="POST",
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_bundle_served_under_its_one_id_and_its_label(server, model_files):
    url, token, _ = server
    vid = open_bundle(model_files["chain"]).version
    code, meta = _get(f"{url}/v2/models/chain", token)
    assert code == 200 and meta["versions"] == [vid]
    for v in (vid, "1"):
        assert _get(f"{url}/v2/models/chain/versions/{v}/ready", token)[0] == 200
        code, out = _infer(url, token, f"chain/versions/{v}")
        assert code == 200 and out["model_version"] == vid
        # two stages of 2x + 1, int8-compressed in between (--compress): 4x + 3, roughly
        assert np.allclose(out["outputs"][0]["data"], [7.0, 11.0, 15.0, 19.0], atol=0.2)
    code, err = _get(f"{url}/v2/models/chain/versions/7", token)
    assert code == 404 and vid in err["error"]
    status = _get(f"{url}/edgekit/status", token)[1]
    assert status["models"]["chain"]["version"] == vid
    assert status["models"]["chain"]["label"] == "1"


def test_a_bare_model_file_is_its_content_id_and_version_1(server, model_files):
    url, token, _ = server
    code, meta = _get(f"{url}/v2/models/affine", token)
    assert code == 200 and meta["versions"] == [sha256_file(model_files["affine"])[:16]]
    assert _get(f"{url}/v2/models/affine/versions/1/ready", token)[0] == 200


def test_an_authors_version_names_the_model(tmp_path):
    folder = chain_bundle(tmp_path / "chain")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["version"] = "2"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    spec = load_model_spec("chain", folder)
    assert spec.label == "2" and spec.version == open_bundle(folder).version
    assert spec.has_version("2") and spec.has_version(spec.version)
    assert not spec.has_version("1")


@pytest.mark.parametrize("edit", ["file", "manifest"])
def test_any_change_of_content_is_a_new_id(tmp_path, edit):
    folder = chain_bundle(tmp_path / "chain")
    before = open_bundle(folder).version
    manifest = json.loads((folder / "manifest.json").read_text())
    if edit == "manifest":
        manifest["preprocess"] = {"scale": 2}
    else:
        (folder / "extra.bin").write_bytes(b"x")
        manifest["files"].append({"path": "extra.bin", "bytes": 1, "sha256": sha256_file(
            folder / "extra.bin")})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert open_bundle(folder).version != before
