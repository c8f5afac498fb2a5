"""The push step on one node: blobs in, version folder built, atomic switch, old ones pruned.

Until `versions.switch` the node's active version is untouched; a push that fails or is
interrupted anywhere before it leaves the node serving what it served before.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.deploy import transfer, versions
from edgekit.deploy.bundle import Bundle, manifest_entry
from edgekit.deploy.layout import NodeLayout
from edgekit.remote.ssh import Connection


@dataclass
class PushResult:
    version: str
    previous: str | None
    sent_bytes: int
    sent_files: int
    present_files: int
    resumed_files: int
    replaced_corrupt: int


def keep_list(history: list[str], version: str, keep_versions: int) -> list[str]:
    """The versions to keep on a node: the newest `keep_versions`, always `version`."""
    older = [v for v in history if v != version]
    return [*older[-(keep_versions - 1):], version] if keep_versions > 1 else [version]


def push_node(conn: Connection, layout: NodeLayout, bundle: Bundle, *, history: list[str],
              keep_versions: int, progress: transfer.Progress | None = None) -> PushResult:
    entries = [*bundle.files, manifest_entry(bundle)]
    blobs = {e.sha256: transfer.Blob(e.sha256, e.bytes, bundle.path / e.path) for e in entries}
    rep = transfer.ensure_blobs(conn, layout, list(blobs.values()), progress)
    versions.materialize(conn, layout, bundle.name, bundle.version, entries)
    previous = versions.active(conn, layout, bundle.name)
    versions.switch(conn, layout, bundle.name, bundle.version)
    keep = keep_list(history, bundle.version, keep_versions)
    if previous and previous not in keep:
        keep.insert(0, previous)
    versions.prune(conn, layout, bundle.name, keep)
    return PushResult(bundle.version, previous, rep.sent_bytes, rep.sent_files,
                      rep.present_files, rep.resumed_files, len(rep.replaced_corrupt))
