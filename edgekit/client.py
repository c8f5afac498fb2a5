"""`edgekit.Client`: numpy in, numpy out, over the Open Inference Protocol (binary tensors).

    from edgekit import Client
    c = Client("http://127.0.0.1:8000")
    out = c.infer("cls", np.zeros((1, 3, 48, 192), np.float32))   # dict name -> array
    out = await c.ainfer("cls", {"x": x})                          # same, async

The sync path uses one keep-alive `http.client` connection (no extra dependency, lowest
overhead); the async path an aiohttp session. Both send the binary tensor extension.

`https://` URLs are spoken over TLS, verified against the system trust store
(`ssl.create_default_context`, which also honours $SSL_CERT_FILE / $SSL_CERT_DIR); only
`insecure=True` (`--insecure`) turns verification off. The bearer token never travels in
cleartext to an https:// URL.

Inference is idempotent, so a request that finds the API briefly gone (connection refused or
reset: the API process restarting) or answered 503 with `Retry-After` (cluster full, a worker
being replaced) is sent again, for up to `retry_for_s` seconds (10 by default; 0: never).
A timeout is not retried (the server may still be computing it).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from edgekit.errors import EdgekitError, InputError
from edgekit.oipwire import OIP_TO_NUMPY, oip_from_numpy, pack_bytes, unpack_bytes

HEADER_LENGTH = "Inference-Header-Content-Length"


class ServeError(EdgekitError):
    """The server refused or failed a request; `status` is the HTTP status (0: unreachable).
    `retryable`: the server was not reached or said when to come back (Retry-After)."""

    def __init__(self, message: str, status: int, retry_after_s: float | None = None,
                 retryable: bool = False):
        self.status = status
        self.retry_after_s = retry_after_s
        self.retryable = retryable or (status == 503 and retry_after_s is not None)
        super().__init__(message)


def tls_context(insecure: bool = False) -> ssl.SSLContext:
    """TLS verified against the system trust store; `insecure` skips verification (only by
    the caller's explicit choice)."""
    ctx = ssl.create_default_context()
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def split_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http:// or https:// URL (bare host:port means http)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https"):
        raise InputError(f"URL scheme must be http or https, got '{parts.scheme}'", where=url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InputError("URL has a bad port", where=url) from None
    return parts.scheme, parts.hostname or "127.0.0.1", port


def retrying(call: Callable[[], Any], retry_for_s: float,
             sleep: Callable[[float], None] = time.sleep) -> Any:
    """`call()` again while it raises a retryable ServeError, for up to `retry_for_s` seconds:
    after Retry-After when the server gave one, else 0.05 s doubling to 1 s."""
    start, delay = time.monotonic(), 0.05
    while True:
        try:
            return call()
        except ServeError as exc:
            wait = exc.retry_after_s if exc.retry_after_s is not None else delay
            delay = min(1.0, delay * 2)
            if not exc.retryable or time.monotonic() - start + wait > retry_for_s:
                raise
        sleep(wait)


def encode(inputs: dict[str, np.ndarray]) -> tuple[bytes, int]:
    """Binary-extension request body for `inputs` and its JSON header length."""
    items, blobs = [], []
    for name, arr in inputs.items():
        arr = np.ascontiguousarray(arr)
        # a view of the array's memory (little-endian, as the protocol says): the join below
        # is the body's only copy
        raw = pack_bytes(arr) if arr.dtype.kind in "OUS" else memoryview(
            arr.astype(arr.dtype.newbyteorder("<"), copy=False).reshape(-1)).cast("B")
        items.append({"name": name, "shape": list(arr.shape),
                      "datatype": oip_from_numpy(arr.dtype),
                      "parameters": {"binary_data_size": len(raw)}})
        blobs.append(raw)
    head = json.dumps({"inputs": items, "parameters": {"binary_data_output": True}}).encode()
    return b"".join([head, *blobs]), len(head)


def decode(body: bytes, header_length: str | None) -> dict[str, np.ndarray]:
    """An OIP response's outputs as arrays: BYTES as str objects, JSON's "NaN"/"Infinity"
    strings as float nan/inf (docs/SERVING.md, "Tensor values")."""
    n = int(header_length) if header_length else len(body)
    doc = json.loads(body[:n])
    out, offset = {}, n
    for item in doc["outputs"]:
        name, shape, bytes_ = item["name"], item["shape"], item["datatype"] == "BYTES"
        dtype = np.dtype(object) if bytes_ else OIP_TO_NUMPY[item["datatype"]]
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is None:
            out[name] = np.asarray(item["data"], dtype=dtype).reshape(shape)
        elif bytes_:
            count = int(np.prod(shape))
            out[name] = unpack_bytes(name, memoryview(body)[offset:offset + size],
                                     count).reshape(shape)
            offset += size
        else:
            arr = np.frombuffer(body[offset:offset + size], dtype=dtype.newbyteorder("<"))
            out[name] = arr.astype(dtype).reshape(shape)
            offset += size
    return out


def _error(status: int, body: bytes, retry_after: str | None) -> ServeError:
    try:
        message = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        message = body[:200].decode(errors="replace")
    try:
        after = float(retry_after) if retry_after else None
    except ValueError:  # an HTTP date: not worth parsing, the request is not retried
        after = None
    return ServeError(f"HTTP {status}: {message}", status, after)


class Client:
    """Client of an edgekit (or any OIP) server. Token: argument or $EDGEKIT_SERVE_TOKEN."""

    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None,
                 timeout_s: float = 60.0, *, insecure: bool = False, retry_for_s: float = 10.0):
        scheme, self.host, self.port = split_url(url)
        self.url = f"{scheme}://{urlsplit(url if '://' in url else f'http://{url}').netloc}"
        self.ssl = tls_context(insecure) if scheme == "https" else None
        self.timeout_s = timeout_s
        self.retry_for_s = retry_for_s
        token = token or os.environ.get("EDGEKIT_SERVE_TOKEN")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._local = threading.local()
        self._session: Any = None
        self._input_names: dict[str, list[str]] = {}
        #: node and compute time of the last sync request (from response headers)
        self.last_node: str | None = None
        self.last_compute_ms: float | None = None

    # --- sync -------------------------------------------------------------------------
    def _connect(self) -> http.client.HTTPConnection:
        if self.ssl is not None:
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout_s,
                                               context=self.ssl)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
        for attempt in (0, 1):  # one reconnect: the server may have closed an idle socket
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self._connect()
            try:
                conn.request(method, path, body=body, headers={**self.headers, **(headers or {})})
                resp = conn.getresponse()
                return resp.status, resp.read(), resp.headers
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                conn.close()
                self._local.conn = None
                if attempt or isinstance(exc, ssl.SSLError | TimeoutError):
                    # refused/reset: the API is away (retryable); TLS or timeout: not
                    raise ServeError(f"cannot reach {self.url}: {exc}", 0,
                                     retryable=isinstance(exc, ConnectionError)) from exc
        raise AssertionError("unreachable")

    def _call(self, method: str, path: str, body: bytes | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
        """One request that must succeed (200), retried across a brief outage."""

        def once() -> tuple[int, bytes, Any]:
            status, data, got = self._request(method, path, body, headers)
            if status != 200:
                raise _error(status, data, got.get("Retry-After"))
            return status, data, got

        return retrying(once, self.retry_for_s)

    def _get_json(self, path: str) -> Any:
        return json.loads(self._call("GET", path)[1])

    def live(self) -> bool:
        return self._request("GET", "/v2/health/live")[0] == 200

    def ready(self) -> bool:
        return self._request("GET", "/v2/health/ready")[0] == 200

    def metadata(self, model: str) -> dict[str, Any]:
        return self._get_json(f"/v2/models/{model}")

    def status(self) -> dict[str, Any]:
        return self._get_json("/edgekit/status")

    def _feeds(self, model: str, inputs: Any) -> dict[str, np.ndarray]:
        if isinstance(inputs, dict):
            return inputs
        if model not in self._input_names:
            self._input_names[model] = [t["name"] for t in self.metadata(model)["inputs"]]
        names = self._input_names[model]
        if len(names) != 1:
            raise ServeError(f"model '{model}' has inputs {names}: pass a dict", 400)
        return {names[0]: np.asarray(inputs)}

    def infer(self, model: str, inputs: np.ndarray | dict[str, np.ndarray]
              ) -> dict[str, np.ndarray]:
        body, n = encode(self._feeds(model, inputs))
        _, data, headers = self._call(
            "POST", f"/v2/models/{model}/infer", body,
            {HEADER_LENGTH: str(n), "Content-Type": "application/octet-stream"})
        self.last_node = headers.get("Edgekit-Node")
        ms = headers.get("Edgekit-Compute-Ms")
        self.last_compute_ms = float(ms) if ms else None
        return decode(data, headers.get(HEADER_LENGTH))

    # --- async ------------------------------------------------------------------------
    async def _aget(self, method: str, path: str, **kw: Any) -> tuple[bytes, Any]:
        """One request that must succeed (200), retried across a brief outage."""
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self.headers, timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        start, delay = time.monotonic(), 0.05
        while True:
            try:
                async with self._session.request(method, f"{self.url}{path}",
                                                 ssl=self.ssl or True, **kw) as r:
                    data = await r.read()
                    if r.status == 200:
                        return data, r.headers
                    err = _error(r.status, data, r.headers.get("Retry-After"))
            except aiohttp.ClientError as exc:
                refused = isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ClientOSError |
                                     aiohttp.ServerDisconnectedError)
                tls = isinstance(exc, aiohttp.ClientSSLError)
                err = ServeError(f"cannot reach {self.url}: {exc}", 0,
                                 retryable=refused and not tls)
            wait = err.retry_after_s if err.retry_after_s is not None else delay
            delay = min(1.0, delay * 2)
            if not err.retryable or time.monotonic() - start + wait > self.retry_for_s:
                raise err
            await asyncio.sleep(wait)

    async def ainfer(self, model: str, inputs: np.ndarray | dict[str, np.ndarray]
                     ) -> dict[str, np.ndarray]:
        if not isinstance(inputs, dict) and model not in self._input_names:
            body, _ = await self._aget("GET", f"/v2/models/{model}")
            self._input_names[model] = [t["name"] for t in json.loads(body)["inputs"]]
        body, n = encode(self._feeds(model, inputs))
        data, headers = await self._aget(
            "POST", f"/v2/models/{model}/infer", data=body,
            headers={HEADER_LENGTH: str(n), "Content-Type": "application/octet-stream"})
        return decode(data, headers.get(HEADER_LENGTH))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
