"""The house limit on function size, checked over edgekit/ with ast (issue 13).

No function longer than 60 lines or with more than 6 parameters (``self``/``cls`` not
counted), unless a comment containing "reason:" on the def line or the line just above it
says why (a click command takes one parameter per option, a callback's signature is fixed
by the library calling it).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 60
MAX_PARAMS = 6

# being fixed in issue 13: functions in files other engineers are changing right now
ALLOWED: set[str] = set()


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    names = [*a.posonlyargs, *a.args]
    count = len(names) + len(a.kwonlyargs) + (a.vararg is not None) + (a.kwarg is not None)
    return count - 1 if names and names[0].arg in ("self", "cls") else count


def _has_reason(lines: list[str], fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    at = fn.lineno - 1  # the def line, 0-based
    return any("#" in lines[i] and "reason:" in lines[i].split("#", 1)[1]
               for i in (at - 1, at) if i >= 0)


def offenders(root: Path = ROOT / "edgekit") -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        src = path.read_text()
        lines = src.splitlines()
        for fn in ast.walk(ast.parse(src, str(path))):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            length, params = fn.end_lineno - fn.lineno + 1, _params(fn)
            if (length > MAX_LINES or params > MAX_PARAMS) and not _has_reason(lines, fn):
                rel = path.relative_to(root.parent).as_posix()
                found.append(f"{rel}:{fn.name} ({length} lines, {params} params)")
    return found


def test_no_long_or_wide_function_without_a_reason() -> None:
    bad = [o for o in offenders() if o.split(" ")[0] not in ALLOWED]
    assert not bad, "over 60 lines or 6 parameters, no 'reason:' comment:\n" + "\n".join(bad)


def test_allow_list_holds_only_current_offenders() -> None:
    """An entry fixed by its owner must leave the list, so the list only ever shrinks."""
    current = {o.split(" ")[0] for o in offenders()}
    assert not ALLOWED - current, f"fixed, remove from ALLOWED: {sorted(ALLOWED - current)}"


def test_the_scan_sees_both_limits_and_the_reason(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "m.py").write_text(
        f"def long():\n{body}\n\n"
        "def wide(a, b, c, d, e, f, g):\n    pass\n\n"
        "class C:\n    def ok(self, a, b, c, d, e, f):\n        pass\n\n"
        "# reason: a callback whose signature the caller fixes\n"
        "def excused(a, b, c, d, e, f, g):\n    pass\n"
    )
    found = [o.split(" ")[0].rsplit(":", 1)[1] for o in offenders(tmp_path)]
    assert found == ["long", "wide"]
