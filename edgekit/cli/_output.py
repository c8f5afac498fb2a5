"""Shared CLI output helpers: one stderr console for humans, plain JSON on stdout for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def json_option(func: F) -> F:
    """Add the standard `--json` flag (machine-readable output on stdout)."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout."
    )(func)


def emit_json(obj: Any) -> None:
    """Write one JSON document to stdout (dataclasses and paths become plain values)."""
    json.dump(obj, sys.stdout, indent=2, default=_default, sort_keys=False)
    sys.stdout.write("\n")
    sys.stdout.flush()


def _default(value: Any) -> Any:
    import dataclasses
    from pathlib import Path

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
