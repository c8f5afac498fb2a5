"""Probe nodes over SSH and decide whether each is fit to serve.

The probe is a small POSIX shell script (probe.sh) sent on stdin, so it needs nothing on the
node but sh and coreutils, works before edgekit is installed there, and reads the same files a
Raspberry Pi has (under $EDGEKIT_SYSROOT, see docs/NODE-INTERFACE.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

from edgekit import settings
from edgekit.fleet import NodeOutcome
from edgekit.inventory import Node
from edgekit.node import stack
from edgekit.remote.ssh import Connection, Outcome, Pool

SIXTY_FOUR_BIT_ARCHES = {"aarch64", "arm64", "x86_64", "amd64"}
SIMD_FLAGS = ("asimd", "asimddp", "asimdhp", "i8mm", "sve")
MIN_PYTHON = (3, 11)
MIN_DISK_FREE_KB = 1024 * 1024  # 1 GiB for the runtime venv and two model versions
#: `systemctl --user is-system-running` answers meaning no usable user manager ("": no answer)
USER_MANAGER_DOWN = ("", "offline", "unknown")


@dataclass
class NodeReport(NodeOutcome):
    """Everything `nodes check` shows for one node: an edgekit.fleet.NodeOutcome (ok: ready
    to deploy to; kind: why not, unreachable's classified kind or "not-fit") with its facts."""

    address: str = ""
    reachable: bool = False
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    model: str = ""
    arch: str = ""
    cores: int | None = None
    simd: list[str] = field(default_factory=list)
    mem_total_mb: int | None = None
    mem_avail_mb: int | None = None
    disk_free_mb: int | None = None
    os: str = ""
    python: str = ""
    temp_c: float | None = None
    freq_mhz: int | None = None
    max_freq_mhz: int | None = None
    throttled: str = ""
    throttled_flags: list[str] = field(default_factory=list)
    native: str = ""  # kernel variant of the installed node runtime ("": none installed)
    native_problem: str = ""  # why that runtime has no native library
    onnxruntime: str = ""  # versions in the node runtime
    litert: str = ""
    systemd: bool = False  # services can run as systemd user units (see probe.sh)
    systemd_user: str = ""  # the user manager's state (running, degraded, ...)
    user: str = ""

    @property
    def name(self) -> str:
        return self.node

    @property
    def ready(self) -> bool:
        return self.ok

    def settle(self) -> None:
        """ok, step, detail and kind from the problems found (the verdict)."""
        self.step = "probe"
        if self.problems:
            self.fail("probe", "; ".join(self.problems),
                      self.kind or ("not-fit" if self.reachable else "unreachable"))
        else:
            self.ok, self.detail, self.kind = True, "", ""

    @property
    def verdict(self) -> str:
        if self.ready:
            return "ready"
        return "not ready: " + "; ".join(self.problems)

    def to_dict(self) -> dict[str, Any]:
        # name, ready and error_kind: the keys `nodes check --json` had before the fleet types
        return {**asdict(self), "name": self.node, "ready": self.ok,
                "error_kind": self.kind or None, "verdict": self.verdict}


THROTTLE_BITS = {
    0: "under-voltage",
    1: "arm-freq-capped",
    2: "throttled",
    3: "soft-temp-limit",
    16: "under-voltage-occurred",
    17: "arm-freq-capped-occurred",
    18: "throttled-occurred",
    19: "soft-temp-limit-occurred",
}


def decode_throttled(value: int) -> list[str]:
    return [name for bit, name in THROTTLE_BITS.items() if value & (1 << bit)]


def probe_script() -> str:
    return resources.files("edgekit.remote").joinpath("probe.sh").read_text(encoding="utf-8")


def parse_probe(text: str) -> dict[str, str]:
    facts: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            facts[key] = value.strip()
    return facts


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def judge(node: Node, facts: dict[str, str]) -> NodeReport:
    """Turn raw probe facts into a report with a verdict (pure; unit-tested)."""
    rep = NodeReport(node.name, address=node.address, reachable=True)
    rep.model = facts.get("model", "")
    rep.arch = facts.get("arch", "")
    rep.cores = _int(facts.get("cores"))
    features = facts.get("features", "").split()
    rep.simd = [f for f in SIMD_FLAGS if f in features]
    total, avail = _int(facts.get("mem_total_kb")), _int(facts.get("mem_avail_kb"))
    rep.mem_total_mb = total // 1024 if total else None
    rep.mem_avail_mb = avail // 1024 if avail else None
    disk = _int(facts.get("disk_free_kb"))
    rep.disk_free_mb = disk // 1024 if disk is not None else None
    rep.os, rep.python = facts.get("os", ""), facts.get("python", "")
    temp = _int(facts.get("temp_mc"))
    rep.temp_c = temp / 1000 if temp is not None else None
    freq, max_freq = _int(facts.get("cur_freq_khz")), _int(facts.get("max_freq_khz"))
    rep.freq_mhz = freq // 1000 if freq else None
    rep.max_freq_mhz = max_freq // 1000 if max_freq else None
    rep.throttled = facts.get("throttled", "")
    _software_facts(rep, facts)

    long_bit = facts.get("long_bit", "")
    if rep.arch not in SIXTY_FOUR_BIT_ARCHES or long_bit == "32":
        rep.problems.append(
            f"32-bit or unsupported OS ({rep.arch or 'unknown arch'}, {long_bit or '?'}-bit): "
            "Ray and edgekit need a 64-bit OS (64-bit Raspberry Pi OS)"
        )
    rep.problems += _cpu_problems(node, rep.arch, facts.get("features"), rep.warnings)
    if not rep.python:
        rep.problems.append("no python3 on the node")
    elif tuple(int(p) for p in rep.python.split(".")[:2]) < MIN_PYTHON:
        rep.problems.append(f"python {rep.python} is older than 3.11")
    if rep.mem_avail_mb is not None and rep.mem_avail_mb < settings.min_serving_ram_mb:
        rep.problems.append(
            f"only {rep.mem_avail_mb} MB RAM available (need {settings.min_serving_ram_mb} MB)"
        )
    if disk is not None and disk < MIN_DISK_FREE_KB:
        rep.problems.append(f"only {rep.disk_free_mb} MB disk free in home (need 1024 MB)")
    if rep.throttled:
        try:
            rep.throttled_flags = decode_throttled(int(rep.throttled, 16))
        except ValueError:
            rep.warnings.append(f"unreadable vcgencmd get_throttled output {rep.throttled!r}")
    if "under-voltage" in rep.throttled_flags:
        rep.warnings.append("under-voltage now: check the power supply (5 V / 3 A+)")
    if rep.temp_c is not None and rep.temp_c >= settings.throttle_temp_c:
        rep.warnings.append(f"hot: {rep.temp_c:.1f} °C (firmware throttles from 80 °C)")
    if facts.get("vcgencmd") == "no":
        rep.warnings.append("vcgencmd not found: throttle state unknown")
    if not rep.model:
        rep.warnings.append("no /proc/device-tree/model: not a Raspberry Pi?")
    rep.settle()
    return rep


def _software_facts(rep: NodeReport, facts: dict[str, str]) -> None:
    """Services (systemd user manager), and what the installed node runtime computes with:
    its kernel variant and runtime versions; the numpy fallback is a warning."""
    rep.systemd_user = facts.get("systemd_user", "")
    rep.systemd = facts.get("systemd") == "yes" and rep.systemd_user not in USER_MANAGER_DOWN
    if facts.get("systemd") == "yes" and not rep.systemd:
        rep.warnings.append("systemd runs but this user's systemd manager does not answer "
                            "(no XDG_RUNTIME_DIR? sshd without PAM?): services will run under "
                            "edgekit's supervisor")
    rep.user = facts.get("user", "")
    rep.native, rep.native_problem = facts.get("native", ""), facts.get("native_problem", "")
    rep.onnxruntime, rep.litert = facts.get("onnxruntime", ""), facts.get("litert", "")
    if rep.native == stack.FALLBACK:
        rep.warnings.append(stack.warning({"kernels": rep.native,
                                           "native_problem": rep.native_problem}))


def _cpu_problems(node: Node, arch: str, features: str | None, warnings: list[str]) -> list[str]:
    """What the node's CPU lacks for the runtime edgekit installs on its architecture.

    aarch64 needs asimd (Armv8-A Advanced SIMD, "NEON"): edgekit's library is compiled for
    armv8-a, whose code generation uses it everywhere (not only in the NEON kernels), and
    numpy's and ONNX Runtime's aarch64 wheels have it as their baseline too, so such a node
    would fail with SIGILL in every worker rather than merely run slower: refused, not warned.
    Every 64-bit Raspberry Pi (A53, A72, A76) has it. x86-64 needs nothing beyond the
    baseline (AVX2 is chosen at run time). An unreadable feature list is only a warning."""
    if arch not in ("aarch64", "arm64"):
        return []
    flags = (features or "").split()
    if not flags:
        warnings.append("no Features line in /proc/cpuinfo: cannot confirm the CPU has asimd")
        return []
    if "asimd" in flags:
        return []
    return [f"{node.name}: the CPU lacks asimd (Armv8-A Advanced SIMD / NEON), which edgekit's "
            "aarch64 native library, numpy and ONNX Runtime need"]


def probe_connection(conn: Connection) -> dict[str, str]:
    result = conn.run("sh -s", stdin=probe_script(), timeout_s=30, check=True)
    return parse_probe(result.stdout)


def _report(node: Node, outcome: Outcome[dict[str, str]]) -> NodeReport:
    if outcome.ok and outcome.value is not None:
        rep = judge(node, outcome.value)
    else:
        rep = NodeReport(node.name, address=node.address, reachable=False,
                         problems=[outcome.error or "unknown failure"], kind=outcome.kind)
        rep.settle()
    rep.seconds = round(outcome.seconds, 3)
    return rep


def check_nodes(nodes: list[Node], *, accept_new_host_keys: bool = False,
                connect_timeout_s: float = settings.ssh_connect_timeout_s,
                on_done=None) -> list[NodeReport]:  # type: ignore[no-untyped-def]
    """Probe every node in parallel; one report per node, in inventory order."""
    by_name = {n.name: n for n in nodes}
    with Pool(nodes, accept_new_host_keys=accept_new_host_keys,
              connect_timeout_s=connect_timeout_s) as pool:
        def done(outcome: Outcome[dict[str, str]]) -> None:
            if on_done:
                on_done(_report(by_name[outcome.node], outcome))

        outcomes = pool.each(probe_connection, on_done=done)
    return [_report(n, outcomes[n.name]) for n in nodes]
