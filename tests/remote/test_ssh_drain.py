"""Connection._drain against a scripted channel: OpenSSH may send a command's exit status
before its last output (seen on busy virtual nodes as an empty stdout with exit code 0)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from edgekit.remote import ssh


class _Channel:
    """Exit status first; the output 30 ms later; EOF after it (or never)."""

    def __init__(self, eof: bool = True):
        self.t0, self.eof, self.closed, self.data = time.monotonic(), eof, False, b"/home/pi\n"

    def _late(self) -> bool:
        return time.monotonic() - self.t0 > 0.03

    @property
    def eof_received(self) -> bool:
        return self.eof and self._late() and not self.data

    def settimeout(self, _: float) -> None:
        pass

    def exit_status_ready(self) -> bool:
        return True

    def recv_ready(self) -> bool:
        return self._late() and bool(self.data)

    def recv(self, _: int) -> bytes:
        data, self.data = self.data, b""
        return data

    def recv_stderr_ready(self) -> bool:
        return False


def _drain(channel: _Channel) -> bytes:
    conn = SimpleNamespace(node=SimpleNamespace(name="pi1"))
    return ssh.Connection._drain(conn, channel, time.monotonic() + 10, "echo")[0]  # type: ignore[arg-type]


def test_output_after_the_exit_status_is_kept():
    assert _drain(_Channel()) == b"/home/pi\n"


def test_output_held_open_by_a_background_process_ends_after_a_grace(monkeypatch):
    monkeypatch.setattr(ssh, "EOF_GRACE_S", 0.2)
    t0 = time.monotonic()
    assert _drain(_Channel(eof=False)) == b"/home/pi\n"
    assert time.monotonic() - t0 < 2
