"""Session-wide servers the tests start and stop themselves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.doubles.tls import LocalCA, create_local_ca
from sandbox.services import Service, start_cosmosdb_server, start_moto


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Service]:
    with start_moto() as service:
        yield service


@pytest.fixture(scope="session")
def cosmosdb_server() -> Iterator[Service]:
    with start_cosmosdb_server() as service:
        yield service


@pytest.fixture(scope="session")
def local_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return create_local_ca(Path(tmp_path_factory.mktemp("ca")))
