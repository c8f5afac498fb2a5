"""Workers load the model files `edgekit deploy` pushed to their own node.

Deploy verifies every file on the node and switches `apps/<model>/current` atomically, and
`rollback` switches it back; loading from there (instead of shipping bytes from the head)
makes what a node serves exactly what its active version holds. The sha256 from the bundle
manifest is checked again at load, so a file changed after the push is refused, not served.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import ModelError

#: set by the node's Ray worker service (edgekit.node.raynode) to the expanded deploy root
ROOT_ENV = "EDGEKIT_NODE_ROOT"


@dataclass(frozen=True)
class NodeFile:
    """A model file on the worker's node: apps/<app>/current/<relpath> under the deploy root."""

    app: str
    relpath: str
    sha256: str


def read_verified(ref: NodeFile, node: str) -> bytes:
    root = os.environ.get(ROOT_ENV)
    if not root:
        raise ModelError(f"{ROOT_ENV} is not set: this Ray node was not started by edgekit deploy",
                         where=f"node {node}")
    path = Path(root) / "apps" / ref.app / "current" / ref.relpath
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read deployed model file: {exc.strerror}",
                         where=f"node {node}: {path}") from None
    digest = hashlib.sha256(data).hexdigest()
    if ref.sha256 and digest != ref.sha256:
        raise ModelError(f"sha256 mismatch (expected {ref.sha256[:12]}, got {digest[:12]})",
                         where=f"node {node}: {path}",
                         hint="redeploy: edgekit deploy re-sends files whose hash differs")
    return data
