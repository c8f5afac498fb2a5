"""Prometheus metrics: Triton's names where a Triton user would look, edgekit_* for the rest.

Triton's `nv_inference_*` are cumulative counters (durations in microseconds) under Triton's
exact names (`tritonstats.TritonCounters`); edgekit adds
latency histograms and per-node series (requests, compute time, outstanding, weight and
energy per inference when a controller reports the node's power).
"""

from __future__ import annotations

from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from edgekit.serve.control import NodeStats
from edgekit.serve.tritonstats import TritonCounters

_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)



class Served(Protocol):
    """What metrics read of an answered request (serve.pool.Result has it)."""

    node: str  # "pi1", or "pi1+pi2" for a pipeline
    compute_ms: float
    queue_ms: float
    attempts: int

class Metrics:
    def __init__(self) -> None:
        # `_created` series double every edgekit counter and histogram and no dashboard of
        # ours reads them; the switch is process-wide, and this process is the API server.
        disable_created_metrics()
        r = self.registry = CollectorRegistry()
        # Triton's names exactly (no `_total`, no `_created`): see tritonstats.py
        self.triton = TritonCounters()
        self._kids: dict[tuple[str, str], tuple] = {}  # (model, replica) -> label children
        r.register(self.triton)
        self.latency = Histogram(
            "edgekit_request_duration_seconds",
            "Request latency at the API server",
            ["model"],
            buckets=_BUCKETS_S,
            registry=r,
        )
        self.rejected = Counter(
            "edgekit_requests_rejected_total",
            "Requests refused with 503 (saturated or no capacity)",
            ["model"],
            registry=r,
        )
        self.retries = Counter(
            "edgekit_request_retries_total",
            "Requests retried on another replica after a worker failure",
            ["model"],
            registry=r,
        )
        self.node_requests = Counter(
            "edgekit_node_requests_total", "Requests served per node", ["node", "model"], registry=r
        )
        self.node_compute = Histogram(
            "edgekit_node_compute_seconds",
            "Runtime compute time per request on a node",
            ["node"],
            buckets=_BUCKETS_S,
            registry=r,
        )
        self.node_outstanding = Gauge(
            "edgekit_node_outstanding", "Requests in flight", ["node"], registry=r
        )
        self.node_weight = Gauge(
            "edgekit_node_weight", "Routing weight (0..1)", ["node"], registry=r
        )
        self.node_alive = Gauge(
            "edgekit_node_alive", "1 if the node's workers answer", ["node"], registry=r
        )
        self.node_energy = Gauge(
            "edgekit_node_energy_joules_per_inference",
            "Node power / node request rate (when power is reported)",
            ["node"],
            registry=r,
        )
        self.cluster_energy = Gauge(
            "edgekit_cluster_energy_joules_per_inference",
            "Summed node power / cluster request rate (when power is reported)",
            registry=r,
        )
        self.node_power = Gauge("edgekit_node_power_watts", "Node power reported by a controller",
                                ["node"], registry=r)

    def observe(self, model: str, version: str, res: Served, latency_s: float,
                batch: int) -> None:
        """One answered request: `res` says where it ran, its compute and queue time and how
        many workers it took (serve.pool.Result)."""
        self.triton.success(model, version, latency_s, res.compute_ms, res.queue_ms, batch)
        kids = self._kids.get((model, res.node))
        if kids is None:  # labels() costs a lock and a lookup: once per (model, replica)
            kids = self._kids[(model, res.node)] = (
                self.latency.labels(model),
                [self.node_requests.labels(n, model) for n in res.node.split("+")],
                self.node_compute.labels(res.node))
        kids[0].observe(latency_s)
        for counter in kids[1]:
            counter.inc()
        kids[2].observe(res.compute_ms / 1000.0)
        if res.attempts > 1:
            self.retries.labels(model).inc()

    def refresh_energy(self, energy: dict) -> None:
        if energy.get("j_per_inference") is not None:
            self.cluster_energy.set(float(energy["j_per_inference"]))

    def refresh_nodes(self, stats: dict[str, NodeStats]) -> None:
        for name, st in stats.items():
            self.node_outstanding.labels(name).set(st.outstanding)
            self.node_weight.labels(name).set(st.weight if st.state != "drained" else 0.0)
            self.node_alive.labels(name).set(1.0 if st.alive else 0.0)
            if "power_w" in st.extra:
                self.node_power.labels(name).set(float(st.extra["power_w"]))
            if "energy_j_per_inference" in st.extra:
                self.node_energy.labels(name).set(float(st.extra["energy_j_per_inference"]))
