"""edgekit.node.bootcheck: a node whose `current` version is damaged on disk comes back up
on the newest intact kept version (or says plainly that none is), before Ray starts. Run as
the node runs it (`python -m edgekit.node.bootcheck ROOT`) against a deploy root laid out
as push leaves it: version folders of real bundle files, `.complete`, `current` a symlink."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from helpers import make_bundle

from edgekit.node import bootcheck

MODEL = "tiny"


def _root(tmp: Path, versions: int = 2) -> tuple[Path, list[str]]:
    """A deploy root with `versions` versions of a real bundle, the last one current."""
    root, names = tmp / "root", []
    app = root / "apps" / MODEL
    for i in range(versions):
        src = make_bundle(tmp / f"b{i}" / MODEL, seed=i)
        name = f"v{i}" + "0" * 10
        dest = app / "versions" / name
        shutil.copytree(src, dest)
        (dest / bootcheck.COMPLETE).touch()
        t = time.time() - 100 + i  # folder times order the versions, as deploy leaves them
        os.utime(dest, (t, t))
        names.append(name)
    (app / "current").symlink_to(f"versions/{names[-1]}")
    return root, names


def _run(root: Path) -> tuple[int, list[dict], str]:
    p = subprocess.run([sys.executable, "-m", "edgekit.node.bootcheck", str(root), "--json"],
                       capture_output=True, text=True, timeout=60)
    return p.returncode, json.loads(p.stdout), p.stderr


def _spoil(root: Path, version: str) -> None:
    with (root / "apps" / MODEL / "versions" / version / "model.onnx").open("r+b") as fh:
        fh.seek(100)
        fh.write(b"XXXX")


def _current(root: Path) -> str:
    return Path(os.readlink(root / "apps" / MODEL / "current")).name


def test_intact_current_is_kept_and_remembered(tmp_path: Path) -> None:
    root, (_, v1) = _root(tmp_path)
    code, found, err = _run(root)
    assert code == 0 and err == "" and found == [
        {"model": MODEL, "version": v1, "ok": True, "problem": "", "fell_back_to": "",
         "error": ""}]
    assert _current(root) == v1
    report = json.loads((root / "run" / bootcheck.REPORT_FILE).read_text())
    assert report["apps"][MODEL]["ok"] is True
    cache = json.loads((root / "run" / bootcheck.CACHE_FILE).read_text())
    assert any(k.endswith(f"{v1}/model.onnx") for k in cache)


def test_damaged_current_falls_back_to_the_newest_intact_version(tmp_path: Path) -> None:
    root, (v0, v1) = _root(tmp_path)
    assert _run(root)[0] == 0  # cached as intact first: a later write must still be seen
    _spoil(root, v1)
    code, found, err = _run(root)
    assert code == 0 and _current(root) == v0
    assert found[0]["ok"] is False and found[0]["fell_back_to"] == v0
    assert "sha256 mismatch" in found[0]["problem"] and "model.onnx" in found[0]["problem"]
    assert f"model {MODEL} version {v1} is damaged on disk" in err
    assert f"fell back to version {v0}" in err and "edgekit deploy" in err
    # the next start finds the fallback intact: no loop, nothing more to say
    code, found, err = _run(root)
    assert code == 0 and err == "" and found[0]["ok"] and found[0]["version"] == v0


def test_no_intact_version_says_so_and_changes_nothing(tmp_path: Path) -> None:
    root, (v0, v1) = _root(tmp_path)
    _spoil(root, v0)
    _spoil(root, v1)
    code, found, err = _run(root)
    assert code == 1 and _current(root) == v1
    assert found[0]["fell_back_to"] == "" and "no intact version" in found[0]["error"]
    assert "run `edgekit deploy` again" in err


def test_missing_file_and_manifest_are_named(tmp_path: Path) -> None:
    root, (v0, v1) = _root(tmp_path)
    (root / "apps" / MODEL / "versions" / v1 / "model.onnx").unlink()
    (root / "apps" / MODEL / "versions" / v0 / bootcheck.MANIFEST).unlink()
    code, found, _ = _run(root)
    assert code == 1
    assert "model.onnx: No such file or directory" in found[0]["problem"]


def test_a_root_without_apps_is_fine(tmp_path: Path) -> None:
    assert bootcheck.check_root(tmp_path) == []
    bootcheck.safe_check(str(tmp_path / "missing"))  # never raises: Ray must start anyway
