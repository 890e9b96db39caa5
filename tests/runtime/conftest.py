"""Fixtures shared by the tests/runtime modules."""

from __future__ import annotations

import uuid

import boto3
import pytest

from cosmos_export import contract
from sandbox.doubles.cosmos.gateway import CosmosGatewayState, serve_cosmos
from sandbox.doubles.cosmos.rbac import RoleAssignment
from sandbox.doubles.entra import EntraDoubleState, serve_entra
from sandbox.doubles.sts import StsDoubleState, assume_role_and_register, serve_sts
from tests.runtime.trust_chain import CLIENT_ID, ISSUER, ROLE_ARN, SP_OBJECT_ID, TENANT, Chain


@pytest.fixture()
def chain(local_ca, moto_server, monkeypatch):
    bundle = str(local_ca.bundle_file)
    monkeypatch.setenv("AWS_CA_BUNDLE", bundle)  # boto3 -> STS double over TLS
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", bundle)  # azure-identity -> Entra double
    sts = StsDoubleState(ISSUER)
    entra = EntraDoubleState(TENANT)
    entra.trust_issuer(ISSUER, sts.jwks())
    entra.add_application(CLIENT_ID, SP_OBJECT_ID)
    entra.add_federated_credential(CLIENT_ID, ISSUER, ROLE_ARN, [contract.TOKEN_EXCHANGE_AUDIENCE])
    cosmos = CosmosGatewayState(
        "acct",
        token_verifier=entra.verify_access_token,
        role_assignments=[RoleAssignment(SP_OBJECT_ID, "/dbs/shop", contract.COSMOS_DATA_ACTIONS)],
    )
    cosmos.create_container("shop", "orders")
    creds = assume_role_and_register(sts, moto_server.url, ROLE_ARN)
    session = boto3.Session(region_name="us-east-1", **creds)
    s3 = session.client("s3", endpoint_url=moto_server.url)
    bucket = f"export-{uuid.uuid4().hex[:12]}"  # moto lives for the session: a bucket per test
    s3.create_bucket(Bucket=bucket)
    # Versioned like the stack's bucket (moto answers HEAD ?versionId=null on an unversioned bucket with 400).
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    with serve_sts(sts, local_ca) as s, serve_entra(entra, local_ca) as e, serve_cosmos(cosmos, local_ca) as c:
        yield Chain(
            sts,
            entra,
            cosmos,
            {"sts": s.url, "entra": e.url, "cosmos": c.url, "s3": moto_server.url},
            session,
            bundle,
            bucket,
        )
