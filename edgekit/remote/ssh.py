"""SSH to many nodes with paramiko: reused connections, bounded parallelism, one result per node.

`Connection` opens lazily and is reused for every command and SFTP session to a node.
`run_each` runs a function on every node in a bounded thread pool and always returns an outcome
for every node; a failure on one never hides or stops the others (fabric's Group semantics).
Passwords are never used: keys come from the inventory/ssh-config identity files and ssh-agent.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import paramiko

from edgekit import settings
from edgekit.errors import EdgekitError, HostKeyError, NodeError
from edgekit.fleet import FleetResult, NodeOutcome
from edgekit.inventory import Node
from edgekit.remote import hostkeys
from edgekit.remote.sshconfig import Target, resolve

T = TypeVar("T")
#: after a command's exit status, how long to wait for the end of its output (see _drain)
EOF_GRACE_S = 2.0
# paramiko logs handshake failures with tracebacks; we report them per node instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class RemoteCommandError(NodeError):
    """A remote command exited non-zero or timed out."""


class Connection:
    """One node's SSH connection, opened on first use and reused."""

    def __init__(self, node: Node, *, accept_new_host_keys: bool = False,
                 connect_timeout_s: float = settings.ssh_connect_timeout_s):
        self.node = node
        self.target: Target = resolve(node)
        self.accept_new_host_keys = accept_new_host_keys
        self.connect_timeout_s = connect_timeout_s
        self._client: paramiko.SSHClient | None = None
        self._jump_clients: list[paramiko.SSHClient] = []
        self._lock = threading.Lock()

    # -- connection -----------------------------------------------------------------------
    def client(self) -> paramiko.SSHClient:
        with self._lock:
            transport = self._client.get_transport() if self._client else None
            if transport is None or not transport.is_active():
                self.close()
                self._client = self._open()
            return self._client

    def _open(self) -> paramiko.SSHClient:
        sock = None
        for hop in self.target.jumps:  # ProxyJump: tunnel through each hop in turn
            hop_client = self._connect(hop, sock)
            self._jump_clients.append(hop_client)
            sock = hop_client.get_transport().open_channel(  # type: ignore[union-attr]
                "direct-tcpip", (self.target.hostname, self.target.port), ("127.0.0.1", 0),
                timeout=self.connect_timeout_s,
            )
        return self._connect(self.target, sock)

    def _connect(self, target: Target, sock: Any) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        hostkeys.load_into(client)
        client.set_missing_host_key_policy(
            hostkeys.VerifyPolicy(self.node.name, self.accept_new_host_keys)
        )
        try:
            client.connect(
                target.hostname,
                port=target.port,
                username=target.username,
                key_filename=list(target.key_filenames) or None,
                allow_agent=True,
                look_for_keys=not target.key_filenames,
                timeout=self.connect_timeout_s,
                banner_timeout=self.connect_timeout_s * 0.8,  # fires before start_client gives up
                auth_timeout=self.connect_timeout_s,
                channel_timeout=self.connect_timeout_s,
                sock=sock,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise hostkeys.changed_key_error(self.node.name, exc) from None
        except paramiko.SSHException as exc:
            # paramiko reports a dead handshake as "No existing session"; the real cause
            # (e.g. no SSH banner before the timeout) is kept on the transport.
            transport = client.get_transport()
            cause = getattr(transport, "saved_exception", None) if transport else None
            client.close()
            if cause is not None and cause is not exc:
                raise cause from exc
            raise
        except BaseException:
            client.close()
            raise
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
        return client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        for hop in reversed(self._jump_clients):
            hop.close()
        self._jump_clients.clear()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands ---------------------------------------------------------------------------
    def run(self, command: str, *, stdin: str | bytes | None = None,
            timeout_s: float = settings.ssh_command_timeout_s, check: bool = False,
            env: dict[str, str] | None = None) -> CommandResult:
        """Run a command; scripts and secrets go on stdin, never on the command line."""
        transport = self.client().get_transport()
        assert transport is not None
        channel = transport.open_session(timeout=self.connect_timeout_s)
        try:
            if env:
                channel.update_environment(env)
            channel.exec_command(command)
            if stdin is not None:
                channel.sendall(stdin.encode() if isinstance(stdin, str) else stdin)
            channel.shutdown_write()
            out, err = self._drain(channel, time.monotonic() + timeout_s, command)
            code = channel.recv_exit_status()
        finally:
            channel.close()
        result = CommandResult(code, out.decode(errors="replace"), err.decode(errors="replace"))
        if check and not result.ok:
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise RemoteCommandError(
                f"command failed with exit code {code}: {command.split()[0]} ...\n    "
                + "\n    ".join(tail),
                where=f"node {self.node.name}",
            )
        return result

    def _drain(self, channel: paramiko.Channel, deadline: float, command: str):
        """stdout and stderr until the command has exited *and* its output has ended (EOF):
        OpenSSH may send the exit status before the last output of a busy session (seen as
        an empty stdout on a node under its CPU cap). A background process holding the output
        open gets EOF_GRACE_S, then what arrived is returned."""
        out, err = bytearray(), bytearray()
        channel.settimeout(0.2)
        exited_at = 0.0
        while True:
            progressed = False
            while channel.recv_ready():
                out += channel.recv(65536)
                progressed = True
            while channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
                progressed = True
            if channel.exit_status_ready() and not channel.recv_ready() \
                    and not channel.recv_stderr_ready():
                exited_at = exited_at or time.monotonic()
                if channel.eof_received or channel.closed \
                        or time.monotonic() - exited_at > EOF_GRACE_S:
                    return bytes(out), bytes(err)
            if time.monotonic() > deadline:
                raise RemoteCommandError(
                    f"command timed out: {command.split()[0]} ...", where=f"node {self.node.name}"
                )
            if not progressed:
                time.sleep(0.01)

    def sftp(self) -> paramiko.SFTPClient:
        return self.client().open_sftp()


# -- many nodes ---------------------------------------------------------------------------
@dataclass
class Outcome(NodeOutcome, Generic[T]):
    """One node's outcome of a function run on many (edgekit.fleet.NodeOutcome) and the
    function's value; a failure has its classified kind and message."""

    value: T | None = None

    @property
    def error(self) -> str | None:
        return None if self.ok else self.detail


def classify(exc: BaseException) -> tuple[str, str]:
    """Map an exception from connecting/running to (kind, human message)."""
    if isinstance(exc, HostKeyError):
        kind = "hostkey-changed" if "CHANGED" in exc.message else "hostkey-unknown"
        return kind, exc.render()
    if isinstance(exc, EdgekitError):
        return "error", exc.render()
    if isinstance(exc, paramiko.AuthenticationException):
        return "auth", f"authentication failed ({exc}); check key= or ssh-agent"
    if isinstance(exc, socket.gaierror):
        return "dns", f"cannot resolve host name ({exc.strerror})"
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        codes = {getattr(e, "errno", None) for e in exc.errors.values()}
        if codes <= {errno.ECONNREFUSED}:
            return "refused", "connection refused (is sshd running on that port?)"
        return "unreachable", str(exc)
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timeout", "timed out"
    if isinstance(exc, paramiko.SSHException):
        text = str(exc)
        if "banner" in text.lower() or "timeout" in text.lower():
            return "timeout", f"timed out waiting for SSH ({text})"
        return "ssh", text
    if isinstance(exc, ConnectionRefusedError):
        return "refused", "connection refused"
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable", exc.strerror or str(exc)
    if isinstance(exc, EOFError):
        return "ssh", "connection closed by the node during the handshake"
    return "error", f"{type(exc).__name__}: {exc}"


def run_each(nodes: Iterable[Node], fn: Callable[[Node], T], *,
             max_parallel: int = settings.ssh_max_parallel,
             on_done: Callable[[Outcome[T]], None] | None = None) -> FleetResult[Outcome[T]]:
    """Run fn(node) for every node in a bounded pool; every node gets an Outcome."""
    nodes = list(nodes)
    results: FleetResult[Outcome[T]] = FleetResult("run", make=Outcome)

    def one(node: Node) -> Outcome[T]:
        start = time.monotonic()
        try:
            outcome: Outcome[T] = Outcome(node.name, value=fn(node))
        except Exception as exc:  # every failure becomes that node's outcome
            kind, message = classify(exc)
            outcome = Outcome(node.name, ok=False, detail=message, kind=kind)
        outcome.seconds = time.monotonic() - start
        if on_done:
            on_done(outcome)
        return outcome

    if not nodes:
        return results
    with ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(nodes)))) as pool:
        for outcome in pool.map(one, nodes):
            results.nodes[outcome.node] = outcome
    return results


class Pool:
    """Reusable connections to a set of nodes (one per node), closed together."""

    def __init__(self, nodes: Iterable[Node], *, accept_new_host_keys: bool = False,
                 connect_timeout_s: float = settings.ssh_connect_timeout_s):
        self.connections = {
            n.name: Connection(n, accept_new_host_keys=accept_new_host_keys,
                               connect_timeout_s=connect_timeout_s)
            for n in nodes
        }

    def __getitem__(self, name: str) -> Connection:
        return self.connections[name]

    def each(self, fn: Callable[[Connection], T], *,
             on_done: Callable[[Outcome[T]], None] | None = None) -> FleetResult[Outcome[T]]:
        nodes = [c.node for c in self.connections.values()]
        return run_each(nodes, lambda n: fn(self.connections[n.name]), on_done=on_done)

    def close(self) -> None:
        for conn in self.connections.values():
            conn.close()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
