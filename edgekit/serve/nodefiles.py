"""Workers load the model files `edgekit deploy` pushed to their own node.

Deploy verifies every file on the node and switches `apps/<model>/current` atomically, and
`rollback` switches it back; loading from there (instead of shipping bytes from the head)
makes what a node serves exactly what its active version holds. The sha256 from the bundle
manifest is checked again at load, so a file changed after the push is refused, not served.

A worker of a known version reads `apps/<model>/versions/<version>/`, not `current`: during a
rolling update the new version's worker runs beside the old one on the same node, and a
deploy that switched `current` and was then interrupted must not make the old version's
worker, recreated after a reboot, read the new files (a sha256 mismatch, again and again).
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
    """A model file on the worker's node: apps/<app>/versions/<version>/<relpath> under the
    deploy root (apps/<app>/current/<relpath> when no version is given)."""

    app: str
    relpath: str
    sha256: str
    version: str = ""

    def path(self, root: str) -> Path:
        folder = ("versions", self.version) if self.version else ("current",)
        return Path(root, "apps", self.app, *folder, self.relpath)


def read_verified(ref: NodeFile, node: str) -> bytes:
    root = os.environ.get(ROOT_ENV)
    if not root:
        raise ModelError(f"{ROOT_ENV} is not set: this Ray node was not started by edgekit deploy",
                         where=f"node {node}")
    path = ref.path(root)
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
