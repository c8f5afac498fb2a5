"""Test-suite wide settings. Area fixtures live in each area's own conftest.py."""

from __future__ import annotations

import pytest

QEMU_DEPLOY = "--qemu-deploy"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(QEMU_DEPLOY, action="store_true", default=False,
                     help="also run the end-to-end deploys to emulated aarch64 boards "
                          "(tests marked qemu_deploy: 15-25 min on a 2-core machine)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption(QEMU_DEPLOY):
        return
    skip = pytest.mark.skip(reason=f"end-to-end deploy under qemu (slow): run with {QEMU_DEPLOY}")
    for item in items:
        if "qemu_deploy" in item.keywords:
            item.add_marker(skip)
