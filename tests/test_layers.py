"""Import layering of the edgekit package, read from the source with `ast` (nothing is
imported): no two modules import each other, serve and thermal never import the CLI, the
client never reaches edgekit.serve (it runs on laptops without Ray), and node-side code uses
serve only for the worker's own model loading (issue 13).

Every import counts, also those inside functions and under TYPE_CHECKING: a cycle hidden in a
function is still a cycle in the design.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "edgekit"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}


def _targets(node: ast.Import | ast.ImportFrom, here: str, is_pkg: bool,
             known: dict[str, Path]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names)
        return
    base = node.module or ""
    if node.level:  # relative: from the module's package, one level up per extra dot
        pkg = here.split(".") if is_pkg else here.split(".")[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join([*pkg, base] if base else pkg)
    yield base
    for alias in node.names:  # `from edgekit.deploy import assets` imports a module
        if f"{base}.{alias.name}" in known:
            yield f"{base}.{alias.name}"


def import_graph() -> dict[str, set[str]]:
    """Module -> the edgekit modules it imports (itself and missing files left out)."""
    known = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        try:
            tree = ast.parse(path.read_text(), filename=str(path))
        except FileNotFoundError:  # removed by a colleague since the listing
            continue
        edges = graph.setdefault(name, set())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _targets(node, name, path.name == "__init__.py", known):
                    if target.split(".")[0] == "edgekit" and target != name:
                        edges.add(target)
    return graph


def _imports_of(graph: dict[str, set[str]], prefix: str) -> dict[str, set[str]]:
    return {m: t for m, t in graph.items() if m == prefix or m.startswith(prefix + ".")}


def _under(target: str, prefix: str) -> bool:
    return target == prefix or target.startswith(prefix + ".")


def _climbs(graph: dict[str, set[str]], source: str, forbidden: str) -> list[str]:
    return sorted(f"{m} -> {t}" for m, ts in _imports_of(graph, source).items()
                  for t in ts if _under(t, forbidden))


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_no_two_modules_import_each_other(graph) -> None:
    cycles = sorted(f"{a} <-> {b}" for a, targets in graph.items() for b in targets
                    if a < b and a in graph.get(b, ()))
    assert not cycles, "import cycles (move the shared piece to a lower module):\n" + \
        "\n".join(cycles)


def test_serve_does_not_import_the_cli(graph) -> None:
    assert not _climbs(graph, "edgekit.serve", "edgekit.cli")


def test_thermal_does_not_import_the_cli(graph) -> None:
    assert not _climbs(graph, "edgekit.thermal", "edgekit.cli")


def test_the_client_never_reaches_serve(graph) -> None:
    """Not even through another module: follow every edgekit import from edgekit.client."""
    seen, todo = set(), ["edgekit.client"]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += graph.get(m, ())
    reached = sorted(m for m in seen if _under(m, "edgekit.serve") or _under(m, "edgekit.cli"))
    assert not reached, f"edgekit.client imports, directly or not: {reached}"


def test_node_code_uses_serve_only_for_the_workers_model_loading(graph) -> None:
    """node/selftest.py must load models exactly as a worker does (the reason is stated at
    its import); nothing else under node/ may import serve."""
    allowed = {"edgekit.node.selftest -> edgekit.serve.nodefiles",
               "edgekit.node.selftest -> edgekit.serve.runtime"}
    assert set(_climbs(graph, "edgekit.node", "edgekit.serve")) <= allowed


def test_the_scan_sees_what_it_checks() -> None:
    """The scanner itself: relative imports, `from package import module`, functions."""
    known = {"edgekit.a.b": Path("b.py"), "edgekit.a.c": Path("c.py"),
             "edgekit.a": Path("__init__.py")}
    tree = ast.parse("from . import c\nfrom .c import x\ndef f():\n    from edgekit.a import c\n")
    found = {t for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
             for t in _targets(n, "edgekit.a.b", False, known)}
    assert found == {"edgekit.a", "edgekit.a.c"}
