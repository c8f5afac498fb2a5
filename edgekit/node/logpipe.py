"""Size-capped logs for the services edgekit runs, so a chatty or hostile-fed process cannot
fill a Pi's SD card: `<name>.log` is rotated to `<name>.log.1` ... `.N` when the next write
would take it past the cap, like logging.handlers.RotatingFileHandler.

RotatingFileHandler itself does not fit: what is logged here is a child process's raw
output (Ray's C++ daemons, tracebacks, partial lines, bytes that are not UTF-8), which has to
go through byte for byte, rotated by size, not as formatted log records. So the bytes go
through a pipe to this small writer, used two ways:

    python -m edgekit.node.logpipe LOG                  # copy stdin to LOG until EOF
    python -m edgekit.node.logpipe LOG -- CMD [ARG...]  # run CMD, its stdout+stderr to LOG

The supervisor starts the first as the reader end of each service's output (the service
stays its own direct child). The systemd units use the second as ExecStart, since a unit
cannot pipe (`StandardOutput=append:` never stops growing, and the virtual cluster's user
managers have no journald to hand the output to). The cap is per file: LOG plus its backups
take at most (backups + 1) x max_bytes.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

from edgekit import settings

CHUNK = 64 * 1024
#: after the command exits, how long output still held by its children is copied
DRAIN_S = 2.0


class CappedLog:
    """Append-only file that rotates before a write would take it past `max_bytes`."""

    def __init__(self, path: Path | str, max_bytes: int | None = None,
                 backups: int | None = None) -> None:
        self.path = Path(path)
        self.max_bytes = max(int(max_bytes or settings.log_max_bytes), CHUNK)
        self.backups = max(int(settings.log_backups if backups is None else backups), 0)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab")  # noqa: SIM115 (kept open across writes)
        self._size = self._fh.tell()

    def write(self, data: bytes) -> None:
        for start in range(0, len(data), self.max_bytes):
            piece = data[start:start + self.max_bytes]
            if self._size and self._size + len(piece) > self.max_bytes:
                self._rotate()
            self._fh.write(piece)
            self._fh.flush()
            self._size += len(piece)

    def note(self, text: str) -> None:
        self.write(f"--- {time.strftime('%F %T')} {text}\n".encode())

    def _rotate(self) -> None:
        self._fh.close()
        if self.backups:
            for i in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._fh = open(self.path, "wb")  # noqa: SIM115
        self._size = 0

    def close(self) -> None:
        self._fh.close()


def opened_for_append(path: Path | str) -> BinaryIO:
    """`path` open for appending, rotated first if it is already at the cap: for a process's
    own output that is small and only written between restarts (the supervisor daemon's)."""
    log = CappedLog(path)
    if log._size >= log.max_bytes:
        log._rotate()
    return log._fh


def append(path: Path | str, text: str) -> None:
    """One line into a capped log (for messages the supervisor writes itself)."""
    log = CappedLog(path)
    try:
        log.note(text)
    finally:
        log.close()


def copy(fd: int, log: CappedLog, stop: float | None = None) -> bool:
    """Copy from `fd` to `log` until EOF (True) or, when given, time.monotonic() `stop`."""
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    try:
        while stop is None or time.monotonic() < stop:
            wait = 0.5 if stop is None else max(0.0, min(0.5, stop - time.monotonic()))
            if not sel.select(wait):
                continue
            data = os.read(fd, CHUNK)
            if not data:
                return True
            log.write(data)
    finally:
        sel.close()
    return False


def start_reader(path: Path | str, note: str) -> tuple[subprocess.Popen, int]:
    """A writer process reading a new pipe into the capped log `path`; returns it and the
    pipe's write end (give it to the service as stdout/stderr, then close it here). The writer
    has its own session: stopping the service's process group leaves it to copy the last
    lines, and it exits at EOF, when the service and everything it started are gone."""
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "edgekit.node.logpipe", str(path),
                                 "--note", note], stdin=read_fd, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    except BaseException:
        os.close(write_fd)
        raise
    finally:
        os.close(read_fd)
    return proc, write_fd


def run_command(log: CappedLog, argv: list[str]) -> int:
    """Run `argv` with its output into `log`; forward termination signals to it; return its
    exit status (128 + signal number if a signal ended it, as a shell reports it)."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    assert proc.stdout is not None

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    fd = proc.stdout.fileno()
    while proc.poll() is None:
        if copy(fd, log, time.monotonic() + 0.5):
            break
    code = proc.wait()
    # children of the command may still hold the pipe: take what they wrote, briefly (the
    # unit must end when its command does, or systemd would not restart it)
    copy(fd, log, time.monotonic() + DRAIN_S)
    return 128 - code if code < 0 else code


def main(argv: list[str]) -> int:
    usage = "usage: python -m edgekit.node.logpipe LOG [--note TEXT] [-- CMD ARG...]"
    cmd: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, cmd = argv[:cut], argv[cut + 1:]
    note = None
    if len(argv) == 3 and argv[1] == "--note":
        note = argv[2]
    elif len(argv) != 1:
        print(usage, file=sys.stderr)
        return 2
    log = CappedLog(argv[0])
    try:
        if note:
            log.note(note)
        if cmd:
            log.note(f"starting {' '.join(cmd)}")
            return run_command(log, cmd)
        for sig in (signal.SIGINT, signal.SIGHUP):  # a reader lives until its pipe ends
            signal.signal(sig, signal.SIG_IGN)
        copy(sys.stdin.fileno(), log)
        return 0
    finally:
        log.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
