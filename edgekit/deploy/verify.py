"""The verify step: every placed worker has loaded its model and answers.

Asks the head's API (bearer token from the deployment's 0600 file): the model's
`/v2/models/{m}/ready`, then `/edgekit/status` for which replicas (nodes) are alive. Polls
until all are, or the timeout; nodes still missing then get their log tail in the report.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Health:
    ready: bool
    alive_nodes: set[str] = field(default_factory=set)
    dead_nodes: set[str] = field(default_factory=set)
    error: str = ""
    #: node -> what its workers compute with (edgekit.node.stack.describe + "warning")
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: model -> the version id the API serves (edgekit.model.bundle.Bundle.version)
    versions: dict[str, str] = field(default_factory=dict)
    #: nodes the API has made a worker for (generation >= 0): their Ray joined the head
    placed: set[str] = field(default_factory=set)
    #: node -> model -> the version its live workers run (what that node serves)
    served: dict[str, dict[str, str]] = field(default_factory=dict)
    #: node -> the thermal controller's row (edgekit.thermal.nodeview.NodeRow as a dict),
    #: or the router's bare stats without the controller
    thermal: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: node -> the router's own stats for it (state serving/shedding/drained, weight, alive)
    routing: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: node -> why its worker could not load the model, as the API last saw it
    load_errors: dict[str, str] = field(default_factory=dict)
    #: False when the API did not answer at all (unreachable, refused, garbage)
    answered: bool = True


def _get(url: str, token: str, timeout_s: float = 5.0) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def check(api_url: str, token: str, models: list[str]) -> Health:
    """The API's answer: ready or not (every model), and /edgekit/status read either way, so
    a node's versions, thermal state and load error show while a model is not ready."""
    try:
        waiting = []
        for m in models:
            code, _ = _get(f"{api_url}/v2/models/{m}/ready", token)
            if code != 200:
                waiting.append(f"model {m} not ready (HTTP {code})")
        code, status = _get(f"{api_url}/edgekit/status", token)
    except http.client.HTTPException as exc:  # not HTTP: another program has the API's port
        return Health(False, error=f"API not answering: {api_url} answers, but not with HTTP "
                      f"({type(exc).__name__}): another program may hold that port",
                      answered=False)
    except (OSError, ValueError) as exc:
        return Health(False, error=f"API not answering: {exc}", answered=False)
    if code != 200:
        waiting.append(f"/edgekit/status answered HTTP {code}")
    h = Health(not waiting, error="; ".join(waiting))
    _read_status(h, status if isinstance(status, dict) else {})
    return h


def _read_status(h: Health, status: dict[str, Any]) -> None:
    """Fill `h` from the API's /edgekit/status document."""
    model_versions = {m: str(info.get("version", ""))
                      for m, info in (status.get("models") or {}).items()}
    for r in status.get("replicas", []):
        nodes = r.get("nodes", [])
        (h.alive_nodes if r.get("alive") else h.dead_nodes).update(nodes)
        h.placed.update(n for n, g in zip(nodes, r.get("generations", []), strict=False)
                        if g >= 0)
        if r.get("alive"):  # a replica may say its own version (rolling updates)
            version = str(r.get("version") or model_versions.get(r.get("model", ""), ""))
            for n in nodes:
                h.served.setdefault(n, {})[r.get("model", "")] = version
    h.dead_nodes -= h.alive_nodes
    h.workers = status.get("workers") or {}
    h.versions = model_versions
    routed = status.get("nodes") or {}
    thermal = ((status.get("controllers") or {}).get("thermal") or {}).get("nodes") or {}
    h.routing = {n: dict(v or {}) for n, v in routed.items()}
    h.thermal = {n: dict(v) for n, v in thermal.items() if isinstance(v, dict)}
    # the router's node entry carries it (extra.load_error); `load_errors` also has nodes
    # the router does not know yet
    for n, e in (status.get("load_errors") or {}).items():
        if isinstance(e, dict) and e.get("error"):
            h.load_errors[n] = f"{e.get('model', '')} {e.get('version', '')}: {e['error']}"
    for n, entry in routed.items():
        err = (entry or {}).get("load_error") or ((entry or {}).get("extra") or {}).get(
            "load_error")
        if err:
            h.load_errors[n] = str(err)


def _poll(api_url: str, token: str, models: list[str], versions: dict[str, str],
          done: Callable[[Health, bool], bool], timeout_s: float) -> tuple[Health, dict]:
    """Check once a second until `done(h, serving)` (serving: the API is ready at `versions`,
    model -> id), or the timeout; the last answer and the models served at another version."""
    deadline = time.monotonic() + timeout_s
    h, stale = Health(False, error="not checked"), dict(versions)
    while time.monotonic() < deadline:
        h = check(api_url, token, models)
        if versions:  # live at the version only: a rolling update may leave a node on the old
            h.alive_nodes = {n for n in h.alive_nodes if all(
                h.served.get(n, {}).get(m) == v for m, v in versions.items())}
        stale = {m: v for m, v in versions.items() if h.versions.get(m) != v}
        if done(h, h.ready and not stale):
            break
        time.sleep(1.0)
    return h, stale


def wait(api_url: str, token: str, models: list[str], nodes: list[str],
         timeout_s: float, versions: dict[str, str] | None = None) -> Health:
    """Poll until every model is ready (at `versions`, model -> id, when given) and every
    node in `nodes` has a live replica."""
    h, stale = _poll(api_url, token, models, versions or {},
                     lambda h, serving: serving and set(nodes) <= h.alive_nodes, timeout_s)
    if h.ready and stale:
        h.ready = False
        h.error = "; ".join(f"the API serves {m} version {h.versions.get(m) or '?'}, "
                            f"not {v}" for m, v in stale.items())
        return h
    if h.ready and not set(nodes) <= h.alive_nodes:
        missing = sorted(set(nodes) - h.alive_nodes)
        h.ready = False
        h.error = f"no live worker on {', '.join(missing)} after {timeout_s:.0f} s"
    return h


def wait_served(api_url: str, token: str, versions: dict[str, str], nodes: list[str],
                timeout_s: float, settled: Callable[[set[str], set[str]], bool]) -> Health:
    """Like `wait` for deploy: until the API serves every model at its version on every
    node, or `settled(alive, missing)` says waiting longer would not change the outcome
    (edgekit.deploy.stragglers.Watch), or the timeout. `ready` is what the API said; the
    caller counts the live nodes."""

    def done(h: Health, serving: bool) -> bool:
        alive = set(nodes) & h.alive_nodes if serving else set()
        return alive == set(nodes) or settled(alive, set(nodes) - alive)

    h, stale = _poll(api_url, token, list(versions), versions, done, timeout_s)
    if stale and h.ready:
        h.ready = False
        h.error = "; ".join(f"the API serves {m} version {h.versions.get(m) or '?'}, "
                            f"not {v}" for m, v in stale.items())
    return h
