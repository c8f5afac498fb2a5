"""Local port forwarding over a node's SSH connection (like `ssh -L`), with paramiko.

    with Tunnel(conn, 8000) as t:          # conn: an edgekit.remote.ssh.Connection
        urllib.request.urlopen(f"{t.url}/v2/health/ready")

A listener on 127.0.0.1:<free port> of this machine; every TCP connection accepted there is
carried over the node's SSH transport as one `direct-tcpip` channel to `remote_host:port` as
seen *from the node* (127.0.0.1 by default: a service bound to the node's loopback). The SSH
connection is the one edgekit uses for everything else (host keys verified, ProxyJump, keys from
the inventory / ~/.ssh/config). Only this machine's loopback listens; what goes through is
whatever the forwarded service asks (edgekit's API still wants its bearer token).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading

import paramiko

from edgekit.errors import NodeError
from edgekit.remote.ssh import Connection

CHUNK = 65536


class Tunnel:
    """Forward 127.0.0.1:<local_port> here to <remote_host>:<remote_port> on the node."""

    def __init__(self, conn: Connection, remote_port: int, remote_host: str = "127.0.0.1",
                 scheme: str = "http"):
        self.conn, self.remote = conn, (remote_host, int(remote_port))
        self.scheme = scheme
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._open: set[socket.socket | paramiko.Channel] = set()
        self._lock = threading.Lock()
        self.local_port = 0

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.local_port}"

    def start(self) -> Tunnel:
        self.conn.client()  # connect now: a bad host key or auth fails here, not per request
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", 0))
        lst.listen(64)
        lst.settimeout(0.25)
        self._listener, self.local_port = lst, lst.getsockname()[1]
        self._spawn(self._accept_loop, "tunnel-accept")
        return self

    def close(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            for end in list(self._open):
                with contextlib.suppress(Exception):
                    end.close()
        for t in self._threads:
            t.join(timeout=2)

    def __enter__(self) -> Tunnel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------
    def _spawn(self, fn, name: str, *args: object) -> None:  # type: ignore[no-untyped-def]
        t = threading.Thread(target=fn, args=args, name=name, daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                sock, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:  # listener closed
                return
            self._spawn(self._serve, "tunnel-pipe", sock, peer)

    def _channel(self, peer: tuple[str, int]) -> paramiko.Channel:
        transport = self.conn.client().get_transport()  # reconnects if the link dropped
        if transport is None:
            raise NodeError("no SSH transport", where=f"node {self.conn.node.name}")
        try:
            return transport.open_channel("direct-tcpip", self.remote, peer,
                                          timeout=self.conn.connect_timeout_s)
        except paramiko.ChannelException as exc:  # e.g. nothing listens there on the node
            raise NodeError(f"cannot forward to {self.remote[0]}:{self.remote[1]}: {exc}",
                            where=f"node {self.conn.node.name}") from exc

    def _serve(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        try:
            chan = self._channel(peer)
        except Exception:
            sock.close()  # the client sees a closed connection, as with `ssh -L`
            return
        with self._lock:
            self._open.update((sock, chan))
        try:
            _pipe(sock, chan, self._stop)
        finally:
            with self._lock:
                self._open.difference_update((sock, chan))
            chan.close()
            sock.close()


def _pipe(sock: socket.socket, chan: paramiko.Channel, stop: threading.Event) -> None:
    """Copy bytes both ways until either end closes."""
    while not stop.is_set():
        try:
            ready, _, _ = select.select([sock, chan], [], [], 0.5)
            if sock in ready:
                data = sock.recv(CHUNK)
                if not data:
                    return
                chan.sendall(data)
            if chan in ready:
                data = chan.recv(CHUNK)
                if not data:
                    return
                sock.sendall(data)
        except (OSError, EOFError, paramiko.SSHException):
            return
