"""The HTTP API on the head: Open Inference Protocol, /metrics and /edgekit/status (aiohttp).

A request's path: `infer()` below -> `limits.read_body` (per-model limit, memory budget,
timeouts) -> `decode.Decoder.parse` (`oip.parse_request` off the event loop) ->
`Batcher`/`WorkerPool.infer` (router picks a replica, Ray calls the worker on its node,
within the model's deadline) -> `oip.encode_parts` (large answers: partsbody.py).

Answers: bad input 4xx with `{"error": ...}` naming the field; 503 + Retry-After when the
cluster or the memory budget is full; 504 past the deadline; 500 only for a server fault.
Request-caused log lines are short and rate-limited (quietlog.py): whoever can reach the
port can send bad requests, token or not.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edgekit import __version__
from edgekit.jsonable import json_default
from edgekit.serve import partsbody
from edgekit.serve.deadline import DeadlineExceeded
from edgekit.serve.limits import Reservation, read_body
from edgekit.serve.oip import HEADER_LENGTH, ProtocolError, encode_parts
from edgekit.serve.quietlog import show
from edgekit.serve.router import Saturated
from edgekit.serve.triton import model_config, model_stats, repository_entry
from edgekit.serve.worker import RunError

if TYPE_CHECKING:
    from edgekit.serve.state import ServerState

STATE = web.AppKey("state", object)
# Triton extension names: the repository's index and load (a rolling update of a served
# model: rolling.py); unload is not offered (models come from the command line)
EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics", "model_repository",
              "edgekit_status"]


def json_answer(data: Any, status: int = 200, headers: dict[str, str] | None = None,
                default: Any = None) -> web.Response:
    """A JSON body sent as exactly `application/json`: aiohttp's json_response adds
    `; charset=utf-8`, and kserve's REST client, comparing the type exactly, then drops the
    body (the error message was lost). JSON is UTF-8 by definition (RFC 8259)."""
    body = json.dumps(data, default=default).encode()
    return web.Response(body=body, status=status, headers=headers,
                        content_type="application/json")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    resp = json_answer({"error": message}, status=status, headers=headers)
    if status in (408, 413):  # the rest of the body is not read: do not reuse the connection
        resp.force_close()
    return resp


def _bad(request: web.Request, status: int, message: str) -> None:
    """One short, rate-limited log line for a refused request."""
    st = _state(request)
    st.badlog.line(logging.WARNING, f"{status} {request.method} {request.path[:80]} from "
                                    f"{request.remote}: {message}")


def _authorized(request: web.Request, token: str) -> bool:
    got = request.headers.get("Authorization", "")
    # aiohttp keeps undecodable header bytes as surrogates: encode them back, never raise
    raw = got.encode("utf-8", "surrogateescape")
    return hmac.compare_digest(raw, f"Bearer {token}".encode())


def make_app(state: ServerState, token: str | None) -> web.Application:
    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if token is not None and not _authorized(request, token):
            _bad(request, 401, "missing or wrong bearer token")
            return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        try:
            return await handler(request)
        except web.HTTPException as exc:  # unknown route, wrong method
            if exc.status < 400:
                raise
            _bad(request, exc.status, exc.reason)
            return _error(exc.status, exc.reason)
        except Exception as exc:  # a server fault: a 500, its traceback rate-limited
            _state(request).badlog.line(
                logging.ERROR, f"500 {request.method} {request.path[:80]}: "
                               f"{type(exc).__name__}: {str(exc)[:120]}", exc_info=exc)
            return _error(500, f"internal error ({type(exc).__name__}); see the server log")

    app = web.Application(middlewares=[guard])
    app[STATE] = state
    app.add_routes(
        [
            web.get("/v2/health/live", live),
            web.get("/v2/health/ready", ready),
            web.get("/v2", server_meta),
            web.get("/v2/models/{model}", model_meta),
            web.get("/v2/models/{model}/versions/{version}", model_meta),
            web.get("/v2/models/{model}/ready", model_ready),
            web.get("/v2/models/{model}/config", config),
            web.get("/v2/models/stats", stats),
            web.get("/v2/models/{model}/stats", stats),
            web.get("/v2/models/{model}/versions/{version}/stats", stats),
            web.post("/v2/repository/index", repository_index),
            web.post("/v2/repository/models/{model}/load", repository_load),
            web.get("/v2/models/{model}/versions/{version}/ready", model_ready),
            web.post("/v2/models/{model}/infer", infer),
            web.post("/v2/models/{model}/versions/{version}/infer", infer),
            web.get("/metrics", metrics),
            web.get("/edgekit/status", status),
        ]
    )
    return app


def _state(request: web.Request) -> ServerState:
    return request.app[STATE]  # type: ignore[return-value]


async def live(request: web.Request) -> web.Response:
    return json_answer({"live": True})


async def ready(request: web.Request) -> web.Response:
    st = _state(request)
    report = st.readiness()
    return json_answer(report, status=200 if report["ready"] else 503)


async def server_meta(request: web.Request) -> web.Response:
    return json_answer({"name": "edgekit", "version": __version__, "extensions": EXTENSIONS})


def _model(request: web.Request):
    st = _state(request)
    name = request.match_info["model"]
    info = st.pool.models.get(name)
    if info is None:
        raise ProtocolError(f"unknown model {show(name)}; serving {sorted(st.pool.models)}", 404)
    version = request.match_info.get("version")
    if version is not None and not info.spec.has_version(version):
        raise ProtocolError(
            f"model '{name}' has no version {show(version)} (serving {info.spec.version})", 404
        )
    return st, info


async def model_meta(request: web.Request) -> web.Response:
    try:
        _, info = _model(request)
    except ProtocolError as exc:
        return _error(exc.status, exc.message)
    return json_answer(
        {
            "name": info.spec.name,
            "versions": [info.spec.version],
            "platform": info.spec.runtime,
            "inputs": [t.as_json() for t in info.inputs],
            "outputs": [t.as_json() for t in info.outputs],
        }
    )


async def model_ready(request: web.Request) -> web.Response:
    try:
        st, info = _model(request)
    except ProtocolError as exc:
        return _error(exc.status, exc.message)
    usable, total = st.router.capacity(info.spec.name)
    body = {"name": info.spec.name, "ready": usable > 0, "replicas": total, "usable": usable}
    return json_answer(body, status=200 if usable > 0 else 503)


async def config(request: web.Request) -> web.Response:
    try:
        _, info = _model(request)
    except ProtocolError as exc:
        return _error(exc.status, exc.message)
    return json_answer(model_config(info))


async def stats(request: web.Request) -> web.Response:
    """Triton's statistics extension: one model (any version of it) or every model."""
    st = _state(request)
    try:
        infos = [_model(request)[1]] if "model" in request.match_info else [
            st.pool.models[m] for m in sorted(st.pool.models)]
    except ProtocolError as exc:
        return _error(exc.status, exc.message)
    return json_answer({"model_stats": [model_stats(i, st.metrics.triton) for i in infos]})


async def repository_index(request: web.Request) -> web.Response:
    """Triton's repository index: every served model; `{"ready": true}` keeps ready ones."""
    st = _state(request)
    raw = await request.content.read(64 * 1024 + 1)
    try:
        doc = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return _error(400, "malformed JSON in the repository index request")
    if not isinstance(doc, dict) or not isinstance(doc.get("ready", False), bool):
        return _error(400, "repository index request: expected {\"ready\": true|false}")
    entries = []
    for name in sorted(st.pool.models):
        entry = repository_entry(st.pool.models[name], st.router.capacity(name)[0])
        if not doc.get("ready") or entry["state"] == "READY":
            entries.append(entry)
    return json_answer(entries)


async def repository_load(request: web.Request) -> web.Response:
    """Triton's model load, as a rolling update of a served model (serve/rolling.py): the
    body's `parameters` may name `bundle` (a bundle folder or model file on the API's
    machine; default: where the model was loaded from), `version` (the id it must hold) and
    `mode` (auto | beside | replace) and `nodes` (roll only these; the others keep their
    version: deploy's nodes that failed a step this time); Triton's `config` parameter
    (tritonclient's `load_model(config=...)`) may carry the same keys as a JSON string.
    Answers when the update is over: 200 with every node's outcome when the new version
    serves somewhere, else 400 with the errors (the old version still serves)."""
    from edgekit.serve.rolling import LoadRefused

    st = _state(request)
    raw = await request.content.read(64 * 1024 + 1)
    try:
        params = _load_parameters(raw)
    except ValueError as exc:
        return _error(400, f"load request: {exc}")
    try:
        report = await st.roller.load(request.match_info["model"], params.get("bundle"),
                                      params.get("version"), params.get("mode", "auto"),
                                      params.get("nodes"))
    except LoadRefused as exc:
        _bad(request, exc.status, str(exc))
        return _error(exc.status, str(exc))
    if not report.ok:
        return json_answer({"error": f"{report.model} {report.version} was not loaded: "
                                     f"{report.failures()}"[:2000], **report.to_dict()}, 400)
    return json_answer(report.to_dict())


def _load_parameters(raw: bytes) -> dict[str, Any]:
    """`parameters` of a load request (bundle, version, mode), checked; ValueError says why."""
    from pathlib import Path

    if len(raw) > 64 * 1024:
        raise ValueError("body over 64 KiB")
    doc = json.loads(raw) if raw.strip() else {}
    params = doc.get("parameters", {}) if isinstance(doc, dict) else None
    if not isinstance(params, dict):
        raise ValueError('expected {"parameters": {...}}')
    if isinstance(params.get("config"), str):  # Triton's model config override, as JSON text
        config = json.loads(params["config"])
        if not isinstance(config, dict):
            raise ValueError("parameters.config must be a JSON object")
        params = {**config, **{k: v for k, v in params.items() if k != "config"}}
    for key in ("bundle", "version", "mode"):
        if key in params and not isinstance(params[key], str):
            raise ValueError(f"parameters.{key} must be a string")
    nodes = params.get("nodes")
    if nodes is not None and not (isinstance(nodes, list)
                                  and all(isinstance(n, str) for n in nodes)):
        raise ValueError("parameters.nodes must be a list of node names")
    unknown = sorted(set(params) - {"bundle", "version", "mode", "nodes"})
    if unknown:
        raise ValueError(f"unknown parameters {unknown} (bundle, version, mode, nodes)")
    if "bundle" in params:
        params["bundle"] = Path(params["bundle"])
    return params


async def infer(request: web.Request) -> web.Response:
    start = time.perf_counter()
    st = _state(request)
    try:
        _, info = _model(request)
    except ProtocolError as exc:
        _bad(request, exc.status, exc.message)
        return _error(exc.status, exc.message)
    held = Reservation(st.budget)
    try:
        io, limits = st.io[info.spec.name]
        body = await read_body(request, limits, held, st.config.tunables)
        req = await st.decoder.parse(body, request.headers.get(HEADER_LENGTH), io)
        res = await st.dispatch(info.spec.name, req.inputs)
        encoded = encode_parts(info.spec.name, res.version or info.spec.version, req,
                               res.outputs)
    except ProtocolError as exc:
        st.metrics.triton.failure(info.spec.name, info.spec.version, "bad_request",
                                  time.perf_counter() - start)
        _bad(request, exc.status, exc.message)
        return _error(exc.status, exc.message)
    except Saturated as exc:
        st.metrics.rejected.labels(info.spec.name).inc()
        return _error(503, str(exc), {"Retry-After": str(exc.retry_after_s)})
    except DeadlineExceeded as exc:
        st.metrics.triton.failure(info.spec.name, info.spec.version, "deadline",
                                  time.perf_counter() - start)
        _bad(request, 504, str(exc))
        return _error(504, str(exc))
    except RunError as exc:  # through Ray: its task error, whose `cause` is ours
        message = str(getattr(exc, "cause", None) or exc)[:400]
        st.metrics.triton.failure(info.spec.name, info.spec.version, "runtime",
                                  time.perf_counter() - start)
        _bad(request, 500, message)
        return _error(500, message)
    finally:
        held.release()
    return _answer(st, info, req, res, encoded, time.perf_counter() - start)


def _answer(st, info, req, res, encoded: tuple[list[bytes | memoryview], int | None],
            latency: float) -> web.Response:
    parts, header_len = encoded
    batch = next(iter(req.inputs.values())).shape[0] if info.batchable and req.inputs else 1
    st.metrics.observe(info.spec.name, info.spec.version, res, latency, batch)
    headers = {"Edgekit-Node": res.node, "Edgekit-Compute-Ms": f"{res.compute_ms:.3f}"}
    if header_len is None:
        return web.Response(body=b"".join(parts), content_type="application/json",
                            headers=headers)
    headers[HEADER_LENGTH] = str(header_len)
    kind = "application/octet-stream"
    return web.Response(body=partsbody.body(parts, kind), content_type=kind, headers=headers)


async def metrics(request: web.Request) -> web.Response:
    st = _state(request)
    st.metrics.refresh_nodes(st.router.node_stats())
    st.metrics.refresh_energy(st.router.energy())
    resp = web.Response(body=generate_latest(st.metrics.registry))
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp


async def status(request: web.Request) -> web.Response:
    return json_answer(_state(request).status(), default=json_default)
