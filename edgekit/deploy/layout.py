"""Where things live: the deploy root on a node, and the deployment folder on the host.

On a node everything is under one root (default ~/.edgekit, inventory `root=`):

    runtime/                  Python venv with edgekit's node part (kept by undeploy)
    runtime/.edgekit-fingerprint
    blobs/<sha256>            content-addressed bundle files (hard-linked into versions)
    blobs/.partial/<sha256>   an upload in progress (resumed by the next push)
    apps/<model>/versions/<v>/  one bundle version; apps/<model>/current -> versions/<v>
    secrets/ray-token         0600, written over SFTP
    services/<name>.json      what the supervisor runs (no systemd)
    run/                      supervisor state, pid files, Ray's temp dir (run/ray)
    logs/<service>.log

Outside the root, and only when needed: systemd user units in ~/.config/systemd/user/
(edgekit-*.service) where systemd runs, and a symlink /tmp/edgekit-<uid>/ray-<hash> -> run/ray
(in a 0700 folder of the node user) when the root's path is too long for Ray's Unix sockets
(108 bytes).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edgekit import names, settings
from edgekit.errors import InputError

UNIT_PREFIX = "edgekit-"
SERVICES = ("ray-worker", "agent")  # node services; the head adds "ray-head" and "api"
UNIT_DIR = ".config/systemd/user"  # systemd user units, under the node user's home


@dataclass(frozen=True)
class NodeLayout:
    """Absolute paths on one node (POSIX), from its expanded deploy root."""

    root: str

    def _p(self, *parts: str) -> str:
        path = str(PurePosixPath(self.root, *parts))
        if not names.confined(self.root, path):  # a guard: the names are checked first
            raise InputError(f"{path!r} is not inside the deploy root", where=self.root)
        return path

    def _named(self, model: str, version: str | None = None) -> None:
        """Model and version names become folders under apps/: plain names only, so a
        manifest named `../../x` can never make a prune or a rollback reach outside."""
        if not names.is_name(model):
            raise InputError(f"bad model name {model!r}: {names.NAME_RULE}",
                             where=f"deploy root {self.root}")
        if version is not None and not names.is_version(version):
            raise InputError(f"bad version {version!r}: {names.VERSION_RULE}",
                             where=f"deploy root {self.root}")

    @property
    def runtime(self) -> str:
        return self._p("runtime")

    @property
    def python(self) -> str:
        return self._p("runtime", "bin", "python")

    @property
    def fingerprint(self) -> str:
        return self._p("runtime", ".edgekit-fingerprint")

    @property
    def blobs(self) -> str:
        return self._p("blobs")

    @property
    def partial(self) -> str:
        return self._p("blobs", ".partial")

    def blob(self, sha256: str) -> str:
        return self._p("blobs", sha256)

    def app(self, model: str) -> str:
        self._named(model)
        return self._p("apps", model)

    def versions(self, model: str) -> str:
        self._named(model)
        return self._p("apps", model, "versions")

    def version(self, model: str, version: str) -> str:
        self._named(model, version)
        return self._p("apps", model, "versions", version)

    def current(self, model: str) -> str:
        self._named(model)
        return self._p("apps", model, "current")

    @property
    def secrets(self) -> str:
        return self._p("secrets")

    @property
    def ray_token(self) -> str:
        return self._p("secrets", "ray-token")

    @property
    def services(self) -> str:
        return self._p("services")

    @property
    def run(self) -> str:
        return self._p("run")

    @property
    def logs(self) -> str:
        return self._p("logs")

    def log(self, service: str) -> str:
        if not names.is_name(service):
            raise InputError(f"bad service name {service!r}: {names.NAME_RULE}")
        return self._p("logs", f"{service}.log")

    @property
    def wheelhouse(self) -> str:
        return self._p("wheelhouse")


def unit_name(service: str) -> str:
    return f"{UNIT_PREFIX}{service}.service"


def deployment_dir(inventory_path: Path, home: Path | None = None) -> Path:
    """Host folder for the deployment of one inventory (keyed by its absolute path)."""
    resolved = str(Path(inventory_path).resolve())
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(resolved).stem)[:32] or "inventory"
    digest = hashlib.sha256(resolved.encode()).hexdigest()[:8]
    return (home or settings.EDGEKIT_HOME) / "deploy" / f"{slug}-{digest}"


def wheelhouse_dir(home: Path | None = None) -> Path:
    return (home or settings.EDGEKIT_HOME) / "wheelhouse"
