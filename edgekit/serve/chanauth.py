"""Mutual authentication of a direct-channel connection (HMAC-SHA256 challenge/response).

The key is 32 random bytes made by each `edgekit serve` run and handed to its workers in
their constructor, over Ray's RPC, which the cluster's token guards: so the trust root is the
cluster token, and the key changes with every server (a worker of an old server does not
accept the new one's connections). It never travels on the channel itself.

    listener -> "EKA1" nonce_s(32) len(2) identity      (identity: the worker's actor name)
    dialer   -> "EKA1" role(1) nonce_c(32) HMAC(k, "c" role nonce_s nonce_c identity)
    listener -> HMAC(k, "s" nonce_c nonce_s identity)

Both sides check with `hmac.compare_digest`. The dialer learns that it reached the worker it
meant (the identity is in both MACs); fresh nonces on both sides make a recorded exchange
useless. Before authentication a listener reads at most ~100 bytes and waits at most
`HANDSHAKE_S` seconds, then closes. No encryption (neither has Ray's token RPC): the
channel carries the same tensors the HTTP API does; see docs/SERVING.md.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import socket
import struct

MAGIC = b"EKA1"
HANDSHAKE_S = 2.0
ROLE_HEAD, ROLE_STAGE = b"h", b"s"
_NONCE = 32


class AuthError(ConnectionError):
    """The peer did not prove it holds the server's key (or is not who we asked for)."""


def new_key() -> bytes:
    return secrets.token_bytes(32)


def _mac(key: bytes, *parts: bytes) -> bytes:
    return hmac.new(key, b"".join(parts), hashlib.sha256).digest()


def recv_into(sock: socket.socket, view: memoryview) -> None:
    """Fill `view` from the socket (the frame readers use it too: no copy of a body)."""
    got = 0
    while got < len(view):
        k = sock.recv_into(view[got:])
        if k == 0:
            raise ConnectionError("peer closed the connection")
        got += k


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    recv_into(sock, memoryview(buf))
    return bytes(buf)


def accept(sock: socket.socket, key: bytes, identity: str) -> bytes:
    """Listener side, on a fresh connection: returns the dialer's role or raises AuthError."""
    ident = identity.encode()
    nonce_s = secrets.token_bytes(_NONCE)
    sock.settimeout(HANDSHAKE_S)
    sock.sendall(MAGIC + nonce_s + struct.pack("<H", len(ident)) + ident)
    got = recv_exact(sock, len(MAGIC) + 1 + _NONCE + 32)
    role, nonce_c, mac = got[4:5], got[5 : 5 + _NONCE], got[5 + _NONCE :]
    if got[:4] != MAGIC or role not in (ROLE_HEAD, ROLE_STAGE):
        raise AuthError("not an edgekit channel handshake")
    if not hmac.compare_digest(mac, _mac(key, b"c", role, nonce_s, nonce_c, ident)):
        raise AuthError("wrong key: the peer is not this worker's server")
    sock.sendall(_mac(key, b"s", nonce_c, nonce_s, ident))
    sock.settimeout(None)
    return role


def dial(host: str, port: int, key: bytes, identity: str, role: bytes,
         timeout_s: float = HANDSHAKE_S) -> socket.socket:
    """Dialer side: a connected, authenticated, blocking socket to the worker `identity`."""
    sock = socket.create_connection((host, port), timeout=timeout_s)
    try:
        head = recv_exact(sock, len(MAGIC) + _NONCE + 2)
        if head[:4] != MAGIC:
            raise AuthError(f"{host}:{port} is not an edgekit worker channel")
        nonce_s = head[4 : 4 + _NONCE]
        (n,) = struct.unpack("<H", head[4 + _NONCE :])
        ident = recv_exact(sock, n)
        if ident != identity.encode():
            raise AuthError(f"{host}:{port} is {ident[:80]!r}, not the worker {identity}")
        nonce_c = secrets.token_bytes(_NONCE)
        sock.sendall(MAGIC + role + nonce_c + _mac(key, b"c", role, nonce_s, nonce_c, ident))
        try:
            proof = recv_exact(sock, 32)
        except ConnectionError:
            raise AuthError(f"{identity} refused our key (a worker of another server?)") from None
        if not hmac.compare_digest(proof, _mac(key, b"s", nonce_c, nonce_s, ident)):
            raise AuthError(f"{identity} did not prove it holds the server's key")
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    except BaseException:
        sock.close()
        raise
