"""Start this node's Ray process (head or worker) in the foreground, from a JSON config.

    python -m edgekit.node.raynode CONFIG.json

Run by systemd or edgekit's supervisor; `ray start --block` keeps Ray's processes as its
children, so stopping this process stops them. Token authentication is always on: the token
file's *path* goes in RAY_AUTH_TOKEN_PATH, the token itself never appears in an argument or
the environment. Every port is picked free on this machine, so several Ray nodes can share
one host (the virtual cluster) without colliding. Ray's Unix sockets live under its temp dir,
which must stay short (108 bytes with the session folder): a long deploy root is reached
through a symlink /tmp/edgekit-<uid>/ray-<hash of the dir>, in a folder only this user can
enter (documented in docs/DEPLOY.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import socket
import stat
import sys
import time
from pathlib import Path

#: Ray refuses a node whose Python differs from the head's in the patch level (3.11.2 on
#: Debian/Pi OS bookworm vs 3.11.x on the host); pickles are compatible within 3.11.
PYTHON_MATCH_ENV = {"RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL": "minor"}
#: Ray 2.60's `ray start --block` answers SIGTERM by draining its node for up to 30 s, until
#: every worker lease is back. The API's driver holds its actors until it exits, so the drain
#: never finished: each stop sat out the supervisor's (or systemd's) grace, then SIGKILL
#: (measured: an undeploy's host head 20 s of 42). edgekit's router takes traffic off a node
#: itself (drain, failover), so Ray's own drain is off unless set: a stopped Ray ends at once.
STOP_ENV = {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
#: Ray's own metrics (exported by every raylet, worker and agent to the node's dashboard
#: agent) feed a Prometheus nobody scrapes here: edgekit's API exports its own. Off, with
#: the log monitor (it ships worker logs to drivers, and the API driver does not take them:
#: log_to_driver=False; the logs stay in Ray's session folder on the node), an idle
#: 3-node LocalCluster costs 48 ms of CPU per second instead of 78 (measured side by side).
QUIET_ENV = {"RAY_enable_metrics_collection": "0"}
QUIET_ARGS = ["--include-log-monitor=false"]
#: set for Ray (and so for every worker process it starts): the node's deploy root, under
#: which apps/<model>/current/ holds the pushed, verified bundle (docs/DEPLOY.md)
ROOT_ENV = "EDGEKIT_NODE_ROOT"
#: Ray system config set on the head (it reaches every node and driver through the GCS).
#: Ray sends task arguments and results up to max_direct_call_object_size inside the RPC and
#: puts larger ones in the object store, whose node-to-node pull costs ~10 ms even for 110 KB
#: here (measured: a 110 KB numpy argument round trip 14.6 ms at the 100 KB default, 2.1 ms
#: inline). Inference tensors are mostly 0.1-8 MB, so inline them up to 8 MiB; larger ones
#: (and pipeline carries above it) still go node to node through the object store.
RAY_SYSTEM_CONFIG = {"max_direct_call_object_size": 8 * 1024 * 1024}
#: longest temp dir that leaves room for "/session_<date>_<pid>/sockets/plasma_store"
MAX_TEMP_DIR_CHARS = 40
#: where the short links' private folder is made (a test points it elsewhere)
LINK_BASE = "/tmp"
#: The raylet waits a fixed ~15 s (no setting for it in Ray 2.60) for the dashboard agent, a
#: Python process, to write the ports it listens on into the session folder, and aborts the
#: node past that ("Timed out waiting for file .../dashboard_agent_listen_port_<node id>").
#: On a busy Pi 4 core, and on an emulated aarch64 node (19-45 s measured), the agent's
#: imports take longer. Every one of those ports is chosen here, so their values are known
#: before Ray starts: a short-lived child announces them with Ray's own `persist_port` as soon
#: as `ray start` has made the session folder (the agent writes the same values later).
AGENT_PORT_OPTIONS = {"dashboard_agent_listen_port": "--dashboard-agent-listen-port",
                      "metrics_agent_port": "--dashboard-agent-grpc-port",
                      "metrics_export_port": "--metrics-export-port",
                      "runtime_env_agent_port": "--runtime-env-agent-port"}
#: how `ray start` learns the node id it registers (so the announced files carry it)
NODE_ID_ENV = "RAY_OVERRIDE_NODE_ID_FOR_TESTING"
ANNOUNCE_DEADLINE_S = 600.0
#: A Ray that cannot start or join the head exits; systemd (Restart=always, no start limit) or
#: the supervisor starts this again, forever, so a board that was down or slow when it was
#: deployed joins once it can, without a redeploy (docs/DEPLOY.md). A run that ended within
#: QUICK_EXIT_S of its start counts as a failed start: from the second in a row on, the next
#: start waits 2, 4, 8 ... BACKOFF_MAX_S seconds (a Pi 4 spends seconds of CPU importing Ray for
#: each try); a run that lasted longer resets the count. Kept in run/raynode-starts.json,
#: which a deploy that (re)starts the service removes: its start is a fresh try.
QUICK_EXIT_S = 60.0
BACKOFF_MAX_S = 30.0
STARTS_FILE = "raynode-starts.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def link_dir(uid: int | str) -> str:
    """This user's folder for the short links. A link straight in /tmp had a name anyone
    could compute: another user could create it first (deploy then failed, since /tmp's
    sticky bit keeps us from replacing it) or point Ray's sockets into a folder they own.
    Inside a 0700 folder this user owns, nobody else can create, swap or follow a link."""
    return f"{LINK_BASE}/edgekit-{uid}"


def temp_link(temp_dir: str, uid: int | str) -> str:
    """The short name of a long temp dir: one per temp dir, not per user (the host's heads of
    two deployments, or any other Ray of the same user, must not take each other's link)."""
    return f"{link_dir(uid)}/ray-{hashlib.sha256(temp_dir.encode()).hexdigest()[:8]}"


def private_dir(path: str) -> None:
    """Create `path` 0700, or accept it only if it is a real folder this user owns (made
    private again if it was not); anything else is refused, naming the fix."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise RuntimeError(f"{path} is not a folder owned by uid {os.getuid()} (someone else "
                           "made it, or it is a link): Ray's socket links cannot go there; "
                           f"have root remove it")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def short_temp_dir(temp_dir: str) -> str:
    Path(temp_dir).mkdir(parents=True, exist_ok=True)
    if len(temp_dir) <= MAX_TEMP_DIR_CHARS:
        return temp_dir
    private_dir(link_dir(os.getuid()))
    link = Path(temp_link(temp_dir, os.getuid()))
    if link.is_symlink() and os.readlink(link) == temp_dir:
        return str(link)
    tmp = link.with_name(link.name + f".{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(temp_dir)
    os.replace(tmp, link)
    return str(link)


def system_config_arg() -> str:
    return "--system-config=" + json.dumps(RAY_SYSTEM_CONFIG, separators=(",", ":"))


def command(cfg: dict) -> list[str]:
    ray_bin = str(Path(sys.executable).parent / "ray")
    args = [ray_bin, "start", "--block", "--disable-usage-stats", *QUIET_ARGS,
            f"--temp-dir={short_temp_dir(cfg['temp_dir'])}",
            f"--num-cpus={int(cfg['num_cpus'])}",
            f"--object-store-memory={int(cfg['object_store_bytes'])}",
            f"--node-ip-address={cfg['node_ip']}",
            f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]
    if cfg.get("head"):
        args += ["--head", f"--port={int(cfg['port'])}", "--include-dashboard=false",
                 system_config_arg()]
        # Ray Client's server only where ray[client] (grpcio) is installed, as on the host; a
        # node runtime has plain `ray`, which refuses the option (and then starts no server)
        if importlib.util.find_spec("grpc") is not None:
            args.append(f"--ray-client-server-port={free_port()}")
    else:
        args += [f"--address={cfg['address']}"]
    if cfg.get("resources"):
        args.append("--resources=" + json.dumps(cfg["resources"], separators=(",", ":")))
    return args


def agent_ports(args: list[str]) -> dict[str, int]:
    """The agent ports a `command()` chose, by Ray's port-file name."""
    given = dict(a.split("=", 1) for a in args if a.startswith("--") and "=" in a)
    return {name: int(given[opt]) for name, opt in AGENT_PORT_OPTIONS.items()}


def announce_ports(temp_dir: str, node_id: str, ports: dict[str, int], since: float,
                   deadline_s: float = ANNOUNCE_DEADLINE_S) -> bool:
    """Write the port files into the session folder `ray start` makes (its `session_latest`
    link, made after `since`); False if none appeared in time."""
    from ray._raylet import persist_port

    latest = Path(temp_dir) / "session_latest"
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            fresh = latest.lstat().st_mtime >= since
        except FileNotFoundError:
            fresh = False
        if fresh and latest.is_dir():
            for name, port in ports.items():
                persist_port(str(latest.resolve()), node_id, name, port)
            return True
        time.sleep(0.2)
    return False


def spawn_announcer(temp_dir: str, node_id: str, ports: dict[str, int]) -> None:
    """Fork the child that announces the ports; this process then becomes `ray start`."""
    since = time.time() - 1.0
    if os.fork() == 0:  # child: never returns into main()
        code = 1
        try:
            code = 0 if announce_ports(temp_dir, node_id, ports, since) else 1
        finally:
            os._exit(code)


def start_delay(record: Path, now: float) -> tuple[int, float]:
    """(failed starts in a row before this one, seconds to wait before it) from `record`,
    the time of the last start; see QUICK_EXIT_S."""
    try:
        last = json.loads(record.read_text())
        quick = int(last["quick"]) + 1 if now - float(last["started"]) < QUICK_EXIT_S else 0
    except (OSError, ValueError, KeyError, TypeError):
        quick = 0
    return quick, 0.0 if quick < 2 else min(2.0 ** (quick - 1), BACKOFF_MAX_S)


def back_off(record: Path) -> None:
    """Wait as start_delay says, then record this start (after the wait: it is Ray's)."""
    quick, delay = start_delay(record, time.time())
    if delay:
        print(f"edgekit raynode: Ray exited within {QUICK_EXIT_S:.0f} s of its start {quick} "
              f"times in a row; starting it again in {delay:.0f} s", file=sys.stderr, flush=True)
        time.sleep(delay)
    with contextlib.suppress(OSError):  # a read-only run/ costs the backoff, not the start
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"started": time.time(), "quick": quick}))
        tmp.replace(record)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m edgekit.node.raynode CONFIG.json", file=sys.stderr)
        return 2
    cfg = json.loads(Path(argv[0]).read_text())
    from edgekit.errors import InputError
    from edgekit.tokenfile import check_private

    try:  # a token others can read is a token anyone on this machine can join Ray with
        check_private(cfg["token_path"], "Ray token file")
    except InputError as exc:
        print(f"edgekit raynode: {exc.render()}", file=sys.stderr)
        return exc.exit_code
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=cfg["token_path"])
    env.update(PYTHON_MATCH_ENV)
    for key, value in {**STOP_ENV, **QUIET_ENV}.items():
        env.setdefault(key, value)
    # Ray rotates its own session logs at 512 MB x 5 per process by default: too much for an
    # SD card; the same cap as edgekit's logs (edgekit.node.logpipe), unless set already
    from edgekit import settings

    env.setdefault("RAY_ROTATION_MAX_BYTES", str(settings.log_max_bytes))
    env.setdefault("RAY_ROTATION_BACKUP_COUNT", str(settings.log_backups))
    if cfg.get("root"):  # Ray's workers inherit it: where this node's deployed bundles are
        env[ROOT_ENV] = cfg["root"]
        from edgekit.node.bootcheck import safe_check

        # a damaged `current` falls back to an intact kept version before any worker loads it
        safe_check(cfg["root"])
    back_off(Path(argv[0]).with_name(STARTS_FILE))
    args = command(cfg)
    env[NODE_ID_ENV] = os.urandom(28).hex()  # a Ray NodeID is 28 random bytes
    spawn_announcer(cfg["temp_dir"], env[NODE_ID_ENV], agent_ports(args))
    os.execve(args[0], args, env)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
