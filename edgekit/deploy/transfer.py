"""Content-addressed upload of files into a node's blob store over SFTP.

A file whose sha256 is already a blob on the node is not sent. An upload goes to
blobs/.partial/<sha256> and resumes from that file's size next time (a lost link or a killed
deploy costs only what was not sent yet). Every blob, old or new, is hashed on the node with
coreutils' sha256sum before use, so a corrupted file is found and sent again; only files
whose hash matches are renamed into the store.
"""

from __future__ import annotations

import contextlib
import shlex
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.deploy.layout import NodeLayout
from edgekit.errors import NodeError
from edgekit.remote.ssh import Connection

CHUNK_BYTES = 1 << 20
Progress = Callable[[int], None]  # bytes just sent


class DiskFullError(NodeError):
    """The node's deploy root has no room for the files to send."""


@dataclass(frozen=True)
class Blob:
    sha256: str
    bytes: int
    source: Path  # on the host


@dataclass
class TransferReport:
    sent_bytes: int = 0
    sent_files: int = 0
    present_files: int = 0
    resumed_files: int = 0
    replaced_corrupt: list[str] = field(default_factory=list)


def _listing(sftp, folder: str) -> dict[str, int]:
    try:
        return {a.filename: a.st_size or 0 for a in sftp.listdir_attr(folder)
                if a.st_mode is not None and stat.S_ISREG(a.st_mode)}
    except FileNotFoundError:
        return {}


def free_bytes(conn: Connection, path: str) -> int | None:
    res = conn.run(f"df -Pk {shlex.quote(path)} | awk 'NR==2{{print $4}}'", timeout_s=30)
    text = res.stdout.strip()
    return int(text) * 1024 if text.isdigit() else None


def hash_on_node(conn: Connection, paths: list[str]) -> dict[str, str]:
    """path -> sha256 as the node computes it (missing files are left out)."""
    if not paths:
        return {}
    script = 'for f in "$@"; do [ -f "$f" ] && sha256sum -- "$f"; done; exit 0'
    res = conn.run(f"sh -c {shlex.quote(script)} sh " + " ".join(map(shlex.quote, paths)),
                   timeout_s=600, check=True)
    out: dict[str, str] = {}
    for line in res.stdout.splitlines():
        digest, _, name = line.partition("  ")
        out[name.strip()] = digest.strip()
    return out


def ensure_blobs(conn: Connection, layout: NodeLayout, blobs: list[Blob],
                 progress: Progress | None = None,
                 known: dict[str, str] | None = None) -> TransferReport:
    """Make every blob present and verified in the node's store; returns what was sent.

    `known`: sha256 -> hash the node just computed for the blobs it holds (the deploy's
    survey did that in its one round trip); without it the store is listed and hashed here.
    """
    rep = TransferReport()
    wanted = {b.sha256: b for b in blobs}
    if known is None:
        known = _stored_hashes(conn, layout, wanted)
    rep.replaced_corrupt = [s for s in wanted if s in known and known[s] != s]
    todo = [b for s, b in wanted.items() if known.get(s) != s]
    rep.present_files = len(wanted) - len(todo)
    if not todo:  # everything there and verified: no further command
        return rep
    conn.run(f"mkdir -p {shlex.quote(layout.partial)}", check=True)
    sftp = conn.sftp()
    try:
        partial = _listing(sftp, layout.partial)
        _check_room(conn, layout, todo, partial)
        for attempt in range(2):
            for b in todo:
                done = partial.get(b.sha256, 0) if attempt == 0 else 0
                if 0 < done <= b.bytes:
                    rep.resumed_files += 1
                rep.sent_bytes += _upload(sftp, conn, layout, b, done, progress)
                rep.sent_files += 1
            todo = _commit(conn, sftp, layout, todo, set(rep.replaced_corrupt))
            if not todo:
                break
        if todo:
            names = ", ".join(b.source.name for b in todo)
            raise NodeError(f"files still differ from their sha256 after two uploads: {names}",
                            where=f"node {conn.node.name}")
    finally:
        sftp.close()
    return rep


def _stored_hashes(conn: Connection, layout: NodeLayout,
                   wanted: dict[str, Blob]) -> dict[str, str]:
    """sha256 -> the node's hash of that blob, for the wanted blobs the node holds."""
    sftp = conn.sftp()
    try:
        present = _listing(sftp, layout.blobs)
    finally:
        sftp.close()
    stored = [s for s in wanted if s in present]
    hashes = hash_on_node(conn, [layout.blob(s) for s in stored])
    return {s: hashes.get(layout.blob(s), "") for s in stored}


def _check_room(conn: Connection, layout: NodeLayout, todo: list[Blob],
                partial: dict[str, int]) -> None:
    need = sum(b.bytes - min(partial.get(b.sha256, 0), b.bytes) for b in todo)
    free = free_bytes(conn, layout.blobs)
    if free is not None and need > free:
        remove_partials(conn, layout)
        raise DiskFullError(
            f"not enough disk space in {layout.root}: {need // 1024} KB to send, "
            f"{free // 1024} KB free; nothing was changed (the active version stays)",
            where=f"node {conn.node.name}",
        )


def _upload(sftp, conn: Connection, layout: NodeLayout, blob: Blob, offset: int,
            progress: Progress | None) -> int:
    target = f"{layout.partial}/{blob.sha256}"
    if offset > blob.bytes:
        offset = 0
    sent = 0
    try:
        with open(blob.source, "rb") as src, sftp.open(target, "ab" if offset else "wb") as dst:
            dst.set_pipelined(True)
            src.seek(offset)
            while chunk := src.read(CHUNK_BYTES):
                dst.write(chunk)
                sent += len(chunk)
                if progress:
                    progress(len(chunk))
    except OSError as exc:
        free = free_bytes(conn, layout.root)
        if free is not None and free < blob.bytes - offset - sent:
            remove_partials(conn, layout)
            raise DiskFullError(
                f"disk full while writing {blob.source.name} to {layout.root} ({exc}); "
                "partial files removed, the active version stays",
                where=f"node {conn.node.name}",
            ) from exc
        raise
    return sent


def _commit(conn: Connection, sftp, layout: NodeLayout, todo: list[Blob],
            corrupt: set[str]) -> list[Blob]:
    """Hash the uploads on the node; move good ones into the store, drop bad ones.

    A corrupted blob is rewritten in place (same inode), which repairs every version folder
    that hard-links it; a new blob is renamed into the store.
    """
    paths = {f"{layout.partial}/{b.sha256}": b for b in todo}
    hashes = hash_on_node(conn, list(paths))
    bad = []
    for path, b in paths.items():
        if hashes.get(path) == b.sha256 and b.sha256 in corrupt:
            q, blob = shlex.quote(path), shlex.quote(layout.blob(b.sha256))
            conn.run(f"cat {q} > {blob} && rm -f {q}", timeout_s=600, check=True)
        elif hashes.get(path) == b.sha256:
            sftp.posix_rename(path, layout.blob(b.sha256))
        else:
            with contextlib.suppress(FileNotFoundError):
                sftp.remove(path)
            bad.append(b)
    return bad


def remove_partials(conn: Connection, layout: NodeLayout) -> None:
    conn.run(f"rm -rf {shlex.quote(layout.partial)}", timeout_s=60)
