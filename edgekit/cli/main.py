"""The `edgekit` click group.

Verbs live in one module per area and are registered here by import path, so that adding an
area never edits another's module. Area modules must import heavy libraries (ray, onnxruntime)
inside their command functions: `edgekit --help` stays fast.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click
from rich.markup import escape

from edgekit import __version__
from edgekit.cli._output import emit_json, err_console
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
    """Console entry point: expected failures become one clear message and an exit code.

    With `--json` anywhere on the command line a failure also prints one JSON error document
    on stdout (`error_document`), so a script reading stdout always gets JSON; the
    exit code is the same either way. This is the one place that does it for every verb.
    """
    as_json = wants_json(sys.argv[1:])
    try:
        # without standalone mode click returns (not raises) a ctx.exit(n)'s code
        code = cli.main(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Abort:
        _fail(as_json, 130, "aborted", kind="aborted")
    except click.ClickException as exc:
        exc.show()
        hint = exc.ctx.get_usage() if isinstance(exc, click.UsageError) and exc.ctx else None
        _fail(as_json, exc.exit_code, exc.format_message(), kind=type(exc).__name__, hint=hint)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except EdgekitError as exc:
        err_console.print(f"[bold red]error:[/] {escape(exc.render())}", highlight=False)
        result = getattr(exc, "result", None)  # a FleetError: every node's outcome
        _fail(as_json, exc.exit_code, exc.message, kind=type(exc).__name__, hint=exc.hint,
              where=exc.where, result=result.to_dict() if result is not None else None)
    except KeyboardInterrupt:
        _fail(as_json, 130, "interrupted", kind="interrupted")
    except Exception as exc:  # a bug: the traceback goes to stderr, scripts still get JSON
        if as_json:
            emit_json(error_document(1, f"internal error: {exc!r}", kind="internal"))
        raise


def wants_json(args: list[str]) -> bool:
    """`--json` given as an option (before a `--` that ends the options)."""
    return "--json" in (args[: args.index("--")] if "--" in args else args)


def error_document(exit_code: int, message: str, *, kind: str, hint: str | None = None,
                   where: str | None = None, result: dict | None = None) -> dict:
    """What a failed command prints on stdout under `--json` (`result`: a multi-node
    command's per-node outcomes, edgekit.fleet.FleetResult.to_dict)."""
    doc: dict = {"error": {"message": message, "hint": hint, "where": where, "kind": kind},
                 "exit_code": exit_code}
    if result is not None:
        doc["result"] = result
    return doc


def _fail(as_json: bool, exit_code: int, message: str, **fields: Any) -> None:
    """Exit with `exit_code`; under --json print the error document (`fields`: its kind,
    hint, where, result) first."""
    if fields["kind"] in ("aborted", "interrupted"):  # the other kinds were shown already
        err_console.print(message)
    if as_json:
        emit_json(error_document(exit_code, message, **fields))
    sys.exit(exit_code)


if __name__ == "__main__":
    main()
