"""Bearer and Ray token files: refused when other users could read (or replace) them.

A token in a file that group or others can read is a token anyone on the machine can use, so
every place edgekit reads one (the CLI's --token-file, the deployment's api-token and
ray-token on the host, the API and Ray on a head or worker node) checks the mode first and
names the fix, like ssh does for a private key.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from edgekit.errors import InputError


def check_private(path: Path | str, what: str = "token file") -> None:
    """Raise InputError unless `path` is a regular file only its owner can read and write."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror}", where=str(path)) from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{what} is not a regular file", where=str(path))
    if st.st_mode & 0o077:
        raise InputError(
            f"{what} is accessible by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
            "refusing to use it", where=str(path), hint=f"chmod 600 {path}")


def read_token(path: Path | str, what: str = "token file") -> str:
    """The token in `path` (stripped), after `check_private`; an empty file is refused."""
    check_private(path, what)
    try:
        text = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {what}: {exc}", where=str(path)) from None
    if not text:
        raise InputError(f"{what} is empty", where=str(path))
    return text
