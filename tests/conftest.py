"""Session-wide servers the tests start and stop themselves."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from sandbox.doubles.tls import LocalCA, create_local_ca
from sandbox.services import Service, start_cosmosdb_server, start_moto


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Service]:
    # `make mutation` runs the tests once per mutant: one moto server (started by the Makefile) serves them all.
    # Safe to share: every test makes its own bucket.
    shared = os.environ.get("TESTS_MOTO_URL")
    if shared:
        yield Service(name="moto", url=shared, port=urlsplit(shared).port or 80, process=None)  # type: ignore[arg-type]
        return
    with start_moto() as service:
        yield service


@pytest.fixture(scope="session")
def cosmosdb_server() -> Iterator[Service]:
    with start_cosmosdb_server() as service:
        yield service


@pytest.fixture(scope="session")
def local_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return create_local_ca(Path(tmp_path_factory.mktemp("ca")))
