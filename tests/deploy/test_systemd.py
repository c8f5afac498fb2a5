"""The systemd path of `edgekit deploy` (nodes with systemd): the rendered user units and the
exact command sequence, against a recording fake of the SSH connection. The path runs for real
on the virtual cluster's systemd user managers in test_deploy_systemd.py."""

from __future__ import annotations

from dataclasses import dataclass, field

from fakesftp import FakeSftp

from edgekit.deploy import assets, services
from edgekit.deploy.layout import NodeLayout

ROOT = "/home/pi/.edgekit"
HOME = "/home/pi"


@dataclass
class _Result:
    stdout: str = ""
    ok: bool = True


@dataclass
class _Conn:
    commands: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    left: bool = False  # a killed deploy's services-pending marker is on the node

    def run(self, command: str, **_: object) -> _Result:
        self.commands.append(command)
        if command.startswith("test -e") and "services-pending" in command:
            return _Result("left\n" if self.left else "")
        return _Result(HOME if "$HOME" in command else "")

    def start(self) -> str:
        """The last command that starts the units."""
        return next(c for c in reversed(self.commands) if "systemctl --user enable" in c)

    def sftp(self) -> FakeSftp:
        return FakeSftp(self.files)


def test_rendered_units():
    text = assets.render_unit("ray-worker", python=f"{ROOT}/runtime/bin/python", root=ROOT,
                              node="pi1", token_path=f"{ROOT}/secrets/ray-token")
    py = f"{ROOT}/runtime/bin/python"
    # output through the size-capped logpipe, never appended to without end
    assert (f"ExecStart={py} -m edgekit.node.logpipe {ROOT}/logs/ray-worker.log -- "
            f"{py} -m edgekit.node.raynode {ROOT}/run/ray.json") in text
    assert "Restart=always" in text and "KillMode=control-group" in text
    # a Ray that cannot start (or join the head) keeps trying: no start limit (issue #16)
    assert "\nStartLimitIntervalSec=0\n" in text.split("[Service]")[0]
    assert "\nStandardOutput=" not in text
    assert "WantedBy=default.target" in text and "${" not in text
    # the environment the supervisor path gets from raynode: token auth by path, the root
    assert f'"RAY_AUTH_TOKEN_PATH={ROOT}/secrets/ray-token"' in text
    assert '"RAY_AUTH_MODE=token"' in text and f'"EDGEKIT_NODE_ROOT={ROOT}"' in text
    assert "After=network-online" not in text  # a system unit: a user manager has none
    odd = assets.render_unit("agent", python="/p/python", root="/r/50%", node="pi1",
                             token_path="/t")
    assert "/r/50%%/logs/agent.log" in odd  # '%' would be a systemd specifier
    agent = assets.render_unit("agent", python="/p/python", root=ROOT, node="pi1",
                               token_path="/t")
    assert f"-- /p/python -m edgekit.node.agent {ROOT} pi1" in agent
    assert "\nStandardOutput=" not in agent


def test_install_and_stop_command_sequence():
    lay = NodeLayout(ROOT)
    conn = _Conn()
    cfg = {"address": "10.0.0.1:6379", "generation": "a"}
    how = services.install(conn, lay, "pi1", cfg, systemd=True, token=b"s3cret")  # type: ignore[arg-type]
    assert how == "systemd"
    units = f"{HOME}/.config/systemd/user"
    assert set(conn.files) >= {f"{units}/edgekit-ray-worker.service",
                               f"{units}/edgekit-agent.service", f"{ROOT}/run/ray.json",
                               lay.ray_token}
    assert conn.files[f"mode:{lay.ray_token}"] == b"600"
    assert all("s3cret" not in c for c in conn.commands)  # the token is never a command
    start = conn.start()
    assert conn.commands[-1] == f"rm -f {ROOT}/run/services-pending"  # after the start
    # a supervisor left from a deploy without systemd is stopped first
    assert "edgekit.node.supervisor stop" in start.split("; (loginctl")[0]
    assert start.endswith('(loginctl enable-linger "$(id -un)" 2>/dev/null || true) && '
                          "systemctl --user daemon-reload && "
                          "systemctl --user enable edgekit-ray-worker.service "
                          "edgekit-agent.service && systemctl --user restart "
                          "edgekit-ray-worker.service edgekit-agent.service")
    # same files again: started (a no-op when running), not restarted
    services.install(conn, lay, "pi1", cfg, systemd=True, token=b"s3cret")  # type: ignore[arg-type]
    assert conn.start().endswith("systemctl --user start edgekit-ray-worker.service "
                                 "edgekit-agent.service")
    # a new generation (new runtime or head) restarts
    services.install(conn, lay, "pi1", {**cfg, "generation": "b"}, systemd=True)  # type: ignore[arg-type]
    assert "systemctl --user restart" in conn.start()
    # a deploy killed between writing the files and restarting left its marker: the next one
    # restarts the services although the files are already the new ones (issue 16)
    conn.left = True
    services.install(conn, lay, "pi1", {**cfg, "generation": "b"}, systemd=True)  # type: ignore[arg-type]
    assert "systemctl --user restart" in conn.start()
    conn.commands.clear()
    services.install(conn, lay, "pi1", {**cfg, "generation": "b"}, systemd=False)  # type: ignore[arg-type]
    stop = next(i for i, c in enumerate(conn.commands) if "supervisor stop" in c)
    ensure = next(i for i, c in enumerate(conn.commands) if "supervisor ensure" in c)
    assert stop < ensure  # a fresh supervisor starts every service from the files
    conn.commands.clear()
    services.stop(conn, lay, systemd=True)  # type: ignore[arg-type]
    assert ("systemctl --user disable --now edgekit-ray-worker.service edgekit-agent.service"
            in conn.commands[0])
    assert "rm -f $HOME/.config/systemd/user/edgekit-*.service" in conn.commands[0]
    assert "edgekit.node.supervisor stop" in conn.commands[0]


def test_identical_redeploy_to_running_units_needs_no_command():
    import hashlib

    from edgekit.deploy.survey import Survey

    lay, cfg = NodeLayout(ROOT), {"address": "10.0.0.1:6379", "generation": "a"}
    files = {**services.unit_files(lay, "pi1", HOME), "secrets/ray-token": b"t",
             "run/ray.json": services.supervisor_files(lay, "pi1", cfg)["run/ray.json"]}
    hashes = {p: hashlib.sha256(d).hexdigest() for p, d in files.items()}
    running = ["active", "active", "enabled", "enabled"]
    sv = Survey(home=HOME, units=running, hashes=hashes)
    assert services.unchanged(lay, "pi1", cfg, b"t", sv, systemd=True)
    assert not services.unchanged(lay, "pi1", cfg, b"t", sv, systemd=False)  # no supervisor
    assert not services.unchanged(lay, "pi1", cfg, b"other", sv, systemd=True)
    assert not services.unchanged(lay, "pi1", {**cfg, "generation": "b"}, b"t", sv, True)
    for units in (["failed", "active", "enabled", "enabled"], running[:2] + ["disabled"] * 2):
        assert not services.unchanged(lay, "pi1", cfg, b"t", Survey(home=HOME, units=units,
                                                                    hashes=hashes), True)
    # the marker a killed deploy left: the files are in place but may not be what runs
    left = Survey(home=HOME, units=running,
                  hashes={**hashes, "run/services-pending": hashlib.sha256(b"").hexdigest()})
    assert not services.unchanged(lay, "pi1", cfg, b"t", left, systemd=True)
