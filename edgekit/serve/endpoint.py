"""The worker's end of the direct tensor channel: a listener on the node, one reader thread
per authenticated connection, one compute thread.

Plain blocking sockets and threads rather than an event loop: a worker serves one head and at
most one upstream stage, so it has two or three connections; a blocking `recv_into` of a
frame's body straight into the buffer its tensors will be views of (no copy) and a
`sendmsg` of the output arrays' memory (no join) is as lean as Python gets, and both release
the GIL while ONNX Runtime computes on another thread.

Why a separate compute thread: the reader keeps answering the head's PINGs while a long
inference runs (an emulated Pi 4 takes seconds per request), so a slow board is never taken
for a dead one, and it reads the next request while this one computes. A model whose runs
are short (recent mean under `INLINE_S`) is run by the reader itself when nothing else is
computing: the hand-off to another thread costs more than such a run's PINGs ever wait
(measured: ~40 us of a ~150 us round trip on this machine).

Routing: a request from the head runs and is answered on that connection, unless this is a
pipeline stage with a next stage: then its outputs go straight to the next stage's node on
the link the head asked for (`link`), and the last stage answers the head. Any stage's error
goes to the head directly. A link that is down answers PATH_LOST: the head retries the
request on another replica, as for a dead worker.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edgekit.serve import chanauth, frames

log = logging.getLogger("edgekit.serve.endpoint")
#: runs one request: (tensors, compute ms so far) -> (tensors for the next hop, ms so far)
Handler = Callable[[dict[str, Any], float], tuple[dict[str, Any], float]]
_IOV_MAX = 512
INLINE_S = 0.02  # runs shorter than this (recent mean) may run on the reader thread


def send_parts(sock: socket.socket, parts: list[Any]) -> None:
    """`sendall` of a list of buffers with scatter/gather I/O: nothing is joined."""
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    while views:
        n = sock.sendmsg(views[:_IOV_MAX])
        while n and views:
            if n >= len(views[0]):
                n -= len(views.pop(0))
            else:
                views[0], n = views[0][n:], 0


class Link:
    """One authenticated connection: sends are whole frames under a lock."""

    def __init__(self, sock: socket.socket, role: bytes, peer: str):
        self.sock, self.role, self.peer = sock, role, peer
        self.lock = threading.Lock()
        self.closed = False

    def send(self, parts: list[Any]) -> bool:
        with self.lock:
            if self.closed:
                return False
            try:
                send_parts(self.sock, parts)
                return True
            except OSError:
                self.close()
                return False

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()


class Endpoint:
    def __init__(self, host: str, key: bytes, identity: str, handler: Handler,
                 max_body: int, forwards: bool):
        self.key, self.identity, self.handler = key, identity, handler
        self.max_body = max_body
        self.forwards = forwards  # a pipeline stage with a next stage
        self.head: Link | None = None
        self.next: Link | None = None
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._busy_since = 0.0
        self._computing = threading.Lock()  # one request computes at a time
        self._mean_s = 1.0  # recent mean run time (EWMA); starts slow: no inline run
        self._listener = socket.create_server((host, 0), backlog=16)
        self.address = (host, self._listener.getsockname()[1])
        for target in (self._accept_loop, self._compute_loop):
            threading.Thread(target=target, daemon=True, name=f"edgekit-{target.__name__}").start()

    # --- connections ---------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while True:
            try:
                sock, peer = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(sock, f"{peer[0]}:{peer[1]}"),
                             daemon=True, name="edgekit-channel").start()

    def _serve(self, sock: socket.socket, peer: str) -> None:
        try:
            role = chanauth.accept(sock, self.key, self.identity)
        except (OSError, chanauth.AuthError) as exc:
            log.warning("channel from %s refused: %s", peer, exc)
            with contextlib.suppress(OSError):
                sock.close()
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = Link(sock, role, peer)
        if role == chanauth.ROLE_HEAD:
            self.head = link  # one server per worker: its newest connection is the head
        try:
            self._read(link)
        except (OSError, frames.FrameError) as exc:
            if not link.closed:
                log.info("channel from %s closed: %s", peer, exc)
        finally:
            link.close()

    def _read(self, link: Link) -> None:
        raw = bytearray(frames.HEADER.size)
        view = memoryview(raw)
        while True:
            chanauth.recv_into(link.sock, view)
            head = frames.Header(raw, self.max_body)
            body = np.empty(head.body_len, np.uint8)  # the tensors will be views of it
            chanauth.recv_into(link.sock, memoryview(body))
            if head.kind == frames.PING:
                link.send([frames.encode_bare(frames.PONG, head.rid)])
            elif head.kind == frames.REQUEST:
                if self._mean_s < INLINE_S and self._computing.acquire(blocking=False):
                    try:
                        self._execute(link, head, body)
                    finally:
                        self._computing.release()
                else:
                    self._jobs.put((link, head, body))

    def link(self, host: str, port: int, identity: str) -> None:
        """Connect to the next stage (the head calls this at placement and after recreating
        a stage); replaces an older link."""
        sock = chanauth.dial(host, port, self.key, identity, chanauth.ROLE_STAGE)
        old, self.next = self.next, Link(sock, chanauth.ROLE_STAGE, f"{host}:{port}")
        if old is not None:
            old.close()
        # the next stage never sends on this link; a reader notices it closing
        threading.Thread(target=self._watch, args=(self.next,), daemon=True).start()

    def _watch(self, link: Link) -> None:
        with contextlib.suppress(OSError):
            while link.sock.recv(4096):
                pass
        link.close()

    # --- requests ----------------------------------------------------------------------
    def _compute_loop(self) -> None:
        while True:
            job = self._jobs.get()
            with self._computing:
                self._execute(*job)

    def _execute(self, origin: Link, head: frames.Header, body: np.ndarray) -> None:
        self._busy_since = start = time.monotonic()
        try:
            self._run(origin, head, body)
        except Exception:  # a bug here must not stop the worker's channel
            log.exception("channel request %d failed", head.rid)
        finally:
            self._busy_since = 0.0
            self._mean_s += 0.2 * (time.monotonic() - start - self._mean_s)

    def _run(self, origin: Link, head: frames.Header, body: np.ndarray) -> None:
        answer_to = origin if origin.role == chanauth.ROLE_HEAD else self.head
        try:
            tensors = frames.decode(head, body)
            out, ms = self.handler(tensors, head.ms)
        except Exception as exc:  # the runtime's failure belongs to this request only
            if answer_to is not None:
                answer_to.send(frames.encode_error(head.rid, str(exc)))
            return
        if not self.forwards:
            if answer_to is not None:
                answer_to.send(frames.encode(frames.REPLY, head.rid, out, ms))
            return
        nxt = self.next
        sent = nxt is not None and nxt.send(frames.encode(frames.REQUEST, head.rid, out, ms))
        if not sent and answer_to is not None:
            answer_to.send(frames.encode_error(
                    head.rid, f"{self.identity}: no link to the next stage", frames.PATH_LOST))

    def busy_s(self) -> float:
        """Seconds the request being computed has taken so far (0: idle)."""
        since = self._busy_since
        return time.monotonic() - since if since else 0.0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.close()
        for link in (self.head, self.next):
            if link is not None:
                link.close()
