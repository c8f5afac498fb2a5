"""`edgekit cluster up|down|status|heat|reboot`: the virtual Raspberry Pi cluster here."""

from __future__ import annotations

import click

from edgekit.cli._output import console, emit_json, err_console, json_option
from edgekit.errors import InputError

BOARD_CHOICES = ("pi4", "pi5")
COOLING_CHOICES = ("none", "heatsink", "fan")
INIT_CHOICES = ("systemd", "none")
ARCH_CHOICES = ("x86_64", "aarch64")


def _per_node(values: tuple[str, ...], n: int, default: list[str], what: str,
              choices: tuple[str, ...]) -> list[str]:  # fmt: skip
    """Repeatable or comma-separated values, one per node; fewer values are cycled."""
    items = [v.strip() for raw in values for v in raw.split(",") if v.strip()]
    if not items:
        return [default[i % len(default)] for i in range(n)]
    for item in items:
        if item not in choices:
            raise InputError(f"bad --{what} {item!r}: use one of {', '.join(choices)}")
    if len(items) > n:
        raise InputError(f"{len(items)} --{what} values given for {n} nodes")
    return [items[i % len(items)] for i in range(n)]


@click.group()
def cluster() -> None:
    """Emulated Raspberry Pi nodes on this machine (needs root): sshd, Pi files, heat."""


@cluster.command()
@click.option("--nodes", "n", type=click.IntRange(1, 16), default=3, show_default=True)
@click.option("--board", "board", multiple=True,
              help="pi4 or pi5, per node (repeat or comma list; cycled). Default pi4,pi5.")
@click.option("--cooling", "cooling", multiple=True,
              help="none, heatsink or fan, per node (repeat or comma list). Default heatsink.")
@click.option("--ram", default=None, help="RAM per node, e.g. 4G (default: 4G).")
@click.option("--ambient", type=float, default=None, help="Room temperature in °C (default 25).")
@click.option("--linux32", "linux32", multiple=True, metavar="NODE",
              help="Make NODE (e.g. pi3) report a 32-bit machine (uname -m: i686).")
@click.option("--init", "init", multiple=True,
              help="systemd (a systemd user manager, as on a Pi) or none (deploy uses edgekit's "
                   "supervisor), per node (repeat or comma list). Default: systemd if available.")
@click.option("--arch", "arch", multiple=True,
              help="x86_64 (this machine's userland) or aarch64 (an arm64 Debian userland "
                   "under qemu-user, as a Pi runs: Cortex-A72 for pi4, A76 for pi5), per node "
                   "(repeat or comma list). Default x86_64.")
@click.option("--cpu-budget", type=float, default=None,
              help="Cores all nodes may use together (default 0.9 x this machine's cores).")
@click.option("--link", default=None, metavar="RATE",
              help="Give each node its own network namespace behind a link shaped to RATE "
                   "(e.g. 1gbit, with 0.2 ms delay); nodes then listen on 10.237.S.x:22.")
@json_option
# reason: a click command takes one parameter per option
def up(n: int, board: tuple[str, ...], cooling: tuple[str, ...], ram: str | None,
       ambient: float | None, linux32: tuple[str, ...], init: tuple[str, ...],
       arch: tuple[str, ...], cpu_budget: float | None, link: str | None,
       as_json: bool) -> None:  # fmt: skip
    """Start N virtual nodes and write their inventory."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from edgekit.inventory import parse_size
    from edgekit.virtual import boards
    from edgekit.virtual.cluster import NodeSpec, VirtualCluster

    boards_per = _per_node(board, n, ["pi4", "pi5"], "board", BOARD_CHOICES)
    cooling_per = _per_node(cooling, n, ["heatsink"], "cooling", COOLING_CHOICES)
    init_per = _per_node(init, n, [""], "init", INIT_CHOICES)
    arch_per = _per_node(arch, n, ["x86_64"], "arch", ARCH_CHOICES)
    try:
        ram_bytes = parse_size(ram) if ram else None
    except ValueError as exc:
        raise InputError(str(exc)) from None
    names = {f"pi{i + 1}" for i in range(n)}
    for name in linux32:
        if name not in names:
            raise InputError(f"--linux32 {name!r}: no such node (nodes: pi1..pi{n})")
    specs = [
        NodeSpec(
            board=boards_per[i],
            cooling=cooling_per[i],
            ambient_c=boards.ambient_c if ambient is None else ambient,
            ram_bytes=ram_bytes,
            linux32=f"pi{i + 1}" in linux32,
            init=init_per[i] or None,
            arch=arch_per[i],
        )
        for i in range(n)
    ]
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err_console,
                  transient=True) as progress:  # fmt: skip
        task = progress.add_task("starting virtual cluster", total=None)
        vc = VirtualCluster.up(
            specs, budget_cores=cpu_budget, link=link,
            progress=lambda msg: progress.update(task, description=msg),
        )  # fmt: skip
    if as_json:
        emit_json({"name": vc.name, "inventory": vc.inventory_path, "nodes": vc.status()})
        return
    _table(vc.status(), f"virtual cluster {vc.name}")
    console.print(f"inventory: [bold]{vc.inventory_path}[/]")
    console.print(f"try: edgekit nodes check --nodes {vc.inventory_path}")


@cluster.command()
@json_option
def down(as_json: bool) -> None:
    """Stop every node's processes; remove users, cgroups, known_hosts lines and files."""
    from edgekit.virtual.cluster import down as do_down

    with err_console.status("removing virtual cluster"):
        done = do_down()
    if as_json:
        emit_json({"removed": bool(done), "steps": done})
    elif done:
        for line in done:
            console.print(f"  {line}")
    else:
        console.print("no virtual cluster here: nothing to do")


@cluster.command()
@json_option
def status(as_json: bool) -> None:
    """Per node: user, port, board, cooling, temperature, clock, throttle bits, CPU cap."""
    from edgekit.errors import ClusterError
    from edgekit.virtual.cluster import VirtualCluster

    vc = VirtualCluster.current()
    if vc is None:
        raise ClusterError("no virtual cluster is running", hint="edgekit cluster up --nodes 3")
    rows = vc.status()
    if as_json:
        emit_json({"name": vc.name, "running": vc.running(), "inventory": vc.inventory_path,
                   "nodes": rows})  # fmt: skip
        return
    state = "running" if vc.running() else "[red]supervisor not running[/]"
    _table(rows, f"virtual cluster {vc.name} ({state})")
    console.print(f"inventory: {vc.inventory_path}")


@cluster.command()
@click.argument("node")
@click.option("--cooling", type=click.Choice(COOLING_CHOICES), default=None)
@click.option("--ambient", type=float, default=None, help="Room temperature in °C.")
@json_option
def heat(node: str, cooling: str | None, ambient: float | None, as_json: bool) -> None:
    """Change NODE's cooling and/or room temperature while the cluster runs."""
    from edgekit.errors import ClusterError
    from edgekit.virtual.cluster import VirtualCluster

    if cooling is None and ambient is None:
        raise InputError("give --cooling and/or --ambient")
    vc = VirtualCluster.current()
    if vc is None:
        raise ClusterError("no virtual cluster is running", hint="edgekit cluster up --nodes 3")
    result = vc.heat(node, cooling=cooling, ambient_c=ambient)
    if as_json:
        emit_json(result)
    else:
        console.print(f"{node}: " + ", ".join(f"{k}={v}" for k, v in result.items() if k != "name"))


@cluster.command()
@click.argument("node")
@click.option("--hard", is_flag=True, help="Pull the plug: no orderly stop of the services.")
@json_option
def reboot(node: str, hard: bool, as_json: bool) -> None:
    """Power-cycle NODE: every process and SSH session ends; enabled systemd units come back."""
    from edgekit.errors import ClusterError
    from edgekit.virtual.cluster import VirtualCluster

    vc = VirtualCluster.current()
    if vc is None:
        raise ClusterError("no virtual cluster is running", hint="edgekit cluster up --nodes 3")
    with err_console.status(f"rebooting {node}"):
        rec = vc.reboot(node, graceful=not hard)
    if as_json:
        emit_json({"name": rec.name, "init": rec.init, "port": rec.port,
                   "sshd_pid": rec.sshd_pid, "manager_pid": rec.manager_pid})
    else:
        console.print(f"{node}: rebooted (init {rec.init})")


def _table(rows: list[dict], title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in ("node", "user", "port", "board", "arch", "init", "cooling", "ambient", "temp",
                "clock",
                "throttled", "cap", "quota", "util"):  # fmt: skip
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["name"], r["user"], str(r["port"]),
            r["board"] + (" (32-bit)" if r.get("linux32") else ""), str(r.get("arch", "x86_64")),
            str(r.get("init", "-")),
            str(r.get("cooling")), f"{r.get('ambient_c', 0):.0f} °C",
            f"{r['temp_c']:.1f} °C" if "temp_c" in r else "-",
            f"{r['freq_mhz']} MHz" if "freq_mhz" in r else "-",
            str(r.get("throttled", "-")), f"{r['cap_cores']:.2f}",
            f"{r['quota_cores']:.2f}" if "quota_cores" in r else "-",
            f"{100 * r['util']:.0f} %" if "util" in r else "-",
        )  # fmt: skip
    console.print(table)
