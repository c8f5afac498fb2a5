"""One sensor value and where it came from."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

MEASURED, ESTIMATED, ABSENT = "measured", "estimated", "absent"


@dataclass(frozen=True)
class Reading:
    """A value with its unit and provenance: measured, estimated, or absent (value None)."""

    value: Any
    unit: str
    source: str = MEASURED
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.source != ABSENT and self.value is not None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def absent(unit: str, reason: str) -> Reading:
    """A sensor that is missing or gave unusable data; `reason` names the path/command."""
    return Reading(None, unit, ABSENT, reason)
