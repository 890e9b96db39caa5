"""Fixtures: one gateway double and one versioned bucket on moto for the whole reliability run."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import boto3
import pytest

from cosmos_export import contract
from sandbox.doubles.cosmos.gateway import CosmosGatewayState, serve_cosmos
from sandbox.doubles.cosmos.rbac import RoleAssignment
from sandbox.doubles.cosmos.testing import JwtCredential, TestTokenIssuer
from tests.reliability.harness import ACCOUNT, DB, OID, World


@pytest.fixture(scope="session")
def rel_session() -> boto3.Session:
    return boto3.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        aws_session_token="testing",
        region_name="us-east-1",
    )


@pytest.fixture(scope="session")
def rel_bucket(moto_server, rel_session) -> str:
    s3 = rel_session.client("s3", endpoint_url=moto_server.url)
    bucket = f"rel-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


@pytest.fixture(scope="session")
def token_issuer() -> TestTokenIssuer:
    return TestTokenIssuer()


@pytest.fixture(scope="session")
def gateway(local_ca, token_issuer):
    state = CosmosGatewayState(
        ACCOUNT,
        token_verifier=token_issuer.verify,
        role_assignments=[RoleAssignment(OID, f"/dbs/{DB}", contract.COSMOS_DATA_ACTIONS)],
    )
    with serve_cosmos(state, local_ca) as served:
        yield state, served.url


@pytest.fixture()
def world(gateway, moto_server, rel_session, rel_bucket, local_ca, token_issuer) -> Iterator[World]:
    state, url = gateway
    state.clear_faults()
    w = World(
        state=state,
        cosmos_url=url,
        s3=rel_session.client("s3", endpoint_url=moto_server.url),
        session=rel_session,
        credential=JwtCredential(token_issuer, OID),
        bucket=rel_bucket,
        s3_endpoint=moto_server.url,
        ca_bundle=str(local_ca.bundle_file),
    )
    yield w
    state.clear_faults()


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory):
    """moto + STS + Entra + Cosmos gateway configured from the dev stack, for `cosmos-export` subprocesses."""
    from sandbox.serve import start_all
    from tests.reliability.sandbox_world import Sandbox

    workdir = tmp_path_factory.mktemp("sandbox")
    running = start_all(workdir, "dev")
    try:
        yield Sandbox(running, workdir)
    finally:
        running.stop()
