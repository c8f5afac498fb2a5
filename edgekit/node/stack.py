"""What a node runtime computes with: the kernel variant edgekit.native dispatched to (or the
numpy fallback, with why) and the versions of the inference runtimes installed beside it.

Reported by every serving worker (the API's /edgekit/status, `edgekit status`), printed by
`python -m edgekit.node.stack` as key=value lines for the node probe (`edgekit nodes check`),
and run by the runtime install, which refuses a wheel whose library is there but won't load.
Versions come from package metadata, so neither runtime is imported for them.
"""

from __future__ import annotations

import sys
from importlib import metadata
from typing import Any

FALLBACK = "numpy-fallback"
FALLBACK_WARNING = "native library missing: numpy fallback"
#: distribution name -> key in the report
RUNTIMES = {"onnxruntime": "onnxruntime", "ai-edge-litert": "litert"}


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def describe() -> dict[str, Any]:
    """{"kernels": variant, "native_problem": why there is no library ("" when there is),
    "onnxruntime": version, "litert": version} ("" for a runtime not installed)."""
    from edgekit import native
    from edgekit.native import _lib

    info: dict[str, Any] = {"kernels": native.variant(), "native_problem": _lib.PROBLEM}
    info.update({key: _version(dist) for dist, key in RUNTIMES.items()})
    return info


def warning(info: dict[str, Any]) -> str:
    """The warning to show for a report ("" when the native kernels run)."""
    if info.get("kernels") != FALLBACK:
        return ""
    why = info.get("native_problem") or ""
    return FALLBACK_WARNING + (f" ({why})" if why else "")


def check_loadable() -> None:
    """Exit non-zero when the runtime holds the library but cannot load it (wrong
    architecture, missing symbols): that install is broken, not merely without kernels."""
    from edgekit.native import _lib

    if _lib.LIB is None and _lib.LIB_FILE.exists() and _lib.PROBLEM != _lib.DISABLED:
        sys.exit(f"edgekit.native: {_lib.PROBLEM}")


def main(argv: list[str]) -> None:
    if argv[:1] == ["--check"]:
        check_loadable()
        return
    info = describe()
    keys = {"kernels": "native", "native_problem": "native_problem", "onnxruntime": "onnxruntime",
            "litert": "litert"}
    for key, name in keys.items():
        # one line each: the probe parses key=value lines
        print(f"{name}={' '.join(str(info[key]).split())}")


if __name__ == "__main__":
    main(sys.argv[1:])
