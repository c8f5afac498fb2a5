"""Triton's `nv_inference_*` counters, exposed under exactly Triton's names.

prometheus_client's `Counter` (and `CounterMetricFamily`) always writes `<name>_total` in the
text format (`generate_latest` appends it to the TYPE line and to the samples) and adds a
`<name>_created` series, so a Triton dashboard querying `nv_inference_request_success` found
nothing. This collector yields the families as `unknown` ("untyped" in the text format), which
prometheus_client writes with the sample names untouched and without `_created`; Prometheus
stores untyped samples like counters and `rate()` works on them as on Triton's own counters.
The same numbers feed Triton's statistics extension (`/v2/models/{m}/stats`).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator

from prometheus_client.metrics_core import Metric

#: Triton's family name -> help text (labels: model, version; failures add Triton's `reason`)
FAMILIES: dict[str, str] = {
    "nv_inference_request_success": "Number of successful inference requests, all batch sizes",
    "nv_inference_request_failure": "Number of failed inference requests, all batch sizes",
    "nv_inference_count": "Number of inferences performed (a batch of n counts n)",
    "nv_inference_exec_count": "Number of model executions performed",
    "nv_inference_request_duration_us": "Cumulative inference request duration in microseconds",
    "nv_inference_queue_duration_us": "Cumulative inference queuing duration in microseconds",
    "nv_inference_compute_infer_duration_us": "Cumulative compute inference duration in "
                                              "microseconds",
}


class TritonCounters:
    """Cumulative per-(model, version) counters; a prometheus_client collector."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the event loop writes, the scrape may read elsewhere
        self._values: dict[tuple[str, tuple[str, ...]], float] = defaultdict(float)
        self._fail_us: dict[tuple[str, str], float] = defaultdict(float)
        self._last_ms: dict[tuple[str, str], int] = {}

    def success(self, model: str, version: str, latency_s: float, compute_ms: float,
                queue_ms: float, batch: int) -> None:
        key = (model, version)
        with self._lock:
            for name, value in (
                ("nv_inference_request_success", 1.0),
                ("nv_inference_count", float(batch)),
                ("nv_inference_exec_count", 1.0),
                ("nv_inference_request_duration_us", latency_s * 1e6),
                ("nv_inference_queue_duration_us", queue_ms * 1e3),
                ("nv_inference_compute_infer_duration_us", compute_ms * 1e3),
            ):
                self._values[(name, key)] += value
            self._last_ms[key] = int(time.time() * 1000)

    def failure(self, model: str, version: str, reason: str, latency_s: float) -> None:
        with self._lock:
            self._values[("nv_inference_request_failure", (model, version, reason))] += 1.0
            self._fail_us[(model, version)] += latency_s * 1e6

    def get(self, name: str, model: str, version: str) -> float:
        """A family's value for one model version (failures summed over reasons)."""
        with self._lock:
            return sum(v for (n, labels), v in self._values.items()
                       if n == name and labels[:2] == (model, version))

    def failure_us(self, model: str, version: str) -> float:
        with self._lock:
            return self._fail_us.get((model, version), 0.0)

    def last_inference_ms(self, model: str, version: str) -> int:
        with self._lock:
            return self._last_ms.get((model, version), 0)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            items = sorted(self._values.items())
        for family, doc in FAMILIES.items():
            metric = Metric(family, doc, "unknown")
            for (name, labels), value in items:
                if name == family:
                    names = ("model", "version", "reason")[: len(labels)]
                    metric.add_sample(family, dict(zip(names, labels, strict=True)), value)
            yield metric
