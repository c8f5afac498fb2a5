"""The pieces of a role=head deployment that need no cluster: where the head goes and on which
ports, the head's Ray and API configs, the RAM a head node keeps for itself, the API unit and
the commands that start it (against a recording fake of the SSH connection). The whole path
runs on the virtual cluster in test_deploy_headnode.py."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from fakesftp import FakeSftp

from edgekit import inventory
from edgekit.deploy import assets, flow, head, headnode, heads, state
from edgekit.deploy.layout import NodeLayout
from edgekit.deploy.plan import MB
from edgekit.remote.probe import NodeReport

ROOT = "/home/pi/.edgekit"
HOME = "/home/pi"


def _never(n: int) -> list[int]:
    raise AssertionError("no new port wanted")


def test_head_keeps_its_ports_while_it_stays_and_gets_new_ones_when_it_moves():
    prev = state.HeadState(where="pi1", ray_address="10.0.0.5:41000", api_port=42000)
    same = headnode.choose(prev, "pi1", "10.0.0.5", "127.0.0.1", None, _never)
    assert (same.ray_port, same.api_port, same.ray_address) == (41000, 42000, "10.0.0.5:41000")
    moved = headnode.choose(prev, "pi2", "10.0.0.6", "127.0.0.1", None, lambda n: [7, 8][:n])
    assert (moved.ray_address, moved.api_port) == ("10.0.0.6:7", 8)
    home = headnode.choose(prev, "host", "10.0.0.1", "127.0.0.1", 8000, lambda n: [5, 6][:n])
    assert (home.ray_port, home.api_port, home.where) == (5, 8000, "host")  # --port wins
    fresh = headnode.choose(state.HeadState(), "host", "10.0.0.1", "127.0.0.1", None,
                            lambda n: [1, 2][:n])
    assert (fresh.ray_port, fresh.api_port) == (1, 2)  # an old state file: where="host"


def test_api_url_and_when_a_tunnel_is_needed():
    h = headnode.Head("pi1", "10.0.0.5", 1, 8000)
    assert h.api_url == "http://127.0.0.1:8000"  # the node's loopback
    assert headnode.Head("pi1", "10.0.0.5", 1, 8000, "0.0.0.0").api_url == "http://10.0.0.5:8000"
    assert headnode.Head("host", "fd00::1", 1, 80, "::").api_url == "http://[fd00::1]:80"
    assert headnode.Head("pi1", "10.0.0.5", 1, 80, "10.9.9.9").api_url == "http://10.9.9.9:80"
    on_node = state.DeployState("inv", head=state.HeadState(where="pi1", api_host="127.0.0.1",
                                                           api_port=8000))
    assert heads.for_state(on_node, Path("/d")).tunnel(on_node) == \
        "SSH to pi1, then 127.0.0.1:8000 there"
    lan = state.DeployState("inv", head=state.HeadState(where="pi1", api_host="0.0.0.0"))
    assert heads.for_state(lan, Path("/d")).tunnel(lan) == ""
    host = state.DeployState("inv")  # an old state file, or a host head: where="host"
    assert isinstance(heads.for_state(host, Path("/d")), heads.HostHead)
    assert heads.for_state(host, Path("/d")).tunnel(host) == ""


def test_head_ray_config_keeps_the_node_a_serving_node():
    node = {"address": "10.0.0.1:6379", "node_ip": "10.0.0.5", "num_cpus": 4,
            "object_store_bytes": 400 * MB, "resources": {"edgekit-node-pi1": 1},
            "temp_dir": f"{ROOT}/run/ray", "token_path": f"{ROOT}/secrets/ray-token",
            "root": ROOT, "generation": "fp:10.0.0.5:41000"}
    cfg = headnode.ray_config(node, 41000)
    assert cfg["head"] is True and cfg["port"] == 41000 and "address" not in cfg
    assert cfg["resources"] == {"edgekit-node-pi1": 1} and cfg["num_cpus"] == 4
    assert headnode.digest(cfg) != headnode.digest(headnode.ray_config(node, 41001))
    from edgekit.node.raynode import command

    args = command({**cfg, "temp_dir": "/tmp/ek-test-raynode"})
    assert "--head" in args and "--port=41000" in args
    assert '--resources={"edgekit-node-pi1":1}' in args and "--num-cpus=4" in args
    assert not any(a.startswith("--address") for a in args)


def test_api_config_points_at_the_nodes_bundle():
    lay = NodeLayout(ROOT)
    cfg = headnode.api_config(
        "cls", lay.current("cls"),
        headnode.ApiSettings("10.0.0.5:41000", ["pi1", "pi2"], "127.0.0.1", 42000, True, 9.0),
        headnode.Tokens(headnode.api_token_path(lay), lay.ray_token), version="v2", home=ROOT)
    assert cfg["models"] == [f"cls={ROOT}/apps/cls/current"] and cfg["node_bundles"] is True
    assert cfg["controllers"] == ["thermal"] and cfg["power_cap_w"] == 9.0
    assert cfg["api_token_path"] == f"{ROOT}/secrets/api-token"
    assert (cfg["version"], cfg["home"]) == ("v2", ROOT)
    off = headnode.api_config("cls", "/b", headnode.ApiSettings("a:1", [], "0.0.0.0", 1, False),
                              headnode.Tokens("/t", "/r"))
    assert off["controllers"] == [] and "version" not in off and "home" not in off


def test_head_node_keeps_ram_for_gcs_and_the_api():
    rep = NodeReport("x", address="x", reachable=True, mem_total_mb=4096, cores=4)
    inv = inventory.parse("a@h1 name=pi1 role=head\nb@h2 name=pi2\nc@h3 name=pi3 ram=1G "
                          "role=worker\n")
    head, worker = flow.capacity(inv.get("pi1"), rep), flow.capacity(inv.get("pi2"), rep)
    assert worker.ram_bytes - head.ram_bytes == headnode.HEAD_RESERVE_BYTES
    explicit = inventory.parse("a@h1 name=pi1 role=head ram=1G\n").get("pi1")
    assert flow.capacity(explicit, rep).ram_bytes == 1024 * MB  # ram= is what models get


# -- the API service on the node, against a fake connection --------------------------------
@dataclass
class _Result:
    stdout: str = ""
    ok: bool = True


@dataclass
class _Node:
    name: str = "pi1"


@dataclass
class _Conn:
    commands: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    node: _Node = field(default_factory=_Node)

    def run(self, command: str, **_: object) -> _Result:
        self.commands.append(command)
        return _Result(HOME if "$HOME" in command and "printf" in command else "")

    def sftp(self) -> FakeSftp:
        return FakeSftp(self.files)


def _cfg(version: str = "v1") -> dict:
    lay = NodeLayout(ROOT)
    return headnode.api_config(
        "cls", lay.current("cls"), headnode.ApiSettings("10.0.0.5:41000", ["pi1"], "127.0.0.1",
                                                        42000),
        headnode.Tokens(headnode.api_token_path(lay), lay.ray_token), version=version, home=ROOT)


def test_api_token_goes_over_sftp_0600_never_in_a_command():
    conn, lay = _Conn(), NodeLayout(ROOT)
    headnode.write_api_token(conn, lay, b"t0ken")  # type: ignore[arg-type]
    assert conn.files[f"{ROOT}/secrets/api-token"] == b"t0ken"
    assert conn.files[f"mode:{ROOT}/secrets/api-token"] == b"600"
    assert "chmod 700" in conn.commands[0] and all("t0ken" not in c for c in conn.commands)


def test_api_under_the_supervisor_restarts_only_when_its_settings_change():
    conn, lay = _Conn(), NodeLayout(ROOT)
    assert headnode.start_api(conn, lay, "pi1", False, _cfg(), 30) == "restarted"  # type: ignore[arg-type]
    data = conn.files[f"{ROOT}/run/api.json"]
    spec = json.loads(conn.files[f"{ROOT}/services/api.json"])
    assert spec["argv"] == [f"{ROOT}/runtime/bin/python", "-m", "edgekit.deploy.head", "api",
                            f"{ROOT}/run/api.json"]
    # the spec follows what restarts the API: its config without the model
    assert spec["config"] == headnode.digest_of(head.restart_part(_cfg()))
    assert "edgekit.node.supervisor ensure" in conn.commands[-2]
    assert "api.serving" in conn.commands[-1]  # waits for the new process to serve
    assert hashlib.sha256(data).hexdigest() in conn.commands[-1]
    conn.commands.clear()
    assert headnode.start_api(conn, lay, "pi1", False, _cfg(), 30) == "running"  # type: ignore[arg-type]
    assert not any("api.serving" in c for c in conn.commands)
    # a new version: the file says it (for a later start), the running API loads it
    assert headnode.start_api(conn, lay, "pi1", False, _cfg("v2"), 30) == "reload"  # type: ignore[arg-type]
    assert json.loads(conn.files[f"{ROOT}/run/api.json"])["version"] == "v2"
    assert json.loads(conn.files[f"{ROOT}/services/api.json"]) == spec
    assert not any("api.serving" in c for c in conn.commands)
    other = {**_cfg("v2"), "port": 42001}  # its own settings: a restart
    assert headnode.start_api(conn, lay, "pi1", False, other, 30) == "restarted"  # type: ignore[arg-type]


def test_host_api_restarts_only_when_its_settings_change(tmp_path, monkeypatch):
    """The host's head under edgekit's supervisor (deploy/head.py): the service spec's
    generation holds the config without the model, so a new version is a "reload"."""
    started: list[Path] = []
    monkeypatch.setattr(head.supervisor, "ensure", lambda root: started.append(root))
    monkeypatch.setattr(head, "_wait_restarted", lambda *a, **k: None)
    cfg = {**_cfg(), "ray_token_path": "/t"}
    assert head.start_api(tmp_path, cfg) == "started"
    assert head.start_api(tmp_path, cfg) == "running"
    assert head.start_api(tmp_path, {**cfg, "version": "v2"}) == "reload"
    assert json.loads((tmp_path / "run/api.json").read_text())["version"] == "v2"
    assert head.start_api(tmp_path, {**cfg, "version": "v2", "nodes": ["pi1", "pi2"]}) == \
        "restarted"


def test_api_as_a_user_unit():
    conn, lay = _Conn(), NodeLayout(ROOT)
    headnode.start_api(conn, lay, "pi1", True, _cfg(), 30)  # type: ignore[arg-type]
    unit = conn.files[f"{HOME}/.config/systemd/user/edgekit-api.service"].decode()
    py = f"{ROOT}/runtime/bin/python"
    assert (f"ExecStart={py} -m edgekit.node.logpipe {ROOT}/logs/api.log -- "
            f"{py} -m edgekit.deploy.head api {ROOT}/run/api.json") in unit
    assert f'"RAY_AUTH_TOKEN_PATH={ROOT}/secrets/ray-token"' in unit
    assert "Restart=always" in unit and "WantedBy=default.target" in unit
    assert "\nStandardOutput=" not in unit and "${" not in unit
    assert conn.commands[-2].endswith("systemctl --user enable edgekit-api.service && "
                                      "systemctl --user restart edgekit-api.service")
    headnode.start_api(conn, lay, "pi1", True, _cfg(), 30)  # type: ignore[arg-type]
    assert conn.commands[-1].endswith("systemctl --user start edgekit-api.service")
    assert headnode.start_api(conn, lay, "pi1", True, _cfg("v2"), 30) == "reload"  # type: ignore[arg-type]
    assert conn.commands[-1].endswith("systemctl --user start edgekit-api.service")


def test_rendered_api_unit_has_no_secret():
    text = assets.render_unit("api", python="/p/python", root="/r", node="pi1",
                              token_path="/r/secrets/ray-token")
    assert "api-token" not in text and "StartLimitIntervalSec=0" in text


def test_the_old_head_node_loses_its_api():
    conn, lay = _Conn(), NodeLayout(ROOT)
    headnode.remove_api(conn, lay)  # type: ignore[arg-type]
    cmd = conn.commands[0]
    assert f"{ROOT}/services/api.json" in cmd and f"{ROOT}/secrets/api-token" in cmd
    assert "systemctl --user disable --now edgekit-api.service" in cmd


def test_each_long_ray_temp_dir_gets_its_own_short_link(tmp_path):
    from edgekit.node.raynode import MAX_TEMP_DIR_CHARS, short_temp_dir, temp_link

    a, b = tmp_path / ("a" * 40) / "run" / "ray", tmp_path / ("b" * 40) / "run" / "ray"
    la, lb = short_temp_dir(str(a)), short_temp_dir(str(b))
    try:
        assert la != lb and len(la) <= MAX_TEMP_DIR_CHARS  # two heads keep their own sockets
        assert os.readlink(la) == str(a) and os.readlink(lb) == str(b)
        assert short_temp_dir(str(a)) == la == temp_link(str(a), os.getuid())
    finally:
        for link in (la, lb):
            os.unlink(link)
