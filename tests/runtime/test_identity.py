"""identity.py through the STS and Entra doubles (moto AssumeRole for the task role session)."""

from __future__ import annotations

import io
import logging

import boto3
import pytest
import structlog
from azure.core.exceptions import ClientAuthenticationError

from cosmos_export import audit, contract, identity
from cosmos_export.settings import WorkerSettings
from sandbox.doubles.entra import EntraDoubleState, serve_entra
from sandbox.doubles.sts import assume_role_and_register
from tests.runtime.trust_chain import CLIENT_ID, ISSUER, ROLE_ARN, SP_OBJECT_ID, TENANT


def test_token_is_fresh_per_call_and_carries_the_contract_values(chain):
    settings = chain.settings(token_duration_seconds=900)
    sts = identity.sts_client(chain.session, settings)
    first, second = identity.web_identity_token(sts, settings), identity.web_identity_token(sts, settings)
    assert first != second
    claims = identity.token_claims(first)
    assert (claims["iss"], claims["sub"], claims["aud"], claims["alg"]) == (
        ISSUER,
        ROLE_ARN,
        contract.TOKEN_EXCHANGE_AUDIENCE,
        "RS256",
    )
    assert claims["exp"] - claims["iat"] == 900


@pytest.fixture()
def restore_logging():
    yield
    structlog.reset_defaults()
    logging.basicConfig(force=True)
    logging.getLogger("botocore.parsers").setLevel(logging.NOTSET)


def test_credential_exchanges_a_fresh_assertion_each_time_and_logs_no_token(chain, capsys, restore_logging):
    logs = io.StringIO()
    audit.configure_logging("DEBUG", stream=logs)  # as the worker does, at its most verbose
    logging.getLogger("botocore.parsers").setLevel(logging.DEBUG)  # even if a library logger is turned up
    credential = identity.azure_credential(chain.settings(), chain.session)
    a = credential.get_token("https://a.documents.azure.com/.default")
    b = credential.get_token("https://b.documents.azure.com/.default")
    assert chain.entra.verify_access_token(a.token, "https://a.documents.azure.com")["oid"] == SP_OBJECT_ID
    assert chain.entra.verify_access_token(b.token, "https://b.documents.azure.com")["oid"] == SP_OBJECT_ID
    assert len(chain.sts.issued) == 2 and chain.entra.distinct_assertions() == 2  # never a cached JWT
    out = capsys.readouterr()
    assert "<redacted-jwt>" in logs.getvalue()  # botocore did log the STS response body, masked
    for text in (logs.getvalue(), out.out, out.err):
        assert "eyJ" not in text and a.token not in text


@pytest.mark.parametrize(
    "sts_kwargs,settings_kwargs,expected",
    [
        ({"federation_enabled": False}, {}, "outbound identity federation is not enabled in this AWS account"),
        # The task role policy's NumericLessThanEquals sts:DurationSeconds condition refuses 900 s.
        (
            {"max_duration_seconds": 300},
            {"token_duration_seconds": 900},
            "duration 900s). Fix the task role's IAM policy conditions (sts:IdentityTokenAudience, sts:SigningAlgorithm, "
            "sts:DurationSeconds) or run `pulumi up` so the policy matches cosmos-s3-export:tokenDurationSeconds",
        ),
        (
            {"allowed_audiences": ("api://Other",)},
            {},
            "the task role may not call sts:GetWebIdentityToken with these parameters (audience api://AzureADTokenExchange",
        ),
    ],
)
def test_sts_errors_are_explained(chain, sts_kwargs, settings_kwargs, expected):
    for key, value in sts_kwargs.items():
        setattr(chain.sts, key, value)
    settings = chain.settings(**settings_kwargs)
    with pytest.raises(identity.IdentityError) as err:
        identity.web_identity_token(identity.sts_client(chain.session, settings), settings)
    assert expected in str(err.value)


def test_token_outliving_the_role_session_is_explained(chain):
    creds = assume_role_and_register(chain.sts, chain.urls["s3"], ROLE_ARN, duration_seconds=900)
    settings = chain.settings(token_duration_seconds=3600)
    sts = identity.sts_client(boto3.Session(region_name="us-east-1", **creds), settings)
    with pytest.raises(identity.IdentityError) as err:
        identity.web_identity_token(sts, settings)
    # SessionDurationEscalationException: the token would outlive the caller's session; not a policy limit.
    assert str(err.value) == (
        "STS SessionDurationEscalationException: a DurationSeconds=3600 token would outlive the task role's current "
        "session, and STS never issues a token beyond the session that asks for it. Lower "
        "EXPORT_TOKEN_DURATION_SECONDS (Pulumi config cosmos-s3-export:tokenDurationSeconds; default 300) below the "
        "session's remaining lifetime, or, if the session is just near its end, rerun: the task then gets fresh "
        "role credentials. AWS said: The requested token duration would extend the session beyond its original "
        "expiration time."
    )
    assert "policy" not in str(err.value)


@pytest.mark.parametrize(
    "fic,code,fix",
    [
        ({"subject": ROLE_ARN.replace("CosmosExportTask", "Other")}, "700213", "stack output taskRoleArn"),
        ({"subject": ROLE_ARN.lower()}, "7002138", "case-sensitive"),
        ({"issuer": ISSUER.replace("7b3e", "0000")}, "700211", "stack output awsIssuer"),
        ({"audiences": ["api://Other"]}, "700212", contract.TOKEN_EXCHANGE_AUDIENCE),
    ],
)
def test_entra_rejections_are_explained(local_ca, chain, fic, code, fix):
    entra = EntraDoubleState(TENANT)
    entra.trust_issuer(ISSUER, chain.sts.jwks())
    entra.add_application(CLIENT_ID, SP_OBJECT_ID)
    values = {"issuer": ISSUER, "subject": ROLE_ARN, "audiences": [contract.TOKEN_EXCHANGE_AUDIENCE], **fic}
    entra.add_federated_credential(CLIENT_ID, values["issuer"], values["subject"], values["audiences"])
    with serve_entra(entra, local_ca) as served:
        credential = identity.azure_credential(chain.settings(azure_authority_host=served.url), chain.session)
        with pytest.raises(ClientAuthenticationError) as err:
            credential.get_token("https://acct.documents.azure.com/.default")
    message = identity.explain_auth_error(err.value)
    assert message.startswith(f"Entra AADSTS{code}: ") and fix in message
    assert "eyJ" not in message


@pytest.mark.parametrize(
    "code,fragment",
    [
        ("700211", "awsIssuer"),
        ("700212", "api://AzureADTokenExchange"),
        ("700213", "taskRoleArn"),
        ("7002138", "case"),
        ("70021", "EXPORT_AZURE_CLIENT_ID"),
        ("700024", "fresh AWS token"),
        ("5002738", "RS256"),
    ],
)
def test_explain_aadsts_covers_every_documented_code(code, fragment):
    text = identity.explain_aadsts(f"invalid_client: AADSTS{code}: something. Trace ID: x")
    assert text.startswith(f"Entra AADSTS{code}:") and fragment in text
    assert identity.explain_aadsts("AADSTS999999: unknown") is None


def test_laptop_mode_uses_default_azure_credential(chain):
    from azure.identity import DefaultAzureCredential

    assert isinstance(identity.azure_credential(chain.settings(identity_mode="laptop")), DefaultAzureCredential)


def test_sts_endpoint_is_regional_by_default():
    s = WorkerSettings(
        aws_region="eu-central-1",
        azure_tenant_id=TENANT,
        azure_client_id=CLIENT_ID,
        cosmos_endpoint="https://acct.documents.azure.com:443/",
        cosmos_database="shop",
        cosmos_containers="orders",
        bucket="b-bucket",
    )
    assert s.sts_url == "https://sts.eu-central-1.amazonaws.com"
    assert s.model_copy(update={"aws_region": "cn-north-1"}).sts_url == "https://sts.cn-north-1.amazonaws.com.cn"
