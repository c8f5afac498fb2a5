"""Optional per-node network (`cluster up --link 1gbit`): each node's sshd lives in its own
network namespace, reached from the host over a veth pair shaped with `tc netem` like a Pi's
Ethernet (rate and delay). Only addresses of namespaces made here are used: 10.237.S.0/24,
with S derived from the cluster id, one /30 per node.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess

from edgekit.errors import ClusterError, InputError
from edgekit.virtual.provision import run

NET = ipaddress.ip_network("10.237.0.0/16")
DELAY = "0.2ms"  # one switch hop on gigabit Ethernet


def parse_rate(text: str) -> str:
    """'1gbit', '100mbit' -> the same, validated for tc."""
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?(kbit|mbit|gbit)", text):
        raise InputError(f"bad --link {text!r}: a rate such as 1gbit or 100mbit")
    return text


def names(cluster_id: str, index: int) -> tuple[str, str, str]:
    """(namespace, host-side veth, node-side veth); interface names stay under 15 chars."""
    return f"ekv{cluster_id}-pi{index}", f"ekv{cluster_id}h{index}", f"ekv{cluster_id}n{index}"


def addresses(cluster_id: str, index: int) -> tuple[str, str]:
    """(host side, node side) of node `index` (1-based)."""
    subnet = int(cluster_id, 16) % 256
    base = 4 * (index - 1)
    if base + 2 > 255:
        raise InputError("--link supports at most 64 nodes")
    return f"10.237.{subnet}.{base + 1}", f"10.237.{subnet}.{base + 2}"


def subnet_in_use(cluster_id: str) -> bool:
    subnet = int(cluster_id, 16) % 256
    out = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    return f"10.237.{subnet}." in out


def create(cluster_id: str, index: int, rate: str) -> tuple[str, str]:
    """Make the namespace and its shaped link; returns the node's address and the shaper."""
    ns, host_if, node_if = names(cluster_id, index)
    host_ip, node_ip = addresses(cluster_id, index)
    where = f"netns {ns}"
    inside = ["ip", "netns", "exec", ns]
    for cmd in (
        ["ip", "netns", "add", ns],
        ["ip", "link", "add", host_if, "type", "veth", "peer", "name", node_if],
        ["ip", "link", "set", node_if, "netns", ns],
        ["ip", "addr", "add", f"{host_ip}/30", "dev", host_if],
        ["ip", "link", "set", host_if, "up"],
        [*inside, "ip", "addr", "add", f"{node_ip}/30", "dev", node_if],
        [*inside, "ip", "link", "set", node_if, "up"],
        [*inside, "ip", "link", "set", "lo", "up"],
    ):
        run(cmd, where=where)
    shaper = shape(["tc"], host_if, rate, where)
    shape([*inside, "tc"], node_if, rate, where)
    return node_ip, shaper


def shape(tc: list[str], dev: str, rate: str, where: str) -> str:
    """netem (rate and delay) where the kernel has it; else tbf (rate only) and say so."""
    netem = [*tc, "qdisc", "add", "dev", dev, "root", "netem", "rate", rate, "delay", DELAY]
    proc = subprocess.run(netem, capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        return f"netem rate {rate} delay {DELAY}"
    if "unknown" not in proc.stderr.lower():
        raise ClusterError(f"{' '.join(netem)} failed: {proc.stderr.strip()}", where=where)
    # this kernel lacks sch_netem: a token bucket still holds the rate (no added delay)
    run([*tc, "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst", "512kb",
         "latency", "50ms"], where=where)  # fmt: skip
    return f"tbf rate {rate} (no sch_netem in this kernel: no added delay)"


def remove(cluster_id: str, index: int) -> None:
    """Delete the namespace (its veth end goes with it, and so does the host end)."""
    ns, host_if, _ = names(cluster_id, index)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    if any(line.split()[0] == ns for line in listed.splitlines() if line.strip()):
        raise ClusterError("network namespace could not be removed", where=f"netns {ns}")


def enter(ns: str) -> list[str]:
    """Prefix that runs a command in the namespace's network only (mounts untouched, so the
    cgroup the command already joined and /sys stay as they are)."""
    return ["nsenter", f"--net=/run/netns/{ns}"]
