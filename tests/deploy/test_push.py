"""Content-addressed push over real sshd/SFTP on the virtual cluster."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from helpers import make_bundle

from edgekit import inventory
from edgekit.deploy import bundle as bundle_mod
from edgekit.deploy import transfer, versions
from edgekit.deploy.layout import NodeLayout
from edgekit.deploy.push import Retention, keep_list, push_node
from edgekit.remote.ssh import Connection

pytestmark = pytest.mark.cluster


@pytest.fixture
def conn(vcluster, tmp_path):
    node = inventory.load(vcluster.inventory_path).get("pi2")
    with Connection(node) as c:
        home = c.run("echo $HOME", check=True).stdout.strip()
        root = f"{home}/.edgekit-pushtest-{tmp_path.name}"
        yield c, NodeLayout(root)
        c.run(f"rm -rf {shlex.quote(root)}")


def test_second_push_sends_nothing_and_switches_atomically(conn, tmp_path: Path):
    c, layout = conn
    b1 = bundle_mod.load(make_bundle(tmp_path / "m1" / "tiny", seed=1, extra_bytes=300_000))
    r1 = push_node(c, layout, b1, Retention([], 2))
    assert r1.sent_bytes == b1.total_bytes + bundle_mod.manifest_entry(b1).bytes
    assert r1.previous is None
    assert versions.active(c, layout, "tiny") == b1.version
    again = push_node(c, layout, b1, Retention([b1.version], 2))
    assert again.sent_bytes == 0 and again.present_files == 3
    # a new version that shares data.bin sends only what changed
    b2 = bundle_mod.load(make_bundle(tmp_path / "m2" / "tiny", seed=2, extra_bytes=300_000))
    data = next(f for f in b2.files if f.path == "data.bin")
    assert data.sha256 != next(f for f in b1.files if f.path == "data.bin").sha256
    r2 = push_node(c, layout, b2, Retention([b1.version], 2))
    assert r2.previous == b1.version and versions.active(c, layout, "tiny") == b2.version
    listing = c.run(f"cat {layout.current('tiny')}/model.onnx | sha256sum").stdout.split()[0]
    assert listing == next(f for f in b2.files if f.path == "model.onnx").sha256
    # keep 1: the older version and its blobs go
    push_node(c, layout, b2, Retention([b1.version, b2.version], 1))
    assert versions.listed(c, layout, "tiny") == [b2.version]
    blobs = c.run(f"ls {layout.blobs}").stdout.split()
    assert sorted(blobs) == sorted({f.sha256 for f in [*b2.files,
                                                       bundle_mod.manifest_entry(b2)]})


def test_corrupted_blob_is_detected_and_replaced(conn, tmp_path: Path):
    c, layout = conn
    b = bundle_mod.load(make_bundle(tmp_path / "tiny", seed=3))
    push_node(c, layout, b, Retention([], 2))
    model = next(f for f in b.files if f.path == "model.onnx")
    # flip bytes in place (same size): only a hash notices
    c.run(f"printf 'XXXX' | dd of={layout.blob(model.sha256)} bs=1 seek=100 conv=notrunc",
          check=True)
    r = push_node(c, layout, b, Retention([b.version], 2))
    assert r.replaced_corrupt == 1 and r.sent_bytes == model.bytes
    got = transfer.hash_on_node(c, [f"{layout.current('tiny')}/model.onnx"])
    assert list(got.values()) == [model.sha256]


def test_partial_upload_resumes(conn, tmp_path: Path):
    c, layout = conn
    b = bundle_mod.load(make_bundle(tmp_path / "tiny", seed=4, extra_bytes=2_000_000))
    data = next(f for f in b.files if f.path == "data.bin")
    half = data.bytes // 2
    c.run(f"mkdir -p {layout.partial}", check=True)
    sftp = c.sftp()
    with sftp.open(f"{layout.partial}/{data.sha256}", "wb") as fh:
        fh.write((b.path / "data.bin").read_bytes()[:half])
    sftp.close()
    r = push_node(c, layout, b, Retention([], 2))
    assert r.resumed_files == 1
    assert r.sent_bytes == b.total_bytes - half + bundle_mod.manifest_entry(b).bytes


def test_keep_list():
    assert keep_list(["a", "b", "c"], "d", 3) == ["b", "c", "d"]
    assert keep_list(["a", "b"], "b", 2) == ["a", "b"]
    assert keep_list(["a"], "b", 1) == ["b"]
