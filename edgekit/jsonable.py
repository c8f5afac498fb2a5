"""JSON for edgekit's own objects: the `default=` hook of `json.dumps` wherever edgekit writes
a document (the CLI's --json output, the API's /edgekit/status)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


def json_default(value: Any) -> Any:
    """Dataclasses as dicts, paths as strings, numpy arrays and scalars as lists/numbers."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
