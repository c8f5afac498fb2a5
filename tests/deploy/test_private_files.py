"""Token files other users can read are refused with the fix named, wherever edgekit reads
one; Ray's short temp-dir link lives in a private folder nobody else can plant a link in."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekit.cli.main import main
from edgekit.deploy import head, state
from edgekit.errors import InputError
from edgekit.node import raynode
from edgekit.tokenfile import check_private, read_token


def token(path: Path, mode: int, text: str = "s3cret") -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602])
def test_a_token_others_can_read_or_write_is_refused_with_the_fix(tmp_path: Path,
                                                                  mode: int) -> None:
    path = token(tmp_path / "api-token", mode)
    with pytest.raises(InputError) as info:
        read_token(path)
    assert info.value.where == str(path) and f"{mode:04o}" in info.value.message
    assert info.value.hint == f"chmod 600 {path}"
    os.chmod(path, 0o600)
    assert read_token(path) == "s3cret"
    os.chmod(path, 0o400)
    check_private(path)


def test_empty_missing_and_non_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="empty"):
        read_token(token(tmp_path / "t", 0o600, ""))
    with pytest.raises(InputError, match="cannot read"):
        read_token(tmp_path / "nope")
    with pytest.raises(InputError, match="not a regular file"):
        read_token(tmp_path)


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["edgekit", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("verb", [
    ["infer", "--url", "http://127.0.0.1:9", "--model", "m", "--input", "x.npy"],
    ["bench", "--url", "http://127.0.0.1:9", "--model", "m", "--duration", "1"],
    ["monitor", "--url", "http://127.0.0.1:9", "--once"],
    ["serve", "--model", "m=/nonexistent", "--port", "9"],
])
def test_cli_token_file_readable_by_others_exits_3_naming_chmod(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        verb: list[str]) -> None:
    path = token(tmp_path / "tok", 0o644)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.npy").write_bytes(b"")
    code, err = run_cli([*verb, "--token-file", str(path)], monkeypatch, capsys)
    assert code == 3, err
    assert "accessible by other users" in err and f"chmod 600 {path}" in err


def test_deployment_secret_loosened_on_the_host_is_not_sent(tmp_path: Path) -> None:
    path = state.secret(tmp_path, "ray-token")
    assert (path.stat().st_mode & 0o777) == 0o600
    os.chmod(path, 0o644)
    with pytest.raises(InputError, match="chmod 600"):
        state.secret(tmp_path, "ray-token")


def test_ray_and_api_refuse_a_loose_token_on_the_node(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    """raynode and the API (head node or host) exit 3 with one line, before Ray starts."""
    ray_token = token(tmp_path / "ray-token", 0o644)
    cfg = tmp_path / "ray.json"
    cfg.write_text(json.dumps({"token_path": str(ray_token), "temp_dir": str(tmp_path / "r")}))
    assert raynode.main([str(cfg)]) == 3
    assert f"chmod 600 {ray_token}" in capsys.readouterr().err
    api_token = token(tmp_path / "api-token", 0o604)
    os.chmod(ray_token, 0o600)
    api = tmp_path / "api.json"
    api.write_text(json.dumps({"api_token_path": str(api_token),
                               "ray_token_path": str(ray_token)}))
    assert head.main(["api", str(api)]) == 3
    assert f"chmod 600 {api_token}" in capsys.readouterr().err


@pytest.fixture
def link_base(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="ekt", dir="/tmp"))  # short: the links must be
    monkeypatch.setattr(raynode, "LINK_BASE", str(base))
    yield base
    shutil.rmtree(base)


def test_temp_link_is_in_a_private_folder(tmp_path: Path, link_base: Path) -> None:
    long_dir = str(tmp_path / ("a" * 40) / "run" / "ray")
    link = raynode.short_temp_dir(long_dir)
    assert len(link) <= raynode.MAX_TEMP_DIR_CHARS and os.readlink(link) == long_dir
    folder = Path(link).parent
    assert folder == link_base / f"edgekit-{os.getuid()}"
    st = folder.lstat()
    assert st.st_uid == os.getuid() and (st.st_mode & 0o777) == 0o700
    assert raynode.short_temp_dir(long_dir) == link  # reused, same name


def test_our_loose_folder_is_made_private_again(tmp_path: Path, link_base: Path) -> None:
    folder = link_base / f"edgekit-{os.getuid()}"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o777)
    raynode.short_temp_dir(str(tmp_path / ("b" * 40)))
    assert (folder.stat().st_mode & 0o777) == 0o700


def test_a_planted_folder_or_link_is_refused(tmp_path: Path, link_base: Path) -> None:
    folder = link_base / f"edgekit-{os.getuid()}"
    elsewhere = tmp_path / "theirs"
    elsewhere.mkdir()
    folder.symlink_to(elsewhere)  # a link planted in its place
    with pytest.raises(RuntimeError, match="not a folder owned by uid"):
        raynode.short_temp_dir(str(tmp_path / ("c" * 40)))
    assert list(elsewhere.iterdir()) == []
    if os.geteuid() == 0:  # another user's folder (only root can make one here)
        folder.unlink()
        folder.mkdir(mode=0o777)
        os.chown(folder, 65534, 65534)
        with pytest.raises(RuntimeError, match="not a folder owned by uid"):
            raynode.short_temp_dir(str(tmp_path / ("c" * 40)))
