"""The Entra double against the unmodified azure-identity / MSAL clients.

Assertions here are signed by a stand-in AWS issuer key (fast, no STS); the
full chain through the STS double is in test_doubles_identity_chain.py.
"""

from __future__ import annotations

import time
import uuid

import jwt
import msal
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientAssertionCredential

from sandbox.doubles.entra import DEFAULT_CLOCK_LEEWAY_SECONDS, EntraDoubleState, serve_entra
from sandbox.doubles.jwt_keys import KeySet

TENANT = "8d2f6b1c-3e4a-4c5d-9f0e-1a2b3c4d5e6f"
CLIENT_ID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
SP_OBJECT_ID = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"
AWS_ISSUER = "https://3f1c2a9e-5b7d-4e21-9c8a-0d6f4b2e7a15.tokens.sts.global.api.aws"
ROLE_ARN = "arn:aws:iam::123456789012:role/service/CosmosExportTask"
AUDIENCE = "api://AzureADTokenExchange"
COSMOS_SCOPE = "https://cosmos-export-dev.documents.azure.com/.default"

AWS_KEYS = KeySet()  # stands in for the AWS account issuer's signing keys


def assertion(*, iss=AWS_ISSUER, sub=ROLE_ARN, aud=AUDIENCE, alg="RS256", lifetime=300, skew=0, keys=AWS_KEYS):
    now = int(time.time()) + skew
    return keys.sign(
        {"iss": iss, "sub": sub, "aud": aud, "iat": now, "nbf": now, "exp": now + lifetime, "jti": str(uuid.uuid4())},
        alg,
    )


@pytest.fixture(scope="module")
def served_entra(local_ca):
    with serve_entra(EntraDoubleState(TENANT), local_ca) as served:
        yield served


@pytest.fixture
def entra(served_entra) -> EntraDoubleState:
    state = EntraDoubleState(TENANT)
    state.trust_issuer(AWS_ISSUER, AWS_KEYS.jwks())
    state.add_application(CLIENT_ID, SP_OBJECT_ID)
    state.add_federated_credential(CLIENT_ID, AWS_ISSUER, ROLE_ARN, [AUDIENCE])
    served_entra.server.state = state
    return state


def credential(served, local_ca, func, **kwargs) -> ClientAssertionCredential:
    return ClientAssertionCredential(
        TENANT, CLIENT_ID, func, authority=served.url, connection_verify=str(local_ca.bundle_file), **kwargs
    )


def test_client_assertion_credential_gets_a_cosmos_token(entra, served_entra, local_ca):
    cred = credential(served_entra, local_ca, lambda: assertion())
    before = int(time.time())
    token = cred.get_token(COSMOS_SCOPE)

    claims = entra.verify_access_token(token.token, "https://cosmos-export-dev.documents.azure.com")
    assert claims["aud"] == "https://cosmos-export-dev.documents.azure.com"
    assert claims["iss"] == f"https://sts.windows.net/{TENANT}/"
    assert (claims["tid"], claims["oid"], claims["appid"]) == (TENANT, SP_OBJECT_ID, CLIENT_ID)
    assert jwt.get_unverified_header(token.token)["alg"] == "RS256"
    assert claims["exp"] - before in range(3599, 3602)
    assert token.expires_on - before in range(3599, 3602)  # azure-identity read expires_in
    with pytest.raises(jwt.InvalidAudienceError):
        entra.verify_access_token(token.token, "https://other.documents.azure.com")


def test_cosmos_sdk_scope_for_a_loopback_endpoint_has_no_port(entra, served_entra, local_ca):
    # azure-cosmos builds its scope as <scheme>://<hostname>/.default (azure/cosmos/_base.py create_scope_from_url).
    from azure.cosmos._base import create_scope_from_url

    scope = create_scope_from_url("https://127.0.0.1:8081/")
    assert scope == "https://127.0.0.1/.default"
    token = credential(served_entra, local_ca, lambda: assertion()).get_token(scope)
    assert entra.verify_access_token(token.token, "https://127.0.0.1")["oid"] == SP_OBJECT_ID


def test_error_response_has_entras_json_shape(entra, served_entra, local_ca):
    response = requests.post(
        f"{served_entra.url}/{TENANT}/oauth2/v2.0/token",
        data={
            "client_id": CLIENT_ID,
            "grant_type": "client_credentials",
            "scope": COSMOS_SCOPE,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion(sub=ROLE_ARN + "-other"),
        },
        verify=str(local_ca.bundle_file),
        timeout=10,
    )
    body = response.json()
    assert response.status_code == 401
    assert body["error"] == "invalid_client"
    assert body["error_codes"] == [700213]
    assert body["error_description"].startswith(
        f"AADSTS700213: No matching federated identity record found for presented assertion subject "
        f"'{ROLE_ARN}-other'. Check your federated identity credential Subject, Audience and Issuer"
    )
    assert f"Trace ID: {body['trace_id']}" in body["error_description"]
    assert f"Correlation ID: {body['correlation_id']}" in body["error_description"]
    assert body["timestamp"] and body["error_uri"].endswith("?code=700213")


@pytest.mark.parametrize(
    ("make_assertion", "code", "detail"),
    [
        (lambda: assertion(iss=AWS_ISSUER + "/"), 700211, f"assertion issuer '{AWS_ISSUER}/'"),
        (
            lambda: assertion(sub=ROLE_ARN.replace("CosmosExportTask", "OtherTask")),
            700213,
            "assertion subject 'arn:aws:iam::123456789012:role/service/OtherTask'",
        ),
        (
            lambda: assertion(sub=ROLE_ARN.lower()),
            7002138,
            "matches with case-insensitive comparison, but not with case-sensitive comparison",
        ),
        (
            lambda: assertion(aud="api://AzureADTokenExchange2"),
            700212,
            "assertion audience 'api://AzureADTokenExchange2'",
        ),
        (lambda: assertion(skew=-700), 700024, "Client assertion is not within its valid time range"),
        (lambda: assertion(skew=+600), 700024, "Client assertion is not within its valid time range"),
        (lambda: assertion(alg="ES384"), 5002738, "'ES384' is not a supported signature algorithm"),
        (lambda: assertion(keys=KeySet()), 50013, "Assertion failed signature validation"),
    ],
    ids=["issuer", "subject", "subject-case", "audience", "expired", "not-yet-valid", "es384", "signature"],
)
def test_rejections_carry_the_aadsts_code(entra, served_entra, local_ca, make_assertion, code, detail):
    cred = credential(served_entra, local_ca, make_assertion)
    with pytest.raises(ClientAuthenticationError) as excinfo:
        cred.get_token(COSMOS_SCOPE)
    message = str(excinfo.value)
    assert f"Microsoft Entra ID error '(invalid_client) AADSTS{code}: " in message
    assert detail in message
    assert [r.outcome for r in entra.requests] == [f"AADSTS{code}"]  # 401s are not retried
    assert entra.discovery_requests == []  # ClientAssertionCredential posts straight to the token endpoint


def test_app_without_federated_credentials_is_70021(entra, served_entra, local_ca):
    entra.add_application("11111111-2222-4333-8444-555555555555", "66666666-7777-4888-9999-000000000000")
    cred = ClientAssertionCredential(
        TENANT,
        "11111111-2222-4333-8444-555555555555",
        lambda: assertion(),
        authority=served_entra.url,
        connection_verify=str(local_ca.bundle_file),
    )
    with pytest.raises(
        ClientAuthenticationError,
        match=r"AADSTS70021: No matching federated identity record "
        r"found for presented assertion\. Assertion Issuer",
    ):
        cred.get_token(COSMOS_SCOPE)


def test_unknown_client_and_tenant(entra, served_entra, local_ca):
    stranger = ClientAssertionCredential(
        TENANT,
        "99999999-9999-4999-8999-999999999999",
        lambda: assertion(),
        authority=served_entra.url,
        connection_verify=str(local_ca.bundle_file),
    )
    with pytest.raises(
        ClientAuthenticationError,
        match=r"\(unauthorized_client\) AADSTS700016: Application with "
        r"identifier '99999999-9999-4999-8999-999999999999'",
    ):
        stranger.get_token(COSMOS_SCOPE)
    other_tenant = ClientAssertionCredential(
        "00000000-0000-4000-8000-000000000000",
        CLIENT_ID,
        lambda: assertion(),
        authority=served_entra.url,
        connection_verify=str(local_ca.bundle_file),
    )
    with pytest.raises(ClientAuthenticationError, match="AADSTS90002: Tenant '00000000-0000-4000-8000-000000000000'"):
        other_tenant.get_token(COSMOS_SCOPE)


def test_scope_must_be_a_single_default_scope(entra, served_entra, local_ca):
    cred = credential(served_entra, local_ca, lambda: assertion())
    with pytest.raises(ClientAuthenticationError, match=r"\(invalid_scope\) AADSTS1002012: .*/\.default suffixed"):
        cred.get_token("https://cosmos-export-dev.documents.azure.com/user_impersonation")


def test_unknown_resource_is_500011_when_resources_are_listed(entra, served_entra, local_ca):
    entra.known_resources = {"https://cosmos.azure.com"}
    cred = credential(served_entra, local_ca, lambda: assertion())
    with pytest.raises(
        ClientAuthenticationError, match="AADSTS500011: The resource principal named https://127.0.0.1 was not found"
    ):
        cred.get_token("https://127.0.0.1/.default")
    assert cred.get_token("https://cosmos.azure.com/.default").token


def test_at_most_20_federated_credentials(entra):
    for i in range(19):
        entra.add_federated_credential(CLIENT_ID, AWS_ISSUER, f"{ROLE_ARN}-{i}", [AUDIENCE])
    with pytest.raises(ValueError, match="already has 20 federated identity credentials"):
        entra.add_federated_credential(CLIENT_ID, AWS_ISSUER, f"{ROLE_ARN}-20", [AUDIENCE])


def test_transient_503_is_retried_by_azure_core(entra, served_entra, local_ca):
    entra.fail_next(1, status=503)
    calls = []
    cred = credential(served_entra, local_ca, lambda: calls.append(1) or assertion())
    assert cred.get_token(COSMOS_SCOPE).token
    # azure-core retried the same POST (same assertion); the callback ran once.
    assert len(calls) == 1
    assert [r.outcome for r in entra.requests] == ["OK"]


def test_token_is_cached_until_expiry_then_a_fresh_assertion_is_sent(entra, served_entra, local_ca):
    entra.token_lifetime_seconds = 2
    cred = credential(served_entra, local_ca, lambda: assertion())
    first = cred.get_token(COSMOS_SCOPE)
    assert cred.get_token(COSMOS_SCOPE).token == first.token  # served from the cache
    assert entra.assertions_seen() == 1
    time.sleep(2.2)
    assert cred.get_token(COSMOS_SCOPE).token != first.token
    assert entra.assertions_seen() == 2 and entra.distinct_assertions() == 2


def test_clock_skew_of_the_double_expires_assertions(entra, served_entra, local_ca):
    # Entra's clock is ahead of a 300 s assertion's lifetime by more than the 300 s leeway.
    entra.clock_skew_seconds = 300 + DEFAULT_CLOCK_LEEWAY_SECONDS + 1
    with pytest.raises(ClientAuthenticationError, match="AADSTS700024"):
        credential(served_entra, local_ca, lambda: assertion(lifetime=300)).get_token(COSMOS_SCOPE)


@pytest.mark.parametrize("skew", [-500, +250], ids=["expired-200s-ago", "valid-250s-from-now"])
def test_assertions_within_the_clock_leeway_are_accepted_and_refused_without_it(entra, served_entra, local_ca, skew):
    """Real Entra tolerates ~5 minutes of skew on the assertion's nbf/exp; leeway 0 makes the check exact."""
    assert entra.clock_leeway_seconds == DEFAULT_CLOCK_LEEWAY_SECONDS == 300
    made = assertion(skew=skew, lifetime=300)
    token = credential(served_entra, local_ca, lambda: made).get_token(COSMOS_SCOPE)
    assert (
        entra.verify_access_token(token.token, "https://cosmos-export-dev.documents.azure.com")["oid"] == SP_OBJECT_ID
    )
    entra.clock_leeway_seconds = 0
    with pytest.raises(ClientAuthenticationError, match="AADSTS700024"):
        credential(served_entra, local_ca, lambda: made).get_token(COSMOS_SCOPE)


def test_access_token_verification_allows_the_clock_leeway(entra, served_entra, local_ca):
    """Cosmos DB accepts an Entra token whose nbf is minutes ahead of its own clock (Entra's clock runs fast)."""
    entra.clock_skew_seconds = 180
    entra.clock_leeway_seconds = 200  # 180 s skew: the assertion (nbf now) is fine for Entra's clock too
    token = credential(served_entra, local_ca, lambda: assertion()).get_token(COSMOS_SCOPE).token
    audience = "https://cosmos-export-dev.documents.azure.com"
    assert entra.verify_access_token(token, audience)["oid"] == SP_OBJECT_ID
    entra.clock_leeway_seconds = 0
    with pytest.raises(jwt.ImmatureSignatureError):
        entra.verify_access_token(token, audience)
    with pytest.raises(ValueError, match="clock_leeway_seconds=-1 is negative"):
        EntraDoubleState(TENANT, clock_leeway_seconds=-1)


def test_msal_confidential_client_discovers_the_double(entra, served_entra, local_ca, monkeypatch):
    # MSAL GETs <authority>/v2.0/.well-known/openid-configuration first, then posts to its token_endpoint.
    # requests lets REQUESTS_CA_BUNDLE override Session.verify, so the bundle goes in the environment.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(local_ca.bundle_file))
    app = msal.ConfidentialClientApplication(
        CLIENT_ID,
        authority=f"{served_entra.url}/{TENANT}",
        client_credential={"client_assertion": assertion},
        instance_discovery=False,
    )
    result = app.acquire_token_for_client(scopes=[COSMOS_SCOPE])
    assert "access_token" in result, result.get("error_description")
    assert (
        entra.verify_access_token(result["access_token"], "https://cosmos-export-dev.documents.azure.com")["oid"]
        == SP_OBJECT_ID
    )
    assert entra.discovery_requests == [f"/{TENANT}/v2.0/.well-known/openid-configuration"]
    assert entra.assertions_seen() == 1


def test_worker_style_credential_trusts_the_double_through_requests_ca_bundle(
    entra, served_entra, local_ca, monkeypatch
):
    # How the worker builds it (authority override + disable_instance_discovery), CA from the environment.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(local_ca.bundle_file))
    host = served_entra.url.removeprefix("https://")
    cred = ClientAssertionCredential(
        TENANT, CLIENT_ID, lambda: assertion(), authority=host, disable_instance_discovery=True
    )
    assert (
        entra.verify_access_token(cred.get_token(COSMOS_SCOPE).token, "https://cosmos-export-dev.documents.azure.com")[
            "oid"
        ]
        == SP_OBJECT_ID
    )
    with pytest.raises(ValueError, match="must be a TLS protected"):
        ClientAssertionCredential(TENANT, CLIENT_ID, lambda: assertion(), authority=f"http://{host}")
