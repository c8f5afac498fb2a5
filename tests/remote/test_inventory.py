from pathlib import Path

import pytest

from edgekit import inventory
from edgekit.errors import InventoryError
from edgekit.inventory import parse
from edgekit.remote.sshconfig import resolve

GOOD = """\
# my shelf
pi@192.168.1.21 name=pi1 role=head cooling=fan

pi2.local:2222 key=~/.ssh/pi_ed25519 label.rack=top speed=1.6 ram=3.5G  # trailing comment
[fe80::1]:22 name=pi3
"""


def test_parses_nodes_attributes_and_labels() -> None:
    inv = parse(GOOD, "pis.txt")
    assert [n.name for n in inv] == ["pi1", "pi2.local", "pi3"]
    pi1, pi2, pi3 = inv.nodes
    assert (pi1.user, pi1.host, pi1.port, pi1.role) == ("pi", "192.168.1.21", None, "head")
    assert pi1.labels == {"cooling": "fan"}
    assert (pi2.port, pi2.key, pi2.speed) == (2222, "~/.ssh/pi_ed25519", 1.6)
    assert pi2.labels == {"rack": "top"}
    assert pi2.ram_bytes == int(3.5 * 1024**3)
    assert pi3.host == "fe80::1" and pi3.address == "[fe80::1]:22"
    assert inv.head is pi1
    assert parse(inventory.render(inv.nodes)).nodes[1].labels == {"rack": "top"}


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("pi1\npi@@host", 2, "malformed address"),
        ("pi1:0", 1, "bad port '0'"),
        ("pi1:70000", 1, "bad port '70000'"),
        ("pi1:ssh", 1, "bad port 'ssh'"),
        ("pi1 nmae=x", 1, "did you mean 'name'"),
        ("pi1 colour=red", 1, "unknown key 'colour'"),
        ("pi1 name", 1, "expected key=value"),
        ("pi1 name=a\npi2 name=a", 2, "duplicate node name 'a' (first at f.txt:1)"),
        ("pi1 name=a\n\n# x\npi1 name=b", 4, "duplicate host"),
        ("pi1 role=boss", 1, "bad role"),
        ("pi1 role=head\npi2 role=head", 2, "more than one node has role=head"),
        ("pi1 speed=-2", 1, "bad speed"),
        ("pi1 ram=lots", 1, "not a size"),
        ("pi1 name=a/b", 1, "bad node name"),
        ("pi1 name=a name=b", 1, "given twice"),
    ],
)
def test_errors_name_file_and_line(text: str, line: int, needle: str) -> None:
    with pytest.raises(InventoryError) as info:
        parse(text, "f.txt")
    assert info.value.where == f"f.txt:{line}"
    assert needle in info.value.message


def test_empty_inventory_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="lists no nodes"):
        parse("# nothing\n\n", "f.txt")
    with pytest.raises(InventoryError, match="not found"):
        inventory.load(tmp_path / "nope.txt")


def test_ssh_config_alias_is_honoured(tmp_path: Path) -> None:
    import paramiko

    cfg = paramiko.SSHConfig.from_text(
        "Host pi-a\n  HostName 10.0.0.5\n  User pi\n  Port 2200\n  IdentityFile ~/k1\n"
        "  ProxyJump bastion@jump.example:2022\n"
    )
    node = parse("pi-a name=a").nodes[0]
    target = resolve(node, cfg)
    assert (target.hostname, target.username, target.port) == ("10.0.0.5", "pi", 2200)
    assert target.key_filenames[0].endswith("/k1")
    assert [(j.hostname, j.username, j.port) for j in target.jumps] == [
        ("jump.example", "bastion", 2022)
    ]
    # the inventory's own values win over ~/.ssh/config
    override = resolve(parse("root@pi-a:22 key=/x").nodes[0], cfg)
    assert (override.username, override.port, override.key_filenames[0]) == ("root", 22, "/x")
