"""Bundle versions on a node: build a version folder from verified blobs, switch `current`
atomically, keep the last N versions, drop blobs no version uses.

A version folder is built under a temporary name from hard links to blobs (no second copy),
gets a `.complete` marker and is renamed into place; `current` is a symlink replaced with
rename(2) (`mv -T`), so a reader sees the old version or the new one, never a mix. Blobs are
reference-counted by the file system: a blob whose link count is 1 belongs to no version.
"""

from __future__ import annotations

import json
import shlex
from pathlib import PurePosixPath

from edgekit.deploy.bundle import FileEntry
from edgekit.deploy.layout import NodeLayout
from edgekit.errors import NodeError
from edgekit.remote.ssh import Connection

MARKER = ".complete"

_MATERIALIZE = r"""
set -eu
final="$1"; tmp="$1.tmp.$$"; blobs="$2"
# read the listing (stdin) whatever happens: a command that exits before its stdin is sent
# closes the channel under the sender ("Socket is closed")
listing=$(cat)
if [ -f "$final/.complete" ]; then exit 0; fi
rm -rf "$final"
mkdir -p "$tmp"
printf '%s\n' "$listing" | while IFS=' ' read -r sha rel; do
  [ -n "$sha" ] || continue
  mkdir -p "$tmp/$(dirname "$rel")"
  ln "$blobs/$sha" "$tmp/$rel"
done
touch "$tmp/.complete"
mv -T "$tmp" "$final"
"""

_SWITCH = r"""
set -eu
app="$1"; version="$2"
if [ ! -f "$app/versions/$version/.complete" ]; then
  echo "version $version is not complete" >&2; exit 3
fi
ln -sfn "versions/$version" "$app/.current.tmp"
mv -T "$app/.current.tmp" "$app/current"
"""

_PRUNE = r"""
set -eu
versions="$1"; blobs="$2"; shift 2
cd "$versions"
for d in * .*.tmp.*; do
  [ -e "$d" ] || continue
  keep=no
  for k in "$@"; do [ "$d" = "$k" ] && keep=yes; done
  [ "$keep" = yes ] || rm -rf -- "$d"
done
find "$blobs" -maxdepth 1 -type f -links 1 -delete
"""


def _sh(conn: Connection, script: str, *args: str, timeout_s: float = 120) -> str:
    cmd = "sh -c " + shlex.quote(script) + " sh " + " ".join(shlex.quote(a) for a in args)
    return conn.run(cmd, timeout_s=timeout_s, check=True).stdout


def materialize(conn: Connection, layout: NodeLayout, model: str, version: str,
                files: list[FileEntry]) -> None:
    """Build apps/<model>/versions/<version> from blobs (idempotent)."""
    materialize_dir(conn, layout, layout.version(model, version), files)


def materialize_dir(conn: Connection, layout: NodeLayout, target: str,
                    files: list[FileEntry]) -> None:
    """Build folder `target` of hard links to blobs; renamed into place when complete."""
    for f in files:
        if "\n" in f.path or " " in f.sha256 or not PurePosixPath(f.path).parts:
            raise NodeError(f"bad file entry {f.path!r}", where=f"node {conn.node.name}")
    listing = "".join(f"{f.sha256} {f.path}\n" for f in files)
    parent = str(PurePosixPath(target).parent)
    cmd = ("sh -c " + shlex.quote(_MATERIALIZE) + " sh " + shlex.quote(target) + " "
           + shlex.quote(layout.blobs))
    conn.run(f"mkdir -p {shlex.quote(parent)} && {cmd}", stdin=listing, timeout_s=120,
             check=True)


def switch(conn: Connection, layout: NodeLayout, model: str, version: str) -> None:
    """Make `version` the active one with one rename."""
    layout.version(model, version)  # refuses names that are not plain path components
    _sh(conn, _SWITCH, layout.app(model), version)


def active(conn: Connection, layout: NodeLayout, model: str) -> str | None:
    res = conn.run(f"readlink {shlex.quote(layout.current(model))}", timeout_s=30)
    target = res.stdout.strip()
    return PurePosixPath(target).name if res.ok and target else None


def listed(conn: Connection, layout: NodeLayout, model: str) -> list[str]:
    """Complete versions on the node, oldest first (by folder time)."""
    script = ('cd "$1" 2>/dev/null || exit 0; '
              'ls -1tr | while read -r d; do [ -f "$d/.complete" ] && echo "$d"; done; exit 0')
    return _sh(conn, script, layout.versions(model)).split()


def prune(conn: Connection, layout: NodeLayout, model: str, keep: list[str]) -> None:
    """Remove versions not in `keep` (and leftovers of interrupted builds); drop free blobs."""
    for v in keep:
        layout.version(model, v)
    conn.run(f"mkdir -p {shlex.quote(layout.versions(model))} {shlex.quote(layout.blobs)}",
             check=True)
    _sh(conn, _PRUNE, layout.versions(model), layout.blobs, *keep)


def write_info(conn: Connection, layout: NodeLayout, model: str, info: dict) -> None:
    """apps/<model>/deploy.json: what the host deployed (read by status on the node)."""
    path = f"{layout.app(model)}/deploy.json"
    conn.run(f"cat > {shlex.quote(path)}.tmp && mv {shlex.quote(path)}.tmp {shlex.quote(path)}",
             stdin=json.dumps(info, indent=2), check=True)


def boot_report(conn: Connection, layout: NodeLayout) -> dict[str, dict]:
    """What the node's last service start found about each model's `current`
    (edgekit.node.bootcheck: run/bootcheck.json): model -> {version, ok, problem,
    fell_back_to, error}; {} when it never ran or left nothing readable."""
    res = conn.run(f"cat {shlex.quote(layout.run)}/bootcheck.json 2>/dev/null", timeout_s=30)
    try:
        apps = json.loads(res.stdout).get("apps") if res.ok and res.stdout.strip() else {}
    except ValueError:
        return {}
    return {m: a for m, a in (apps or {}).items() if isinstance(a, dict)}
