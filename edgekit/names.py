"""What a name or a path may look like when it ends up in a node's file system, a remote shell
command, a systemd unit or a URL: node, model and version names, and deploy roots.

Values are checked where they enter (inventory lines, bundle manifests, CLI options), so a
hostile value is refused with its file and field named before anything runs. Remote commands
still quote every value (`shell_path`): the checks here are the first line, not the only one.
"""

from __future__ import annotations

import re
import shlex
from pathlib import PurePosixPath

#: node, model and bundle names: start with a letter or digit (never '-' or '.', so never an
#: option or '..'), then letters, digits, '.', '_', '-'; short enough for a path component
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
NAME_RULE = "1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
#: a bundle version: the same, plus '+' (semver build metadata)
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,62}")
VERSION_RULE = "1-63 letters, digits, '.', '_', '+' or '-', starting with a letter or digit"
#: the Ray custom resource every edgekit node advertises (`edgekit-node-<name>`, 1 unit):
#: workers and agents are pinned to a node by asking for a sliver of it
NODE_RESOURCE_PREFIX = "edgekit-node-"
#: one component of a path edgekit puts in a shell command or a unit file
_PART_RE = re.compile(r"[A-Za-z0-9_.+-]+")
PATH_RULE = "letters, digits, '.', '_', '+', '-' and '/' only, no '..' component"


def node_resource(node: str) -> str:
    """The Ray resource that pins work to `node`."""
    return NODE_RESOURCE_PREFIX + node


def resource_node(resource: str) -> str | None:
    """The node a Ray resource key stands for (None: not an edgekit node resource)."""
    return resource[len(NODE_RESOURCE_PREFIX):] if resource.startswith(NODE_RESOURCE_PREFIX) \
        else None


def is_name(value: object) -> bool:
    return isinstance(value, str) and NAME_RE.fullmatch(value) is not None


def is_version(value: object) -> bool:
    return isinstance(value, str) and VERSION_RE.fullmatch(value) is not None


def safe_parts(path: str) -> bool:
    """Every component of a '/'-separated path is plain (no '..', '.', spaces, quotes, '$')."""
    parts = [p for p in path.split("/") if p]
    return bool(parts) and all(_PART_RE.fullmatch(p) and p not in (".", "..") for p in parts)


def root_problem(root: str) -> str | None:
    """Why `root` cannot be a deploy root as written in an inventory (None: it can).

    Allowed: an absolute path, '~' or '~/...' (the node user's home), made of plain parts."""
    if root == "~":
        return None
    if root.startswith("~/"):
        rest = root[2:]
    elif root.startswith("/"):
        rest = root[1:]
    else:
        return "must be an absolute path or ~/..."
    if not safe_parts(rest):
        return PATH_RULE
    return None


def expanded_root_problem(root: str) -> str | None:
    """Why an expanded root (as the node reported it) cannot be used (None: it can)."""
    if not root.startswith("/") or not safe_parts(root[1:]):
        return f"must be an absolute path of {PATH_RULE}"
    return None


def shell_path(path: str) -> str:
    """`path` as a shell word: '~' and '~/rest' become "$HOME" and "$HOME"/'rest' (the rest
    quoted, so it is never split or expanded); anything else is quoted whole."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        rest = path[2:].rstrip("/")
        return '"$HOME"/' + shlex.quote(rest) if rest else '"$HOME"'
    return shlex.quote(path)


def confined(root: str, path: str) -> bool:
    """`path` lies strictly inside `root` once '.' and '..' are resolved (lexically)."""
    base = PurePosixPath(_normal(root))
    return PurePosixPath(_normal(path)).is_relative_to(base) and _normal(path) != str(base)


def _normal(path: str) -> str:
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
        else:
            out.append(part)
    return "/" + "/".join(out)
