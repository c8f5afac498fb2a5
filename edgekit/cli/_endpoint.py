"""Find the inference API (URL and bearer token) for client verbs.

`--nodes pis.txt` means "the API that `edgekit deploy --nodes pis.txt` started": its URL and
token file come from the deployment's host state, so users never copy a random port or a
secret around. When that API runs on a role=head node's loopback, the URL is a local end of
an SSH tunnel to it, open while the command runs. An explicit `--url` / `--token-file` always
wins.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import click

from edgekit.errors import ClusterError

DEFAULT_URL = "http://127.0.0.1:8000"

NODES_OPTION = click.option(
    "--nodes", "nodes_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Use the API deployed for this inventory (URL and token from `edgekit deploy`).",
)


@contextlib.contextmanager
def endpoint(url: str | None, token_file: Path | None,
             nodes_file: Path | None) -> Iterator[tuple[str, Path | None]]:
    """(url, token file) from explicit options, else the deployment of `nodes_file` (through
    a tunnel to the head node if needed, closed when the block ends)."""
    if nodes_file is None:
        yield url or DEFAULT_URL, token_file
        return
    from edgekit.deploy import heads, state
    from edgekit.deploy.layout import deployment_dir

    folder = deployment_dir(nodes_file)
    st = state.load(folder, str(nodes_file))
    if not st.head.api_url:
        raise ClusterError("nothing is deployed for this inventory", where=str(nodes_file),
                           hint=f"run: edgekit deploy --nodes {nodes_file} MODEL")
    token = folder / "api-token"
    token_file = token_file or (token if token.exists() else None)
    if url:
        yield url, token_file
        return
    with heads.for_state(st, folder).reach(st, None) as reached:
        yield reached, token_file
