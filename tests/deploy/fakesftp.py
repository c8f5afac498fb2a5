"""An in-memory SFTP client for unit tests of what deploy writes on a node: files live in a
dict (path -> bytes) and a file's mode under "mode:<path>", moved along by rename."""

from __future__ import annotations

import io
from dataclasses import dataclass


class FakeFile(io.BytesIO):
    def __init__(self, store: dict[str, bytes], path: str, mode: str):
        super().__init__(store.get(path, b"") if "r" in mode else b"")
        self.store, self.path, self.mode = store, path, mode

    def chmod(self, mode: int) -> None:
        self.store[f"mode:{self.path}"] = b"%o" % mode

    def close(self) -> None:
        if "w" in self.mode:
            self.store[self.path] = self.getvalue()
        super().close()


@dataclass
class FakeSftp:
    files: dict[str, bytes]

    def open(self, path: str, mode: str) -> FakeFile:
        if "r" in mode and path not in self.files:
            raise FileNotFoundError(path)
        return FakeFile(self.files, path, mode)

    def chmod(self, path: str, mode: int) -> None:
        pass

    def posix_rename(self, src: str, dst: str) -> None:
        self.files[dst] = self.files.pop(src)
        if f"mode:{src}" in self.files:
            self.files[f"mode:{dst}"] = self.files.pop(f"mode:{src}")

    def close(self) -> None:
        pass
