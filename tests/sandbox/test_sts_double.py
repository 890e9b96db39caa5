"""The STS double against the real boto3/botocore client, with task-role credentials minted by moto."""

from __future__ import annotations

import time

import boto3
import jwt
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from sandbox.doubles.sts import (
    FEDERATION_DISABLED_MESSAGE,
    SESSION_ESCALATION_MESSAGE,
    StsDoubleState,
    assume_role_and_register,
    serve_sts,
)

ISSUER = "https://3f1c2a9e-5b7d-4e21-9c8a-0d6f4b2e7a15.tokens.sts.global.api.aws"
ROLE_ARN = "arn:aws:iam::123456789012:role/service/CosmosExportTask"
AUDIENCE = "api://AzureADTokenExchange"


@pytest.fixture(scope="module")
def served_sts():
    # One server for the module (stopping one costs ~0.5 s); each test gets fresh state.
    with serve_sts(StsDoubleState(ISSUER)) as served:
        yield served


@pytest.fixture
def sts_state(served_sts) -> StsDoubleState:
    served_sts.server.state = StsDoubleState(ISSUER)
    return served_sts.server.state


@pytest.fixture
def sts_endpoint(served_sts, sts_state):
    return served_sts.url


@pytest.fixture
def task_creds(sts_state, moto_server) -> dict:
    """The task role session's credentials, minted by moto's AssumeRole and registered with the double."""
    return assume_role_and_register(sts_state, moto_server.url, ROLE_ARN)


@pytest.fixture
def task_sts(sts_endpoint, task_creds):
    """A boto3 STS client of the task role's session."""
    return boto3.client(
        "sts",
        endpoint_url=sts_endpoint,
        region_name="us-east-1",
        config=Config(retries={"mode": "standard", "max_attempts": 3}),
        **task_creds,
    )


def _token(client, **overrides):
    params = {"Audience": [AUDIENCE], "SigningAlgorithm": "RS256", "DurationSeconds": 300, **overrides}
    return client.get_web_identity_token(**params)


def _error(excinfo) -> tuple[str, str, int]:
    err = excinfo.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


def test_moto_credentials_yield_a_token_whose_subject_is_the_role_arn(sts_state, task_sts):
    before = int(time.time())
    response = _token(task_sts)
    token = response["WebIdentityToken"]

    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert header["kid"] in {k["kid"] for k in sts_state.jwks()["keys"]}
    claims = sts_state.verify(token, audience=AUDIENCE)
    assert claims["iss"] == ISSUER  # exactly, no trailing slash
    assert claims["sub"] == ROLE_ARN  # the role ARN with its path, not the assumed-role session ARN
    assert claims["aud"] == AUDIENCE  # one audience -> a string
    assert before <= claims["iat"] <= claims["nbf"] + 0 <= int(time.time())
    assert claims["exp"] == claims["iat"] + 300
    assert claims["jti"]
    assert claims["https://sts.amazonaws.com/"]["aws_account"] == "123456789012"
    # botocore parsed the Expiration timestamp into an aware datetime equal to exp.
    assert int(response["Expiration"].timestamp()) == claims["exp"]


def test_get_caller_identity_is_the_assumed_role_session(task_sts):
    identity = task_sts.get_caller_identity()
    assert identity["Account"] == "123456789012"
    assert identity["Arn"] == "arn:aws:sts::123456789012:assumed-role/CosmosExportTask/cosmos-export"


def test_each_call_mints_a_new_token(task_sts):
    first, second = _token(task_sts)["WebIdentityToken"], _token(task_sts)["WebIdentityToken"]
    assert first != second
    assert (
        jwt.decode(first, options={"verify_signature": False})["jti"]
        != jwt.decode(second, options={"verify_signature": False})["jti"]
    )


def test_es384_several_audiences_and_tags(sts_state, task_sts):
    sts_state.allowed_audiences = (AUDIENCE, "https://other.example")
    token = _token(
        task_sts,
        SigningAlgorithm="ES384",
        Audience=[AUDIENCE, "https://other.example"],
        Tags=[{"Key": "team", "Value": "data"}],
    )["WebIdentityToken"]
    assert jwt.get_unverified_header(token)["alg"] == "ES384"
    claims = sts_state.verify(token, audience=AUDIENCE)
    assert claims["aud"] == [AUDIENCE, "https://other.example"]  # several audiences -> a list
    assert claims["https://sts.amazonaws.com/"]["request_tags"] == {"team": "data"}


def test_unknown_access_key_is_invalid_client_token_id(sts_endpoint):
    stranger = boto3.client(
        "sts",
        endpoint_url=sts_endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIANOTREGISTERED",
        aws_secret_access_key="x",
    )
    with pytest.raises(ClientError) as excinfo:
        _token(stranger)
    assert _error(excinfo) == ("InvalidClientTokenId", "The security token included in the request is invalid.", 403)


def test_wrong_session_token_is_rejected(sts_state, sts_endpoint, moto_server):
    creds = assume_role_and_register(sts_state, moto_server.url, ROLE_ARN)
    forged = boto3.client(
        "sts",
        endpoint_url=sts_endpoint,
        region_name="us-east-1",
        **{**creds, "aws_session_token": "not-the-session-token"},
    )
    with pytest.raises(ClientError) as excinfo:
        _token(forged)
    assert _error(excinfo)[0] == "InvalidClientTokenId"


def test_wrong_secret_key_fails_the_signature_check(sts_state, sts_endpoint, moto_server):
    creds = assume_role_and_register(sts_state, moto_server.url, ROLE_ARN)
    forged = boto3.client(
        "sts",
        endpoint_url=sts_endpoint,
        region_name="us-east-1",
        **{**creds, "aws_secret_access_key": "not-the-secret"},
    )
    with pytest.raises(ClientError) as excinfo:
        _token(forged)
    code, message, status = _error(excinfo)
    assert (code, status) == ("SignatureDoesNotMatch", 403)
    assert message.startswith("The request signature we calculated does not match the signature you provided.")


def test_federation_disabled(sts_state, task_sts):
    sts_state.federation_enabled = False
    with pytest.raises(task_sts.exceptions.OutboundWebIdentityFederationDisabledException) as excinfo:
        _token(task_sts)
    assert _error(excinfo) == ("OutboundWebIdentityFederationDisabledException", FEDERATION_DISABLED_MESSAGE, 403)


@pytest.mark.parametrize("duration", [30, 59, 3601, 7200])
def test_duration_outside_60_3600_is_a_validation_error(sts_endpoint, task_creds, duration):
    # botocore itself enforces the model's min (60) before sending; the server enforces both ends.
    raw = boto3.client(
        "sts",
        endpoint_url=sts_endpoint,
        region_name="us-east-1",
        config=Config(parameter_validation=False),
        **task_creds,
    )
    with pytest.raises(ClientError) as excinfo:
        _token(raw, DurationSeconds=duration)
    code, message, status = _error(excinfo)
    assert (code, status) == ("ValidationError", 400)
    assert f"Value '{duration}' at 'durationSeconds' failed to satisfy constraint" in message


def test_duration_above_the_role_policy_is_access_denied(sts_state, task_sts):
    sts_state.max_duration_seconds = 900
    assert _token(task_sts, DurationSeconds=900)["WebIdentityToken"]
    with pytest.raises(ClientError) as excinfo:
        _token(task_sts, DurationSeconds=901)
    code, message, status = _error(excinfo)
    assert (code, status) == ("AccessDenied", 403)
    assert "not authorized to perform: sts:GetWebIdentityToken" in message
    assert "sts:DurationSeconds" in message


def test_audience_outside_the_role_policy_is_access_denied(task_sts):
    with pytest.raises(ClientError) as excinfo:
        _token(task_sts, Audience=["api://SomethingElse"])
    code, message, _ = _error(excinfo)
    assert code == "AccessDenied" and "sts:IdentityTokenAudience" in message and "api://SomethingElse" in message


def test_algorithm_outside_the_role_policy_is_access_denied(sts_state, task_sts):
    sts_state.allowed_signing_algorithms = ("RS256",)
    with pytest.raises(ClientError) as excinfo:
        _token(task_sts, SigningAlgorithm="ES384")
    code, message, _ = _error(excinfo)
    assert code == "AccessDenied" and "sts:SigningAlgorithm" in message and "ES384" in message


def test_unknown_algorithm_is_a_validation_error(task_sts):
    with pytest.raises(ClientError) as excinfo:
        _token(task_sts, SigningAlgorithm="HS256")
    code, message, _ = _error(excinfo)
    assert code == "ValidationError" and "'HS256' at 'signingAlgorithm'" in message


def test_token_may_not_outlive_the_role_session(sts_state, sts_endpoint, moto_server):
    # A role session with 15 minutes left cannot mint a 30-minute token.
    creds = assume_role_and_register(sts_state, moto_server.url, ROLE_ARN, duration_seconds=900)
    client = boto3.client("sts", endpoint_url=sts_endpoint, region_name="us-east-1", **creds)
    assert _token(client, DurationSeconds=600)["WebIdentityToken"]
    with pytest.raises(client.exceptions.SessionDurationEscalationException) as excinfo:
        _token(client, DurationSeconds=1800)
    assert _error(excinfo) == ("SessionDurationEscalationException", SESSION_ESCALATION_MESSAGE, 403)


def test_throttling_is_retried_by_botocore(sts_state, task_sts):
    sts_state.throttle_next(2)
    response = _token(task_sts)
    assert response["ResponseMetadata"]["RetryAttempts"] == 2
    assert [code for action, code in sts_state.requests[-3:]] == ["Throttling", "Throttling", "OK"]


def test_throttling_beyond_the_retry_budget_surfaces(sts_state, sts_endpoint, moto_server):
    creds = assume_role_and_register(sts_state, moto_server.url, ROLE_ARN)
    client = boto3.client(
        "sts",
        endpoint_url=sts_endpoint,
        region_name="us-east-1",
        config=Config(retries={"mode": "standard", "total_max_attempts": 2}),
        **creds,
    )
    sts_state.throttle_next(2)
    with pytest.raises(ClientError) as excinfo:
        _token(client)
    assert _error(excinfo) == ("Throttling", "Rate exceeded", 400)
    assert [code for _, code in sts_state.requests] == ["Throttling", "Throttling"]


def test_server_errors_are_retried(sts_state, task_sts):
    sts_state.fail_next(1, status=503)
    assert _token(task_sts)["ResponseMetadata"]["RetryAttempts"] == 1
    assert [code for _, code in sts_state.requests[-2:]] == ["ServiceUnavailable", "OK"]


def test_clock_skew_shifts_the_token_lifetime(sts_state, task_sts):
    sts_state.clock_skew_seconds = -58
    claims = jwt.decode(_token(task_sts, DurationSeconds=60)["WebIdentityToken"], options={"verify_signature": False})
    assert 0 < claims["exp"] - time.time() <= 2.5  # a token with ~2 s left: for refresh tests


def test_issuer_must_not_have_a_trailing_slash():
    with pytest.raises(ValueError, match="without a trailing slash"):
        StsDoubleState(ISSUER + "/")


def test_register_rejects_a_non_role_arn(sts_state):
    with pytest.raises(ValueError, match="not an IAM role ARN"):
        sts_state.register_credentials("ASIAX", "arn:aws:iam::123456789012:user/alice")
