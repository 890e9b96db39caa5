"""The whole chain of trust on loopback, with unmodified clients.

moto AssumeRole (task role credentials) -> boto3 `sts.get_web_identity_token`
against the STS double -> azure-identity `ClientAssertionCredential` whose
callback fetches a fresh AWS token each time -> Entra double token endpoint.
"""

from __future__ import annotations

import time

import boto3
import jwt
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientAssertionCredential

from cosmos_export import contract
from sandbox.doubles.entra import EntraDoubleState, serve_entra
from sandbox.doubles.sts import StsDoubleState, assume_role_and_register, serve_sts

ISSUER = "https://7b3e9d21-4c6a-4f8e-b0d2-5a1c9e8f7d63.tokens.sts.global.api.aws"
ROLE_ARN = "arn:aws:iam::210987654321:role/workloads/CosmosExportTask"
TENANT = "c0ffee00-1234-4abc-9def-0123456789ab"
CLIENT_ID = "a11ce000-5678-4abc-8def-0123456789ab"
SP_OBJECT_ID = "b0b00000-9abc-4def-8123-0123456789ab"
COSMOS_SCOPE = "https://cosmos-export-prod.documents.azure.com/.default"
COSMOS_AUDIENCE = "https://cosmos-export-prod.documents.azure.com"


class Chain:
    """One STS double + Entra double pair configured like the Pulumi program would."""

    def __init__(
        self,
        sts: StsDoubleState,
        entra: EntraDoubleState,
        sts_url: str,
        entra_url: str,
        ca_bundle: str,
        aws_creds: dict,
    ):
        self.sts, self.entra, self.entra_url, self.ca_bundle = sts, entra, entra_url, ca_bundle
        self.sts_client = boto3.client("sts", endpoint_url=sts_url, region_name="us-east-1", **aws_creds)
        self.callback_calls = 0

    def web_identity_token(
        self,
        *,
        algorithm: str = contract.SIGNING_ALGORITHM,
        duration: int = contract.DEFAULT_WEB_IDENTITY_TOKEN_SECONDS,
    ) -> str:
        self.callback_calls += 1
        return self.sts_client.get_web_identity_token(
            Audience=[contract.TOKEN_EXCHANGE_AUDIENCE],
            SigningAlgorithm=algorithm,
            DurationSeconds=duration,
        )["WebIdentityToken"]

    def credential(self, func=None) -> ClientAssertionCredential:
        return ClientAssertionCredential(
            TENANT,
            CLIENT_ID,
            func or self.web_identity_token,
            authority=self.entra_url,
            connection_verify=self.ca_bundle,
        )


@pytest.fixture(scope="module")
def served(local_ca):
    with serve_sts(StsDoubleState(ISSUER)) as sts, serve_entra(EntraDoubleState(TENANT), local_ca) as entra:
        yield sts, entra


def make_chain(
    served,
    local_ca,
    moto_server,
    *,
    fic_issuer=ISSUER,
    fic_subject=ROLE_ARN,
    fic_audience=contract.TOKEN_EXCHANGE_AUDIENCE,
    allowed_audiences=(contract.TOKEN_EXCHANGE_AUDIENCE,),
):
    served_sts, served_entra = served
    sts = served_sts.server.state = StsDoubleState(ISSUER, allowed_audiences=allowed_audiences)
    entra = served_entra.server.state = EntraDoubleState(TENANT)
    entra.trust_issuer(ISSUER, sts.jwks())
    entra.add_application(CLIENT_ID, SP_OBJECT_ID)
    entra.add_federated_credential(CLIENT_ID, fic_issuer, fic_subject, [fic_audience])
    creds = assume_role_and_register(sts, moto_server.url, ROLE_ARN)
    return Chain(sts, entra, served_sts.url, served_entra.url, str(local_ca.bundle_file), creds)


def test_task_role_token_is_exchanged_for_a_cosmos_token(served, local_ca, moto_server):
    chain = make_chain(served, local_ca, moto_server)
    token = chain.credential().get_token(COSMOS_SCOPE)

    claims = chain.entra.verify_access_token(token.token, COSMOS_AUDIENCE)
    assert (claims["oid"], claims["tid"], claims["appid"]) == (SP_OBJECT_ID, TENANT, CLIENT_ID)
    assert chain.callback_calls == 1
    # What Entra was shown: the AWS token for the role ARN (not the assumed-role session).
    [issued] = chain.sts.issued
    assert (issued["iss"], issued["sub"], issued["aud"]) == (ISSUER, ROLE_ARN, contract.TOKEN_EXCHANGE_AUDIENCE)
    assert [r.outcome for r in chain.entra.requests] == ["OK"]
    assert chain.entra.requests[0].assertion_jti == issued["jti"]


@pytest.mark.parametrize(
    ("chain_kwargs", "callback_kwargs", "code", "detail"),
    [
        (
            {"fic_subject": ROLE_ARN.replace("CosmosExportTask", "OtherTask")},
            {},
            700213,
            f"presented assertion subject '{ROLE_ARN}'",
        ),
        # A role ARN typed with different case in the infrastructure.
        (
            {"fic_subject": ROLE_ARN.replace("CosmosExportTask", "cosmosexporttask")},
            {},
            7002138,
            "matches with case-insensitive comparison, but not with case-sensitive comparison",
        ),
        # The classic mistake: the issuer with a trailing slash in the federated credential.
        ({"fic_issuer": ISSUER + "/"}, {}, 700211, f"presented assertion issuer '{ISSUER}'"),
        (
            {"fic_audience": "api://AzureADTokenExchange/"},
            {},
            700212,
            "presented assertion audience 'api://AzureADTokenExchange'",
        ),
        ({}, {"algorithm": "ES384"}, 5002738, "'ES384' is not a supported signature algorithm"),
    ],
    ids=["subject", "subject-case", "issuer", "audience", "es384"],
)
def test_misconfiguration_fails_with_the_aadsts_code(
    served, local_ca, moto_server, chain_kwargs, callback_kwargs, code, detail
):
    chain = make_chain(served, local_ca, moto_server, **chain_kwargs)
    cred = chain.credential(lambda: chain.web_identity_token(**callback_kwargs))
    with pytest.raises(ClientAuthenticationError) as excinfo:
        cred.get_token(COSMOS_SCOPE)
    assert f"AADSTS{code}: " in str(excinfo.value)
    assert detail in str(excinfo.value)


def test_expired_aws_token_fails_with_700024(served, local_ca, moto_server):
    chain = make_chain(served, local_ca, moto_server)
    chain.sts.clock_skew_seconds = -700  # a 300 s token issued 700 s ago: expired beyond the 300 s leeway
    with pytest.raises(
        ClientAuthenticationError, match="AADSTS700024: Client assertion is not within its valid time range"
    ):
        chain.credential().get_token(COSMOS_SCOPE)


def test_tokens_keep_refreshing_with_a_fresh_assertion_each_time(served, local_ca, moto_server):
    chain = make_chain(served, local_ca, moto_server)
    chain.sts.clock_skew_seconds = -58  # DurationSeconds=60 -> AWS tokens with ~2 s left
    chain.entra.token_lifetime_seconds = 3
    cred = chain.credential(lambda: chain.web_identity_token(duration=60))

    tokens = set()
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        tokens.add(cred.get_token(COSMOS_SCOPE).token)  # raises on any AADSTS700024
        time.sleep(0.4)

    assert 3 <= chain.callback_calls <= 4, chain.callback_calls  # ~8 s / 3 s Entra lifetime, not one per call
    assert len(tokens) == chain.callback_calls  # one Entra token per exchange, each cached until expiry
    assert chain.entra.assertions_seen() == chain.entra.distinct_assertions() == chain.callback_calls
    assert {r.outcome for r in chain.entra.requests} == {"OK"}
    assert len({c["jti"] for c in chain.sts.issued}) == chain.callback_calls


def test_a_cached_assertion_string_breaks_after_it_expires(served, local_ca, moto_server):
    """Why the callback must call STS every time: a fixed JWT fails at the first refresh."""
    chain = make_chain(served, local_ca, moto_server)
    chain.sts.clock_skew_seconds = -58
    chain.entra.token_lifetime_seconds = 1
    chain.entra.clock_leeway_seconds = 0  # exact expiry, so the test need not wait out a 300 s leeway
    fixed = chain.web_identity_token(duration=60)
    cred = chain.credential(lambda: fixed)

    assert cred.get_token(COSMOS_SCOPE).token
    time.sleep(max(0.0, jwt.decode(fixed, options={"verify_signature": False})["exp"] - time.time()) + 0.3)
    with pytest.raises(ClientAuthenticationError, match="AADSTS700024"):
        cred.get_token(COSMOS_SCOPE)


def test_the_exchanged_token_reads_cosmos_with_rbac_on_the_service_principal(served, local_ca, moto_server):
    """Last link: the Cosmos gateway double verifies the Entra double's token and checks RBAC on its `oid`."""
    from sandbox.doubles.cosmos.gateway import CosmosGatewayState, serve_cosmos
    from sandbox.doubles.cosmos.rbac import RoleAssignment
    from sandbox.doubles.cosmos.testing import sdk_client

    chain = make_chain(served, local_ca, moto_server)
    cosmos = CosmosGatewayState(
        "cosmos-export-prod",
        token_verifier=chain.entra.verify_access_token,
        role_assignments=[RoleAssignment(SP_OBJECT_ID, "/dbs/app/colls/orders", contract.COSMOS_DATA_ACTIONS)],
    )
    cosmos.create_container("app", "orders")
    cosmos.upsert_many("app", "orders", [{"id": str(i), "pk": f"p{i % 3}"} for i in range(10)])
    with serve_cosmos(cosmos, local_ca) as served_cosmos:
        client = sdk_client(served_cosmos.url, chain.credential(), local_ca)
        container = client.get_database_client("app").get_container_client("orders")
        ids = sorted(int(d["id"]) for d in container.query_items("SELECT * FROM c", enable_cross_partition_query=True))
    assert ids == list(range(10))
    assert chain.callback_calls == 1  # one exchange; the SDK reused the cached Entra token
    # The SDK asked for <scheme>://<hostname>/.default (no port): the token's audience is https://127.0.0.1.
    assert [r.scope for r in chain.entra.requests] == ["https://127.0.0.1/.default"]
