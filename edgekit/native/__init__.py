"""Native kernels: activation codec, image preprocessing, N:M-sparse int8 linear layers.

The C library (``native/`` in the repository, built by ``pip install``) is chosen per CPU at
load; without it every function here still works through numpy fallbacks, and
``variant()`` says ``"numpy-fallback"``.
"""

from __future__ import annotations

from edgekit.native._lib import FEATURES, LIB


def variant() -> str:
    """Name of the kernel variant in use: avx2, neon, neon-dotprod, portable or numpy-fallback."""
    if LIB is None:
        return "numpy-fallback"
    return LIB.ek_variant().decode()


def features() -> dict[str, object]:
    """CPU features the library detected, the variant chosen and the default thread count."""
    if LIB is None:
        return {"variant": "numpy-fallback", "library": False, "threads": 1}
    bits = LIB.ek_features()
    found = {name: bool(bits & bit) for name, bit in FEATURES.items()}
    return {"variant": variant(), "library": True, "threads": LIB.ek_default_threads(), **found}


def force_variant(name: str) -> None:
    """Use another variant the CPU can run (tests and benchmarks; not thread-safe)."""
    from edgekit.errors import NativeError

    if LIB is None or LIB.ek_force_variant(name.encode()) != 0:
        raise NativeError(f"variant {name!r} is not available here", where="force_variant")


__all__ = ["features", "force_variant", "variant"]
