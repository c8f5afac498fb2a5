"""What the API server holds while it serves: `ServeConfig` (everything `edgekit serve` was
asked for) and `ServerState` (router, worker pool, metrics, body limits, controllers), which
the HTTP handlers (api.py) read and the entry point (server.py) starts and stops.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import InputError
from edgekit.serve.control import Controller
from edgekit.serve.decode import Decoder
from edgekit.serve.limits import BodyLimits, ByteBudget, model_io
from edgekit.serve.metrics import Metrics
from edgekit.serve.models import load_model_spec, parse_model_arg
from edgekit.serve.oip import ModelIO
from edgekit.serve.pool import Result, WorkerPool
from edgekit.serve.quietlog import RateLimitedLog
from edgekit.serve.router import Router
from edgekit.serve.settings import Tunables

log = logging.getLogger("edgekit.serve")
TOKEN_ENV = "EDGEKIT_SERVE_TOKEN"
#: short names for --controller; anything else is "module:attribute"
CONTROLLER_ALIASES = {"thermal": "edgekit.thermal.controller:ThermalController"}


@dataclass
class ServeConfig:
    """Everything `edgekit serve` needs. Ray auth comes from RAY_AUTH_MODE/RAY_AUTH_TOKEN(_PATH)."""

    models: list[str]  # "NAME=BUNDLE_DIR_OR_MODEL_FILE"
    ray_address: str | None = None  # None/"auto": the local Ray cluster
    nodes: list[str] | None = None  # default: every node with an edgekit-node-* resource
    host: str = "127.0.0.1"
    port: int = 8000
    token_file: Path | None = None  # HTTP bearer token; else $EDGEKIT_SERVE_TOKEN if set
    max_body_bytes: int = 64 * 1024 * 1024  # global cap on a body (binary tensors)
    max_json_bytes: int = 16 * 1024 * 1024  # global cap on JSON text (costs ~12x to parse)
    memory_budget_bytes: int | None = None  # bodies in flight (default: default_budget())
    deadlines: dict[str, float] = field(default_factory=dict)  # model or "*" -> seconds
    allow_unauthenticated: bool = False  # serve off loopback without a token anyway
    max_queue: int = 4  # requests in flight per replica before it counts as full
    threads: int | None = None  # runtime threads per worker (default: the node's Ray CPUs)
    compress: bool = False  # int8-compress float tensors crossing pipeline cuts
    node_bundles: bool = False  # workers load the node's deployed copy (edgekit deploy)
    transport: str = "direct"  # request tensors: "direct" channel or "ray" actor calls
    min_nodes: int = 1  # of `nodes`, serve once this many are live (the rest join later)
    batching: dict[str, tuple[int, float]] = field(default_factory=dict)  # model->(max, wait ms)
    controllers: list[Controller | str] = field(default_factory=list)
    tunables: Tunables = field(default_factory=Tunables)  # health/retry timings

    def token(self) -> str | None:
        if self.token_file is not None:
            try:
                text = Path(self.token_file).read_text().strip()
            except OSError as exc:
                raise InputError(
                    f"cannot read token file: {exc}", where=str(self.token_file)
                ) from exc
            if not text:
                raise InputError("token file is empty", where=str(self.token_file))
            return text
        return os.environ.get(TOKEN_ENV) or None


def default_budget(t: Tunables) -> int:
    """Bytes the request bodies in flight may cost when no budget is given: a share of the
    machine's memory, within bounds (settings.Tunables says which and why)."""
    import psutil

    share = int(psutil.virtual_memory().total * t.memory_budget_share)
    return min(t.memory_budget_max_bytes, max(t.memory_budget_min_bytes, share))


def load_controller(ref: Controller | str) -> Controller:
    """A controller object, or one built from "thermal" / "package.module:Class"."""
    if not isinstance(ref, str):
        return ref
    target = CONTROLLER_ALIASES.get(ref, ref)
    module, _, attr = target.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"cannot load controller '{ref}' ({target}): {exc}") from exc
    return obj() if isinstance(obj, type) else obj


class ServerState:
    """What the HTTP handlers see: router, pool, metrics, controllers."""

    def __init__(self, config: ServeConfig):
        from edgekit.serve.batching import Batcher

        self.config = config
        t = config.tunables
        self.router = Router()
        self.metrics = Metrics()
        self.pool = WorkerPool(
            self.router,
            config.max_queue,
            config.compress,
            config.threads,
            t,
            config.node_bundles,
            config.transport,
        )
        self.pool.deadlines.fixed.update(config.deadlines)
        self.badlog = RateLimitedLog(log, t.log_lines, t.log_interval_s)
        self.budget = ByteBudget(config.memory_budget_bytes or default_budget(t))
        self.decoder = Decoder(t.json_inline_bytes)
        self.io: dict[str, tuple[ModelIO, BodyLimits]] = {}
        self.controllers = [load_controller(c) for c in config.controllers]
        self.batchers: dict[str, Batcher] = {}
        self.started = time.time()
        from edgekit.serve.rolling import Roller

        #: rolling updates: POST /v2/repository/models/{m}/load (api.py)
        self.roller = Roller(self.pool, self._model_changed)

    def _model_changed(self, name: str, info: Any) -> None:
        """A rolling update switched `name` to a new version: its body limits follow its
        inputs/outputs."""
        c = self.config
        self.io[name] = model_io(info.inputs, info.outputs, c.max_body_bytes,
                                 c.max_json_bytes, self.budget.total, c.tunables)

    async def start(self) -> None:
        from edgekit.serve.batching import Batcher

        specs = [load_model_spec(*parse_model_arg(m)) for m in self.config.models]
        if not specs:
            raise InputError("no model given (--model NAME=PATH)")
        for spec in specs:
            if spec.name in self.config.batching:
                spec.max_batch, spec.max_wait_ms = self.config.batching[spec.name]
        await asyncio.get_running_loop().run_in_executor(
            None, self.pool.place, specs, self.config.nodes, self.config.min_nodes
        )
        await self.pool.wait_ready()
        c = self.config
        for name, info in self.pool.models.items():
            self.io[name] = model_io(info.inputs, info.outputs, c.max_body_bytes,
                                     c.max_json_bytes, self.budget.total, c.tunables)
        self.decoder.start()
        for name, info in self.pool.models.items():
            if info.spec.max_batch > 1 and info.batchable:
                self.batchers[name] = Batcher(
                    self.pool, name, info.spec.max_batch, info.spec.max_wait_ms
                )
        self.pool.start_health()
        for c in self.controllers:
            c.start(self.router)

    async def stop(self) -> None:
        for c in self.controllers:
            try:
                c.stop()
            except Exception:  # a broken controller must not block shutdown
                log.exception("controller %s failed to stop", getattr(c, "name", c))
        await self.pool.stop()
        self.decoder.close()

    async def dispatch(self, model: str, feeds: dict) -> Result:
        batcher = self.batchers.get(model)
        return await (batcher.infer(feeds) if batcher else self.pool.infer(model, feeds))

    def readiness(self) -> dict[str, Any]:
        models = {m: self.router.capacity(m) for m in self.pool.models}
        ready = bool(models) and all(u > 0 for u, _ in models.values())
        degraded = [r.label + f" ({r.model})" for r in self.router.replicas if not r.alive]
        return {
            "ready": ready,
            "degraded": bool(degraded),
            "missing": degraded,
            "models": {m: {"usable": u, "replicas": t} for m, (u, t) in models.items()},
        }

    def status(self) -> dict[str, Any]:
        stats = self.router.node_stats()
        return {
            "uptime_s": round(time.time() - self.started, 1),
            "readiness": self.readiness(),
            "nodes": {n: dataclasses.asdict(s) for n, s in stats.items()},
            "models": {
                n: {
                    "version": i.spec.version,
                    # node -> the version its worker serves (two during a rolling update)
                    "served": _served(self.router, n),
                    "label": i.spec.label,
                    "runtime": i.spec.runtime,
                    "stages": len(i.spec.stages),
                    "source": str(i.spec.source),
                    "batching": n in self.batchers,
                }
                for n, i in self.pool.models.items()
            },
            "replicas": self.pool.describe(),
            "workers": self.pool.stacks(),
            # node -> the last worker load that failed there (the constructor's own error)
            "load_errors": dict(self.pool.health.load_errors.by_node),
            "updates": dict(self.roller.reports),  # model -> its last rolling update
            "energy": self.router.energy(),
            "admission_limit": self.router.max_in_flight,
            "limits": self.limits(),
            "events": [
                {"t": t, "node": n, "action": a, "reason": r}
                for t, n, a, r in self.router.recent_events(50)
            ],
            "controllers": {
                getattr(c, "name", type(c).__name__): _safe_status(c) for c in self.controllers
            },
        }

    def limits(self) -> dict[str, Any]:
        """Body limits per model, the memory budget in use, deadlines, suppressed log lines."""
        deadlines = self.pool.deadlines.describe()  # per replica, once it has a history
        return {
            "memory_budget_bytes": self.budget.total,
            "memory_in_flight_bytes": self.budget.used,
            "memory_peak_bytes": self.budget.peak,
            "refused_over_budget": self.budget.refused,
            "json_decoded_in_process": self.decoder.in_process,
            "log_lines_suppressed": self.badlog.suppressed_total,
            "models": {n: {"binary_body_bytes": lim.binary, "json_body_bytes": lim.json,
                           "deadline_s": deadlines.get(n, {})}
                       for n, (_, lim) in self.io.items()},
        }


def _served(router: Router, model: str) -> dict[str, str]:
    return {n: r.version for r in router.replicas if r.model == model for n in r.nodes}


def _safe_status(c: Controller) -> Any:
    try:
        return c.status()
    except Exception as exc:  # a controller's bug shows in status instead of a 500
        return {"error": f"{type(exc).__name__}: {exc}"}
