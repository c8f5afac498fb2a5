"""The push step on one node: blobs in, version folder built, atomic switch, old ones pruned.

Until `versions.switch` the node's active version is untouched; a push that fails or is
interrupted anywhere before it leaves the node serving what it served before.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.deploy import transfer, versions
from edgekit.deploy.bundle import manifest_entry
from edgekit.deploy.layout import NodeLayout
from edgekit.deploy.survey import Survey
from edgekit.model.bundle import Bundle
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


@dataclass(frozen=True)
class Retention:
    """Which versions a node keeps after a push: the newest `keep` of `history` (the
    deployment's versions, newest last), always the new one and the one it replaces."""

    history: list[str]
    keep: int


def push_node(conn: Connection, layout: NodeLayout, bundle: Bundle, retention: Retention,
              progress: transfer.Progress | None = None,
              seen: Survey | None = None) -> PushResult:
    """`seen`: the node's survey from this deploy's first round trip (blob hashes, active
    version); when it shows the version complete, active and every blob intact, nothing
    else is sent or run."""
    entries = [*bundle.files, manifest_entry(bundle)]
    blobs = {e.sha256: transfer.Blob(e.sha256, e.bytes, bundle.path / e.path) for e in entries}
    known = None
    if seen is not None:
        known = {s: seen.hashes[f"blobs/{s}"] for s in blobs if f"blobs/{s}" in seen.hashes}
    rep = transfer.ensure_blobs(conn, layout, list(blobs.values()), progress, known)
    if seen is not None and seen.complete and seen.active == bundle.version:
        # the version is in place; a corrupted blob was rewritten in place (same inode), which
        # repaired the version folder that links it
        return PushResult(bundle.version, bundle.version, rep.sent_bytes, rep.sent_files,
                          rep.present_files, rep.resumed_files, len(rep.replaced_corrupt))
    versions.materialize(conn, layout, bundle.name, bundle.version, entries)
    previous = versions.active(conn, layout, bundle.name)
    versions.switch(conn, layout, bundle.name, bundle.version)
    keep = keep_list(retention.history, bundle.version, retention.keep)
    if previous and previous not in keep:
        keep.insert(0, previous)
    versions.prune(conn, layout, bundle.name, keep)
    return PushResult(bundle.version, previous, rep.sent_bytes, rep.sent_files,
                      rep.present_files, rep.resumed_files, len(rep.replaced_corrupt))
