"""The first (and, for a deploy that changes nothing, the only) SSH round trip to a node.

One `sh -s` carries the node probe (edgekit.remote.probe: is the node fit?) and a survey of
what is deployed there: the expanded deploy root, the runtime's fingerprint, the active
version, the sha256 of every bundle blob the node already holds (hashed on the node, so a
corrupted file is seen), the sha256 of the files the services are started from (systemd user
units included) and whether those units are active and enabled. The host compares that with
what it wants and skips every step already in place.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from edgekit.deploy.layout import SERVICES, UNIT_DIR, unit_name
from edgekit.errors import NodeError
from edgekit.inventory import Node
from edgekit.names import expanded_root_problem, shell_path
from edgekit.remote.probe import NodeReport, judge, parse_probe, probe_script
from edgekit.remote.ssh import Connection

MARK = "@@edgekit-survey@@"

#: present while a deploy writes the services' files and restarts them; one left behind (the
#: deploy was killed in between) means the running services may predate the files
PENDING_FILE = "run/services-pending"
#: files the services run from, relative to the root (compared by sha256 with what is wanted)
SERVICE_FILES = ("run/ray.json", "services/ray-worker.json", "services/agent.json",
                 "secrets/ray-token", PENDING_FILE)
UNITS = " ".join(unit_name(s) for s in SERVICES)

_SURVEY = r"""
echo "__MARK__"
root=__ROOT__
printf 'root=%s\n' "$root"
printf 'home=%s\n' "$HOME"
if [ -f "$HOME/__UNIT_DIR__/__FIRST_UNIT__" ]; then
  printf 'units=%s\n' "$(systemctl --user is-active __UNITS__ 2>/dev/null | tr '\n' ' ')\
$(systemctl --user is-enabled __UNITS__ 2>/dev/null | tr '\n' ' ')"
fi
printf 'python=%s\n' "$(command -v __PYTHON__ || true)"
printf 'fingerprint=%s\n' "$(cat "$root/runtime/.edgekit-fingerprint" 2>/dev/null)"
printf 'active=%s\n' "$(readlink "$root/apps/$1/current" 2>/dev/null)"
[ -f "$root/apps/$1/versions/$2/.complete" ] && echo complete=yes
pid=$(cat "$root/run/supervisor.pid" 2>/dev/null)
[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo supervisor=yes
shift 2
cd "$root" 2>/dev/null || exit 0
for f in "$@"; do [ -f "$f" ] && sha256sum -- "$f"; done
for u in __UNITS__; do f="$HOME/__UNIT_DIR__/$u"; [ -f "$f" ] && sha256sum -- "$f"; done
exit 0
"""


@dataclass
class Survey:
    root: str = ""
    python: str = ""
    fingerprint: str = ""
    active: str = ""  # version `current` points at ("" when none)
    complete: bool = False  # the wanted version's folder is complete
    supervisor: bool = False  # edgekit's supervisor runs (no-systemd nodes)
    home: str = ""
    units: list[str] = field(default_factory=list)  # is-active per unit, then is-enabled
    hashes: dict[str, str] = field(default_factory=dict)  # path under root -> sha256


def script(root: str, python: str, model: str, version: str, blobs: list[str]) -> str:
    """The survey part (runs after the probe in the same shell)."""
    root_expr = shell_path(root)  # "$HOME"/'rest': expanded, never split or run
    files = [f"blobs/{s}" for s in blobs] + list(SERVICE_FILES)
    body = (_SURVEY.replace("__MARK__", MARK).replace("__ROOT__", root_expr)
            .replace("__PYTHON__", shlex.quote(python)).replace("__UNIT_DIR__", UNIT_DIR)
            .replace("__FIRST_UNIT__", unit_name(SERVICES[0])).replace("__UNITS__", UNITS))
    args = " ".join(shlex.quote(a) for a in [model, version, *files])
    # run as a function so its positional arguments and `exit` stay inside it
    return "edgekit_survey() {\n" + body + "\n}\nedgekit_survey " + args + "\n"


def parse(text: str) -> Survey:
    sv = Survey()
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ("root", "python", "fingerprint", "active", "home"):
            setattr(sv, key, value.strip())
        elif sep and key == "units":
            sv.units = value.split()
        elif line in ("complete=yes", "supervisor=yes"):
            setattr(sv, line.split("=")[0], True)
        elif "  " in line:
            digest, _, path = line.partition("  ")
            sv.hashes[path.strip()] = digest.strip()
    sv.root = sv.root.rstrip("/")
    sv.active = sv.active.rsplit("/", 1)[-1]
    return sv


def check_and_survey(conn: Connection, model: str, version: str,
                     blobs: list[str]) -> tuple[NodeReport, Survey]:
    """Probe the node and survey its deployment in one command."""
    node: Node = conn.node
    text = probe_script() + "\n" + script(node.root, node.python, model, version, blobs)
    out = conn.run("sh -s", stdin=text, timeout_s=120, check=True).stdout
    probe_text, _, survey_text = out.partition(MARK)
    seen = parse(survey_text)
    # the root goes into unit files and commands: the node's $HOME must keep it plain too
    if survey_text and (why := expanded_root_problem(seen.root)):
        raise NodeError(f"deploy root {seen.root!r} (root={node.root}) {why}",
                        where=f"node {node.name}", hint="set root=/an/absolute/path in the "
                        "inventory")
    return judge(node, parse_probe(probe_text)), seen
