"""Option callbacks for names that become paths on the host and on every node (--name,
--version, --to): refused as a usage error before anything is built or sent."""

from __future__ import annotations

import click

from edgekit import names


def model_name(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not names.is_name(value):
        raise click.BadParameter(f"{value!r}: {names.NAME_RULE}")
    return value


def version_name(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not names.is_version(value):
        raise click.BadParameter(f"{value!r}: {names.VERSION_RULE}")
    return value
