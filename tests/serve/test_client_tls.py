"""Issue 12 (7): the client speaks TLS to https:// URLs, verified against the trust store.

The real API server sits behind a TLS-terminating proxy (how an API off the head's loopback
is exposed); the proxy records the first byte of every connection, so a client that sent the
bearer token in cleartext (an HTTP request line instead of a TLS handshake, 0x16) is seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import socket
import ssl
import subprocess
import sys
import threading

import numpy as np
import pytest

from edgekit.client import Client, ServeError

TLS_HANDSHAKE = 0x16


def _cert_pair(folder):
    """A test CA and a server certificate for 127.0.0.1 signed by it (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def build(subject, issuer, pub, signer, ca: bool, extra=()):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
             .public_key(pub).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(hours=1))
             .not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False))
        for ext, critical in extra:
            b = b.add_extension(ext, critical=critical)
        return b.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgekit test CA")])
    ca = build(ca_name, ca_name, ca_key.public_key(), ca_key, True, [
        (x509.KeyUsage(False, False, False, False, False, True, True, False, False), True)])
    leaf = build(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), ca_name,
                 key.public_key(), ca_key, False, [
                     (x509.SubjectAlternativeName([x509.IPAddress(
                         ipaddress.ip_address("127.0.0.1"))]), False),
                     (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
                     (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                      False)])
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "server.pem").write_bytes(leaf.public_bytes(pem))
    (folder / "server.key").write_bytes(key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


class TLSProxy:
    """TLS on a local port, plain TCP to the API server behind it."""

    def __init__(self, backend: tuple[str, int], cert, key):
        self.backend = backend
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.first_bytes: list[int] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            raw.settimeout(30)
            first = raw.recv(1, socket.MSG_PEEK)
            if first:
                self.first_bytes.append(first[0])
            tls = self.ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        back = socket.create_connection(self.backend)
        threading.Thread(target=_pump, args=(back, tls), daemon=True).start()
        _pump(tls, back)

    def close(self) -> None:
        self.listener.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


@pytest.fixture(scope="module")
def tls(server, tmp_path_factory):
    url, token, cluster = server
    ca, cert, key = _cert_pair(tmp_path_factory.mktemp("tls"))
    host, port = url.removeprefix("http://").split(":")
    proxy = TLSProxy((host, int(port)), cert, key)
    yield f"https://127.0.0.1:{proxy.port}", token, ca, proxy, cluster
    proxy.close()


X = np.arange(8, dtype=np.float32).reshape(2, 4)


def test_https_is_tls_and_verified(tls, monkeypatch):
    url, token, ca, proxy, _ = tls
    seen = len(proxy.first_bytes)
    with pytest.raises(ServeError) as exc:  # the test CA is not in the system store
        Client(url, token=token, retry_for_s=5).infer("affine", X)
    assert exc.value.status == 0 and "CERTIFICATE_VERIFY_FAILED" in str(exc.value)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # the store now trusts the test CA
    c = Client(url, token=token)
    np.testing.assert_array_equal(c.infer("affine", X)["y"], 2 * X + 1)
    assert c.metadata("affine")["name"] == "affine"

    async def both():
        out = await c.ainfer("affine", {"x": X})
        await c.aclose()
        return out

    np.testing.assert_array_equal(asyncio.run(both())["y"], 2 * X + 1)
    # every connection opened with a TLS handshake: no token ever went out in cleartext
    assert proxy.first_bytes[seen:] and set(proxy.first_bytes[seen:]) == {TLS_HANDSHAKE}


def test_insecure_only_when_asked(tls):
    url, token, _, _, _ = tls
    c = Client(url, token=token, insecure=True)
    np.testing.assert_array_equal(c.infer("affine", X)["y"], 2 * X + 1)


def test_cli_infer_and_bench_over_https(tls, tmp_path):
    url, token, _, proxy, cluster = tls
    tok = tmp_path / "t"
    tok.write_text(token)
    tok.chmod(0o600)
    x = tmp_path / "x.npy"
    np.save(x, X)
    cli = [sys.executable, "-m", "edgekit.cli.main"]
    base = ["--url", url, "--model", "affine", "--token-file", str(tok), "--json"]
    r = subprocess.run([*cli, "infer", *base, "--input", str(x)], capture_output=True,
                       text=True, env=cluster.env(), timeout=120)
    assert r.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in r.stderr + r.stdout
    r = subprocess.run([*cli, "infer", *base, "--input", str(x), "--insecure"],
                       capture_output=True, text=True, env=cluster.env(), timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["outputs"]["y"]["data"] == (2 * X + 1).tolist()
    r = subprocess.run([*cli, "bench", *base, "--duration", "1", "--concurrency", "2",
                        "--insecure"], capture_output=True, text=True, env=cluster.env(),
                       timeout=120)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["ok"] > 0 and rep["errors"] == 0
    assert set(proxy.first_bytes) == {TLS_HANDSHAKE}
