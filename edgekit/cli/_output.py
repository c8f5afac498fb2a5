"""Shared CLI output helpers: one stderr console for humans, plain JSON on stdout for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console

from edgekit.jsonable import json_default

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
    json.dump(obj, sys.stdout, indent=2, default=json_default, sort_keys=False)
    sys.stdout.write("\n")
    sys.stdout.flush()
