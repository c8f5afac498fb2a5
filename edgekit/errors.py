"""One small exception hierarchy. The CLI maps each class to a message and an exit code.

Every *expected* failure (bad input, unreachable node, a model that cannot be split) is an
``EdgekitError``; anything else reaching the top is a bug and shows a traceback.
"""

from __future__ import annotations


class EdgekitError(Exception):
    """Base of all expected edgekit failures."""

    exit_code = 1

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class InputError(EdgekitError):
    """A file or argument the user gave is wrong (names the file/line/tensor)."""

    exit_code = 3


class InventoryError(InputError):
    """The node inventory (pis.txt) is malformed."""


class ModelError(InputError):
    """A model file cannot be read, quantized or split as asked."""


class NodeError(EdgekitError):
    """A node failed (`where` names it); edgekit.fleet.FleetError, a NodeError, carries every
    node's outcome when several were involved."""

    exit_code = 4


class HostKeyError(NodeError):
    """A node's SSH host key is unknown or has changed."""


class ClusterError(EdgekitError):
    """The virtual cluster or the Ray cluster is in the wrong state for the request."""

    exit_code = 5


class NativeError(EdgekitError):
    """The native kernel library refused an input or is unavailable."""

    exit_code = 6
