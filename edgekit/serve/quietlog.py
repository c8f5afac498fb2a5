"""Logging that a stream of bad requests cannot turn into a full disk.

Anyone who can reach the API can send malformed requests (no token needed to be refused), so
every line they cause is short (no traceback, client-supplied text cut) and the number of such
lines is capped per interval; what was dropped is summed up in one "suppressed" line when the
next interval opens. A Pi head's log lives on an SD card: ~900 refused requests/s with a
0.5-0.9 KB traceback each filled it in days.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("edgekit.serve")

#: longest piece of client-supplied text put into a response or a log line
SHOW_CHARS = 60


def show(value: object, limit: int = SHOW_CHARS) -> str:
    """`repr` of a client-supplied value, cut to `limit` characters (never the whole thing)."""
    text = value if isinstance(value, str) else type(value).__name__
    text = repr(text) if isinstance(value, str) else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RateLimitedLog:
    """At most `lines` log lines per `interval_s`; then one 'suppressed K' line per interval."""

    def __init__(
        self,
        logger: logging.Logger = log,
        lines: int = 10,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.logger = logger
        self.lines = lines
        self.interval_s = interval_s
        self.clock = clock
        self._lock = threading.Lock()  # aiohttp and the decode threads both log here
        self._window = clock()
        self._used = 0
        self.suppressed = 0  # dropped in the current window
        self.suppressed_total = 0

    def _admit(self) -> tuple[bool, int]:
        """(may log now, lines dropped in the window that just closed)."""
        with self._lock:
            now = self.clock()
            dropped = 0
            if now - self._window >= self.interval_s:
                dropped, self.suppressed = self.suppressed, 0
                self._window, self._used = now, 0
            if self._used < self.lines:
                self._used += 1
                return True, dropped
            self.suppressed += 1
            self.suppressed_total += 1
            return False, dropped

    def line(self, level: int, message: str, *, exc_info: Any = None) -> None:
        """Log `message` (cut to 160 characters) if the window allows it."""
        ok, dropped = self._admit()
        if dropped:
            self.logger.warning(
                "suppressed %d log lines in the last %.0f s", dropped, self.interval_s
            )
        if ok:
            text = message if len(message) <= 160 else message[:157] + "..."
            self.logger.log(level, "%s", text, exc_info=exc_info)


class ServerLogger:
    """Stands in for aiohttp's `aiohttp.server` logger (the `logger=` of its RequestHandler).

    aiohttp logs every request it cannot parse (bad request line, bad header, oversized
    header) with a full traceback; here that becomes one short rate-limited line naming the
    error. Everything else is passed through at its level.
    """

    def __init__(self, limited: RateLimitedLog):
        self.limited = limited
        self._inner = logging.getLogger("aiohttp.server")

    def exception(self, msg: str, *args: Any, exc_info: Any = None, **_: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else None
        what = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        self.limited.line(logging.WARNING, f"bad HTTP: {_fmt(msg, args)} ({what})")

    def debug(self, msg: str, *args: Any, **kw: Any) -> None:
        if self._inner.isEnabledFor(logging.DEBUG):
            self._inner.debug(msg, *args, **{k: v for k, v in kw.items() if k != "exc_info"})

    def warning(self, msg: str, *args: Any, **_: Any) -> None:
        self.limited.line(logging.WARNING, _fmt(msg, args))

    def info(self, msg: str, *args: Any, **_: Any) -> None:
        self._inner.info(msg, *args)

    def error(self, msg: str, *args: Any, **_: Any) -> None:
        self.limited.line(logging.ERROR, _fmt(msg, args))

    def isEnabledFor(self, level: int) -> bool:  # logging.Logger's name
        return self._inner.isEnabledFor(level)


def _fmt(msg: str, args: tuple) -> str:
    try:
        return msg % args if args else msg
    except (TypeError, ValueError):
        return msg
