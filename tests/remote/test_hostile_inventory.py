"""Shell metacharacters in every inventory field: refused at parse time with file:line and the
field named, or (free-text fields, and values that bypass the parser) never run on a node."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from remote_sshd import Sshd, trust

from edgekit import inventory
from edgekit.deploy import nodeops, survey
from edgekit.errors import InventoryError
from edgekit.names import shell_path
from edgekit.remote.probe import check_nodes
from edgekit.remote.ssh import Connection

PAYLOADS = [";touch${IFS}/tmp/x", "$(touch${IFS}/tmp/x)", "`touch${IFS}/tmp/x`", "a|b",
            "a&&b", "a'b", 'a"b', "a\\b", "a>b", "a<b", "a*b", "a?b", "a{b,c}"]
#: field -> how a payload is written into a line (bare "pi1" host unless the field is the host)
LINES = {
    "user": lambda p: f"u{p}@pi1",
    "host": lambda p: f"pi{p}",
    "port": lambda p: f"pi1:22{p}",
    "name": lambda p: f"pi1 name=n{p}",
    "role": lambda p: f"pi1 role=head{p}",
    "speed": lambda p: f"pi1 speed=1{p}",
    "ram": lambda p: f"pi1 ram=1G{p}",
    "root": lambda p: f"pi1 root=~/.edgekit{p}",
    "python": lambda p: f"pi1 python=python3{p}",
    "label": lambda p: f"pi1 cooling=fan{p}",
    "label.x": lambda p: f"pi1 label.rack=top{p}",
    "label key": lambda p: f"pi1 label.r{p}=top",
}
#: words each field's error must contain (the field named)
NAMED = {"user": "address", "host": "address", "port": "port", "name": "node name",
         "role": "role", "speed": "speed", "ram": "size", "root": "root", "python": "python",
         "label": "label 'cooling'", "label.x": "label 'rack'", "label key": "key"}


@pytest.mark.parametrize("field", sorted(LINES))
@pytest.mark.parametrize("payload", PAYLOADS)
def test_every_field_refuses_shell_payloads_at_parse_time(field: str, payload: str) -> None:
    text = "# shelf\npi0 name=ok\n" + LINES[field](payload) + "\n"
    with pytest.raises(InventoryError) as info:
        inventory.parse(text, "pis.txt")
    assert info.value.where == "pis.txt:3"
    assert NAMED[field] in info.value.message, info.value.message


@pytest.mark.parametrize("line", ["pi1 name=../../x", "pi1 root=~/../../x",
                                  "pi1 python=/usr/../../tmp/python3", "../../x"])
def test_traversal_is_refused_where_a_value_becomes_a_path(line: str) -> None:
    with pytest.raises(InventoryError) as info:
        inventory.parse(line, "pis.txt")
    assert info.value.where == "pis.txt:1"


@pytest.mark.parametrize("root", ["~/..", "~/a/../../etc", "/a/./b", "relative", "~user/x",
                                  "~/a%b", "/", "~/", "/a/b\\c", "~/a$HOME"])
def test_root_must_be_absolute_or_home_relative_and_plain(root: str) -> None:
    with pytest.raises(InventoryError, match="bad root") as info:
        inventory.parse(f"pi1 root={root}", "pis.txt")
    assert info.value.where == "pis.txt:1"


def test_plain_values_still_parse() -> None:
    inv = inventory.parse("pi_user@pi-1.local:2222 name=pi1 root=~/edge/kit-1.0 "
                          "python=/usr/bin/python3.11 label.shelf=top/2 cooling=fan\n"
                          "pi2 root=/srv/edgekit python=python3\n")
    pi1, pi2 = inv.nodes
    assert (pi1.user, pi1.host, pi1.root, pi1.python) == (
        "pi_user", "pi-1.local", "~/edge/kit-1.0", "/usr/bin/python3.11")
    assert pi1.labels == {"shelf": "top/2", "cooling": "fan"}
    assert pi2.root == "/srv/edgekit"
    assert inventory.parse("pi1 root=~").nodes[0].root == "~"


def test_key_is_free_text_and_never_reaches_a_shell(edgekit_home: Path, sshd: Sshd,
                                                    tmp_path: Path) -> None:
    """`key=` is a file on the host that paramiko reads: a payload there is a missing file."""
    marker = tmp_path / "pwned-key"
    n = inventory.parse(f"root@127.0.0.1:{sshd.port} name=pi1 "
                        f"key=~/id;touch${{IFS}}{marker}").nodes[0]
    trust(edgekit_home, sshd)
    [rep] = check_nodes([n])
    assert not rep.reachable
    assert not marker.exists()


def test_shell_path_expands_home_and_quotes_the_rest() -> None:
    assert shell_path("~") == '"$HOME"'
    assert shell_path("~/.edgekit") == '"$HOME"/.edgekit'
    assert shell_path("~/a;b") == "\"$HOME\"/'a;b'"
    assert shell_path("/srv/x y") == "'/srv/x y'"


def test_root_payload_never_runs_over_real_ssh(edgekit_home: Path, sshd: Sshd,
                                               tmp_path: Path) -> None:
    """The quoting alone (a Node built without the parser, as from an old state file): the
    survey and the root expansion run on a real sshd and the payload stays a string."""
    marker = tmp_path / "pwned"
    good = inventory.parse(f"root@127.0.0.1:{sshd.port} name=pi1 key={sshd.client_key}")
    root = f"~/.edgekit;touch${{IFS}}{marker};x=$(touch${{IFS}}{marker})"
    node = dataclasses.replace(good.nodes[0], root=root,
                               python=f"python3;touch${{IFS}}{marker}")
    trust(edgekit_home, sshd)
    with Connection(node) as conn:
        home = conn.run('printf %s "$HOME"', check=True).stdout
        text = survey.script(node.root, node.python, "m", "v1", [])
        seen = survey.parse(conn.run("sh -s", stdin=text, check=True).stdout
                            .partition(survey.MARK)[2])
        facts = nodeops.facts(conn, node.root, node.python)
    assert not marker.exists()
    assert seen.root == facts.root == f"{home}/{root[2:]}"  # one literal folder name
    assert seen.python == ""  # no such command
