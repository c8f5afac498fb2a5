"""A model or version named `../../x` (manifest, `deploy --name`, `rollback --to`) never
becomes a path outside the deploy root: refused where it enters, and by the node layout
itself, so version pruning over real SSH cannot delete a file outside the root."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from remote_sshd import Sshd, trust

from edgekit import inventory
from edgekit.cli.main import main
from edgekit.deploy import bundle as deploy_bundle
from edgekit.deploy import versions
from edgekit.deploy.layout import NodeLayout
from edgekit.errors import InputError, ModelError
from edgekit.remote.ssh import Connection

BAD = ["../../x", "..", ".", "a/b", "-rf", "x;touch${IFS}y", "", "a b", "x\n"]


@pytest.mark.parametrize("model", BAD)
def test_layout_refuses_model_names_that_are_not_one_plain_component(model: str) -> None:
    lay = NodeLayout("/home/pi/.edgekit")
    for path in (lay.app, lay.versions, lay.current):
        with pytest.raises(InputError, match="bad model name"):
            path(model)
    with pytest.raises(InputError, match="bad model name"):
        lay.version(model, "v1")


@pytest.mark.parametrize("version", BAD)
def test_layout_refuses_bad_versions(version: str) -> None:
    with pytest.raises(InputError, match="bad version"):
        NodeLayout("/r").version("m", version)


def test_layout_keeps_plain_names_under_the_root() -> None:
    lay = NodeLayout("/home/pi/.edgekit")
    assert lay.version("pp-ocr_cls.v2", "0123abcd") == \
        "/home/pi/.edgekit/apps/pp-ocr_cls.v2/versions/0123abcd"


def test_prune_with_a_traversal_name_deletes_nothing_outside(edgekit_home: Path, sshd: Sshd,
                                                            tmp_path: Path) -> None:
    """Before: apps/../../x/versions was <root>/../x/versions, and prune emptied it."""
    root = tmp_path / "deploy-root"
    (root / "blobs").mkdir(parents=True)
    victim = tmp_path / "x" / "versions" / "precious"
    victim.parent.mkdir(parents=True)
    victim.write_text("keep me")
    node = inventory.parse(f"root@127.0.0.1:{sshd.port} name=pi1 key={sshd.client_key}").nodes[0]
    trust(edgekit_home, sshd)
    with Connection(node) as conn:
        with pytest.raises(InputError, match="bad model name"):
            versions.prune(conn, NodeLayout(str(root)), "../../x", [])
        with pytest.raises(InputError, match="bad version"):
            versions.prune(conn, NodeLayout(str(root)), "m", ["../../../x/versions"])
        with pytest.raises(InputError, match="bad version"):
            versions.switch(conn, NodeLayout(str(root)), "m", "../../x")
    assert victim.read_text() == "keep me"


def test_deploy_name_is_refused_before_anything_is_built(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not used")
    inv = tmp_path / "pis.txt"
    inv.write_text("pi1\n")
    cache = tmp_path / "cache" / "bundles"
    with pytest.raises(ModelError, match="bad model name"):
        deploy_bundle.resolve(model, cache, "../../x", None)
    assert not (tmp_path / "x-").exists() and not cache.exists()
    monkeypatch.setattr(sys, "argv", ["edgekit", "deploy", "--nodes", str(inv), "--name",
                                      "../../x", str(model)])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    assert "Invalid value for '--name'" in " ".join(capsys.readouterr().err.split())
