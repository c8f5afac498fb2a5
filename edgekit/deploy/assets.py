"""Files from the top-level deploy/ folder (what gets installed on a node): systemd unit
templates, the bootstrap script, the node requirements. Read from the source checkout the
host runs from (the same checkout edgekit's node wheel is built from)."""

from __future__ import annotations

from pathlib import Path
from string import Template

import edgekit
from edgekit.errors import InputError


def source_root() -> Path:
    """The edgekit checkout the host runs from (where pyproject.toml and deploy/ are)."""
    root = Path(edgekit.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise InputError("edgekit is not installed from a source checkout; cannot build its "
                         "wheel for the nodes", where=str(root))
    return root


def folder() -> Path:
    path = source_root() / "deploy"
    if not path.is_dir():
        raise InputError("deploy/ folder missing from the edgekit checkout", where=str(path))
    return path


def text(name: str) -> str:
    return (folder() / name).read_text()


def node_requirements() -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in text("requirements-node.txt").splitlines())
    return [line for line in lines if line]


def render_unit(service: str, **values: str) -> str:
    """systemd/edgekit-<service>.service with ${python}, ${root}, ${node}, ${token_path}
    filled in ('%' doubled: systemd would read it as a specifier)."""
    escaped = {k: v.replace("%", "%%") for k, v in values.items()}
    return Template(text(f"systemd/edgekit-{service}.service")).substitute(escaped)
