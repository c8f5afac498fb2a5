"""Token auth for the small local Ray clusters some tests start with `ray.init()`.

Ray keeps its auth mode in a process-wide config read from the environment; once any test
module turned token auth on (tests/serve does, for its cluster), a later local cluster must
use a token too, and the config must be re-read both ways. This mirrors what Ray's own test
utilities do (ray._private.authentication_test_utils).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def _reload() -> None:
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextmanager
def token_auth(folder: Path) -> Iterator[None]:
    """Token auth on (a fresh 0600 token file) for the duration; the environment restored after."""
    saved = {k: os.environ.get(k) for k in _VARS}
    path = Path(folder) / "ray-token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(path))
    _reload()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _reload()
