"""Deploy and rollback tell the running API to roll a model to a new version, instead of
restarting it: Triton's repository load, `POST /v2/repository/models/{m}/load`
(edgekit/serve/rolling.py does the update node by node while the API keeps answering).

The head writes the new model into the API's config as well (deploy/head.py, headnode.py),
so a later restart serves the same version, but a change of the model alone never restarts
the API: only the rest of its config (ports, nodes, Ray, tokens, thermal) does.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from edgekit.errors import ClusterError

#: the API bounds every step of an update itself (a worker's load, its self-test, the old
#: one's drain), so the request only needs a ceiling for a stuck connection
LOAD_TIMEOUT_S = 3600.0
#: the API may be restarting (a crashed process the supervisor brings back): retry this long
REACH_S = 60.0


@dataclass
class Loaded:
    """What the API answered: the new version serves on `ok` nodes; `failed` node -> why
    (the worker's own load error, the old version still serving there); `pending` nodes
    are not in the Ray cluster (their new worker starts when they join)."""

    version: str
    ok: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    note: str = ""
    rolled: list[str] = field(default_factory=list)  # nodes whose workers this load replaced

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "ok": self.ok, "failed": self.failed,
                "pending": self.pending, "note": self.note, "rolled": self.rolled}


def load(api_url: str, token: str, model: str, bundle: str, version: str,
         only: tuple[str, ...] = ()) -> Loaded:
    """Ask the API at `api_url` to roll `model` to `version` from `bundle` (a folder on the
    API's machine; `only`: just these nodes, the others keep their version); returns once the
    update is over. Raises ClusterError when the API does not answer or refuses the request
    itself."""
    params: dict[str, Any] = {"bundle": bundle, "version": version}
    if only:
        params["nodes"] = list(only)
    body = json.dumps({"parameters": params}).encode()
    req = urllib.request.Request(f"{api_url}/v2/repository/models/{model}/load", body,
                                 method="POST", headers={"Authorization": f"Bearer {token}",
                                                         "Content-Type": "application/json"})
    deadline = time.monotonic() + REACH_S
    while True:
        try:
            with urllib.request.urlopen(req, timeout=LOAD_TIMEOUT_S) as resp:
                return _loaded(json.loads(resp.read()), version)
        except urllib.error.HTTPError as exc:
            doc = _json(exc.read())
            if exc.code == 400 and isinstance(doc.get("nodes"), dict):
                return _loaded(doc, version)  # no node took it: each one's error
            raise ClusterError(f"the API refused to load {model} {version}: HTTP {exc.code}: "
                               f"{doc.get('error') or exc.reason}") from None
        except OSError as exc:  # not listening (yet): a restarting API comes back
            if time.monotonic() > deadline:
                raise ClusterError(f"the API did not answer the load of {model} {version}: "
                                   f"{exc}") from None
            time.sleep(1.0)


def _json(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _loaded(doc: dict[str, Any], version: str) -> Loaded:
    out = Loaded(version, note=str(doc.get("note") or ""))
    for node, r in (doc.get("nodes") or {}).items():
        if r.get("ok"):
            out.ok.append(node)
            if r.get("how") in ("beside", "replaced"):
                out.rolled.append(node)
        elif r.get("how") == "kept":  # not in this update (it failed an earlier step)
            continue
        elif r.get("how") == "pending":  # the new version's replica waits for the node
            out.pending.append(node)
            out.rolled.append(node)
        else:
            out.failed[node] = str(r.get("error") or "did not load")
    return out


class Target(NamedTuple):
    """What the running API should load: the model, its bundle folder (as the API sees it),
    the version and, when not all of the API's nodes, which nodes."""

    model: str
    bundle: str
    version: str
    only: tuple[str, ...] = ()  # roll just these (the API keeps nodes that failed this time)


def after_start(how: str, head: Any, st: Any, pool: Any, target: Target) -> Loaded | None:
    """When the head's start said "reload" (only the model changed) or "running" (nothing
    changed, but a node that missed the last update may still serve an older version: the
    load rolls just those, and is a no-op otherwise), have the running API load `target`
    (edgekit.deploy.heads: `head.reach` gives the URL, through a tunnel for an API on a head
    node's loopback); None when the API was (re)started."""
    if how not in ("reload", "running"):
        return None
    from edgekit.tokenfile import read_token

    token = read_token(head.dep / "api-token", "api-token")
    with head.reach(st, pool) as url:
        return load(url, token, *target)
