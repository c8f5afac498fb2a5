"""A failed command with `--json` prints one JSON error document on stdout, with the same exit
code as without it (edgekit.cli.main.main is the one place that does it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.cli.main import wants_json


def edgekit(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGEKIT_HOME": str(tmp_path / "home")}
    env.pop("EDGEKIT_SERVE_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "edgekit.cli.main", *args],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)


def _doc(r: subprocess.CompletedProcess[str]) -> dict:
    doc = json.loads(r.stdout)
    assert set(doc) == {"error", "exit_code"}
    assert set(doc["error"]) == {"message", "hint", "where", "kind"}
    assert doc["exit_code"] == r.returncode
    return doc


def test_bad_inventory_line(tmp_path: Path) -> None:
    (tmp_path / "pis.txt").write_text("pi@10.0.0.1 nmae=pi1\n")
    plain = edgekit(tmp_path, "nodes", "check", "--nodes", "pis.txt")
    r = edgekit(tmp_path, "nodes", "check", "--nodes", "pis.txt", "--json")
    assert r.returncode == plain.returncode == 3
    assert plain.stdout == ""  # without --json nothing changes on stdout
    doc = _doc(r)
    assert doc["error"]["kind"] == "InventoryError" and doc["error"]["where"] == "pis.txt:1"
    assert "nmae" in doc["error"]["message"]
    assert "nmae" in r.stderr  # the human message is still on stderr


def test_usage_error(tmp_path: Path) -> None:
    r = edgekit(tmp_path, "deploy", "--json", "--no-such-option")
    doc = _doc(r)
    assert r.returncode == 2 and doc["error"]["kind"] == "NoSuchOption"
    assert "--no-such-option" in doc["error"]["message"] and "Usage:" in doc["error"]["hint"]


def test_unreachable_server_for_monitor_and_infer(tmp_path: Path) -> None:
    r = edgekit(tmp_path, "monitor", "--url", "http://127.0.0.1:9", "--once", "--json")
    doc = _doc(r)
    assert r.returncode == 5 and doc["error"]["kind"] == "ClusterError"
    assert doc["error"]["where"] == "http://127.0.0.1:9/edgekit/status" and doc["error"]["hint"]
    x = tmp_path / "x.npy"
    x.write_bytes(b"")
    r = edgekit(tmp_path, "infer", "--url", "http://127.0.0.1:9", "--model", "m", "--input",
                str(x), "--retry-for", "0", "--json")
    doc = _doc(r)
    assert r.returncode != 0 and "127.0.0.1:9" in doc["error"]["message"]


def test_status_of_an_inventory_never_deployed(tmp_path: Path) -> None:
    (tmp_path / "pis.txt").write_text("pi@127.0.0.1:9 name=pi1\n")
    r = edgekit(tmp_path, "status", "--nodes", "pis.txt", "--json")
    doc = _doc(r)
    assert r.returncode != 0 and doc["error"]["message"], r.stderr


@pytest.mark.parametrize(("args", "want"), [
    (["nodes", "check", "--json"], True),
    (["bench", "--model", "m"], False),
    (["infer", "--", "--json"], False),  # after `--` it is an argument, not the option
])
def test_wants_json(args: list[str], want: bool) -> None:
    assert wants_json(args) is want


def test_a_commands_ctx_exit_code_reaches_the_shell(monkeypatch) -> None:
    """click without standalone mode returns ctx.exit(n)'s code instead of raising it:
    main() must still exit with it (it exited 0)."""
    import click

    from edgekit.cli import main as cli_main

    @click.group()
    def group() -> None:
        pass

    @group.command("exit-three")
    @click.pass_context
    def exit_three(ctx: click.Context) -> None:
        ctx.exit(3)

    monkeypatch.setattr(cli_main, "cli", group)
    monkeypatch.setattr(sys, "argv", ["edgekit", "exit-three"])
    with pytest.raises(SystemExit) as exc:
        cli_main.main()
    assert exc.value.code == 3
