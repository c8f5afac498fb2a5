"""The `edgekit` click group.

Verbs live in one module per area and are registered here by import path, so that adding an
area never edits another's module. Area modules must import heavy libraries (ray, onnxruntime)
inside their command functions: `edgekit --help` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import click

from edgekit import __version__
from edgekit.cli._output import err_console
from edgekit.errors import EdgekitError

#: verb -> "module:attribute". Order is the order of `edgekit --help`.
COMMANDS: dict[str, str] = {
    "demo": "edgekit.cli.demo:demo",
    "nodes": "edgekit.cli.nodes:nodes",
    "cluster": "edgekit.cli.cluster:cluster",
    "deploy": "edgekit.cli.deploy:deploy", "status": "edgekit.cli.deploy:status", "rollback": "edgekit.cli.deploy:rollback", "undeploy": "edgekit.cli.deploy:undeploy", "logs": "edgekit.cli.deploy:logs",  # noqa: E501
    "inspect": "edgekit.cli.model:inspect_cmd", "quantize": "edgekit.cli.model:quantize_cmd", "shard": "edgekit.cli.model:shard_cmd", "bundle": "edgekit.cli.model:bundle_group",  # noqa: E501
    "monitor": "edgekit.cli.thermal:monitor", "report": "edgekit.cli.thermal:report",
    "prune": "edgekit.cli.native:prune", "native": "edgekit.cli.native:native",
    "serve": "edgekit.cli.serve:serve",
    "infer": "edgekit.cli.serve:infer",
    "bench": "edgekit.cli.serve:bench",
}


class _Group(click.Group):
    """A click group that loads verbs from COMMANDS on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._load(name) is not None]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # area not present in this build
                return None
            raise
        return getattr(module, attr)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekit")
def cli() -> None:
    """Run ONNX/TFLite models on a Raspberry Pi cluster, steered by temperature and power."""


def main() -> None:
    """Console entry point: expected failures become one clear message and an exit code."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except EdgekitError as exc:
        err_console.print(f"[bold red]error:[/] {exc.render()}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
