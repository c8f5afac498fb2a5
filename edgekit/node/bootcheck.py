"""Before a node's Ray starts (at boot, or any restart of its service): is every deployed
model's `current` version intact on disk? One that is not falls back to the newest kept
version that is, once, with a clear line in the service's log and in `run/bootcheck.json`,
which `edgekit status` shows.

Why here: `current` is what a node comes back up with. A version whose files fail their
sha256 (a bad SD card sector, a file changed by hand) made every worker the API started on
that node die at load, and the API start another 2 s later, forever (seen: 14 times in 60 s
after a reboot, until a redeploy). A node must come back with something it can serve, or
say plainly why it cannot. Nothing here ever stops Ray from starting: the node's thermal
agent and any other model still run, and the next `edgekit deploy` repairs the files (it
re-hashes every blob) and switches `current` back.

Hashing a model file at every start would cost a Pi seconds per restart (Ray's backoff
restarts it often while the head is away), so a file's verdict is cached by its inode,
size, mtime and ctime (`run/bootcheck-cache.json`): any write to it changes them.

Standard library only: it runs in the node runtime before Ray, and in tests on the host.

    python -m edgekit.node.bootcheck ROOT [--json]
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from edgekit.model.bundle import sha256_file

REPORT_FILE = "bootcheck.json"
CACHE_FILE = "bootcheck-cache.json"
MANIFEST = "manifest.json"
COMPLETE = ".complete"


@dataclass
class AppCheck:
    """One model's `current` as found at start: `ok`, else what was wrong (`problem`) and
    the version `current` now points to instead (`fell_back_to`, "" when no kept version
    was intact: `error` says what to do)."""

    model: str
    version: str
    ok: bool
    problem: str = ""
    fell_back_to: str = ""
    error: str = ""


def _fingerprint(st: os.stat_result) -> list[int]:
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class Verifier:
    """sha256 checks of version folders, remembering each intact file by its stat."""

    def __init__(self, cache_path: Path):
        self.cache_path = cache_path
        try:
            self.cache: dict[str, list] = json.loads(cache_path.read_text())
        except (OSError, ValueError):
            self.cache = {}
        self.seen: dict[str, list] = {}

    def problem(self, folder: Path) -> str:
        """"" when every file the folder's manifest lists is there with its sha256; else
        the first thing wrong, naming the file."""
        if not (folder / COMPLETE).is_file():
            return f"{folder.name} is not a complete version folder"
        try:
            files = json.loads((folder / MANIFEST).read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"{folder / MANIFEST}: unreadable manifest ({exc})"
        for entry in files:
            path = folder / str(entry.get("path", ""))
            try:
                st = path.stat()
            except OSError as exc:
                return f"{path}: {exc.strerror}"
            key, want = str(path), str(entry.get("sha256", ""))
            if self.cache.get(key) == [*_fingerprint(st), want]:
                self.seen[key] = self.cache[key]
                continue
            got = sha256_file(path)
            if got != want:
                return f"{path}: sha256 mismatch (expected {want[:12]}, got {got[:12]})"
            self.seen[key] = [*_fingerprint(st), want]
        return ""

    def save(self) -> None:
        """Keep only the files checked this time (versions pruned since drop out)."""
        tmp = self.cache_path.with_name(self.cache_path.name + ".tmp")
        tmp.write_text(json.dumps(self.seen))
        tmp.replace(self.cache_path)


def _kept(app: Path, but: str) -> list[str]:
    """The app's other complete versions, newest first (by folder time, as deploy keeps them)."""
    folders = [d for d in (app / "versions").iterdir()
               if d.name != but and (d / COMPLETE).is_file()] if (app / "versions").is_dir() \
        else []
    return [d.name for d in sorted(folders, key=lambda d: d.stat().st_mtime, reverse=True)]


def switch(app: Path, version: str) -> None:
    """Point `current` at versions/<version> with one rename (as edgekit.deploy.versions)."""
    tmp = app / ".current.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(f"versions/{version}")
    tmp.replace(app / "current")


def check_app(app: Path, verifier: Verifier) -> AppCheck | None:
    """One model's `current`; None when it has none (nothing deployed yet)."""
    cur = app / "current"
    if not cur.is_symlink():
        return None
    version = Path(os.readlink(cur)).name
    problem = verifier.problem(app / "versions" / version)
    if not problem:
        return AppCheck(app.name, version, True)
    for other in _kept(app, version):
        if not verifier.problem(app / "versions" / other):
            switch(app, other)
            return AppCheck(app.name, version, False, problem, other)
    return AppCheck(app.name, version, False, problem, "",
                    "no intact version is kept on this node: run `edgekit deploy` again "
                    "(it re-sends every file whose hash differs)")


def check_root(root: Path) -> list[AppCheck]:
    """Every app under `root`/apps; writes run/bootcheck.json (what `edgekit status` reads)
    and logs one line per app that was not intact."""
    apps = root / "apps"
    run = root / "run"
    if not apps.is_dir():
        return []
    run.mkdir(parents=True, exist_ok=True)
    verifier = Verifier(run / CACHE_FILE)
    found = [c for c in (check_app(a, verifier) for a in sorted(apps.iterdir()) if a.is_dir())
             if c is not None]
    verifier.save()
    report = {"apps": {c.model: asdict(c) for c in found}}
    tmp = run / (REPORT_FILE + ".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(run / REPORT_FILE)
    for c in found:
        if not c.ok:
            print(f"edgekit bootcheck: {describe(c)}", file=sys.stderr, flush=True)
    return found


def describe(c: AppCheck) -> str:
    """One plain sentence about a model's `current` that was not intact."""
    head = f"model {c.model} version {c.version[:12]} is damaged on disk ({c.problem})"
    if c.fell_back_to:
        return (f"{head}: fell back to version {c.fell_back_to[:12]}; run `edgekit deploy` "
                f"again to repair it")
    return f"{head}: {c.error}"


def safe_check(root: str) -> None:
    """check_root for raynode: a failure here is logged, never stops Ray from starting."""
    try:
        check_root(Path(root))
    except Exception as exc:  # a read-only or odd root must not keep the node out of Ray
        print(f"edgekit bootcheck: could not check {root}: {type(exc).__name__}: {exc}",
              file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print("usage: python -m edgekit.node.bootcheck ROOT [--json]", file=sys.stderr)
        return 2
    found = check_root(Path(argv[0]))
    if "--json" in argv[1:]:
        print(json.dumps([asdict(c) for c in found]))
    return 0 if all(c.ok or c.fell_back_to for c in found) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
