"""Node side of provisioning: a venv at <root>/runtime-<fingerprint>, switched in by renaming
the `runtime` symlink once pip has succeeded, so a failed install never replaces a working one.

Skipped when the node's `runtime` already points at the wanted fingerprint. Wheels (edgekit's
own, plus every dependency with --offline) travel through the content-addressed blob store,
so an interrupted transfer resumes and nothing is sent twice.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from edgekit.deploy import assets, transfer, versions
from edgekit.deploy.bundle import FileEntry, sha256_file
from edgekit.deploy.layout import NodeLayout
from edgekit.remote.ssh import Connection

PIP_TIMEOUT_S = 1800.0  # a Pi 4 unpacks Ray's wheel in minutes


@dataclass(frozen=True)
class RuntimeSpec:
    """The runtime a node should have: its fingerprint, the node's python, the packages and
    the wheels that install them (with `offline`, every dependency's wheel)."""

    fingerprint: str
    python: str
    requirements: list[str]
    wheels: list[Path]
    offline: bool


@dataclass
class ProvisionResult:
    fingerprint: str
    skipped: bool
    sent_bytes: int = 0


def current_fingerprint(conn: Connection, layout: NodeLayout) -> str:
    res = conn.run(f"cat {shlex.quote(layout.fingerprint)} 2>/dev/null", timeout_s=30)
    return res.stdout.strip()


def provision(conn: Connection, layout: NodeLayout, want: RuntimeSpec,
              progress: transfer.Progress | None = None,
              current: str | None = None) -> ProvisionResult:
    """Make the node's runtime match `want.fingerprint` (no-op when it already does).

    `current`: the node's runtime fingerprint if the caller has just read it."""
    fingerprint, wheels = want.fingerprint, want.wheels
    old = current_fingerprint(conn, layout) if current is None else current
    if old == fingerprint:
        return ProvisionResult(fingerprint, skipped=True)
    entries = [FileEntry(w.name, w.stat().st_size, sha256_file(w)) for w in wheels]
    blobs = [transfer.Blob(e.sha256, e.bytes, w) for e, w in zip(entries, wheels, strict=True)]
    rep = transfer.ensure_blobs(conn, layout, blobs, progress)
    house = f"{layout.wheelhouse}/{fingerprint}"
    versions.materialize_dir(conn, layout, house, entries)
    args = [layout.root, fingerprint, want.python, house,
            "offline" if want.offline else "index", old or "none", *want.requirements]
    script = assets.text("bootstrap.sh")
    cmd = "sh -c " + shlex.quote(script) + " sh " + " ".join(shlex.quote(a) for a in args)
    try:
        conn.run(cmd, timeout_s=PIP_TIMEOUT_S, check=True)
    finally:  # the wheels are not needed once installed (or if pip failed)
        conn.run(f"rm -rf {shlex.quote(layout.wheelhouse)} && "
                 f"find {shlex.quote(layout.blobs)} -maxdepth 1 -type f -links 1 -delete",
                 timeout_s=120)
    return ProvisionResult(fingerprint, skipped=False, sent_bytes=rep.sent_bytes)
