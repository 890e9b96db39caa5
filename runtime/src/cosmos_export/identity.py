"""The chain of trust: ECS task role -> STS GetWebIdentityToken -> Entra -> Cosmos.

No secret is stored or logged anywhere: the AWS JWT is fetched fresh each time
Entra asks for an assertion (a cached string would expire: AADSTS700024) and
only its decoded claims are ever shown.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import boto3
import jwt
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from cosmos_export import contract
from cosmos_export.contract import Env
from cosmos_export.settings import WorkerSettings

if TYPE_CHECKING:  # typed clients (mypy-boto3-sts, a test-time dependency)
    from mypy_boto3_sts import STSClient

_CONFIG = "cosmos-s3-export"  # Pulumi project: stack config keys are "<project>:<key>"


class IdentityError(Exception):
    """A broken link in the chain of trust, with the fix in plain language."""


def aws_session(settings: WorkerSettings) -> boto3.Session:
    """Default credential chain: in ECS the container credentials endpoint (task role),
    on a laptop the default profile (AWS_PROFILE respected)."""
    return boto3.Session(region_name=settings.aws_region)


def sts_client(session: boto3.Session, settings: WorkerSettings) -> STSClient:
    # GetWebIdentityToken is regional only: never the global endpoint.
    return session.client(
        "sts",
        region_name=settings.aws_region,
        endpoint_url=settings.sts_url,
        config=Config(retries={"mode": "standard", "max_attempts": 5}),
    )


def web_identity_token(sts: STSClient, settings: WorkerSettings) -> str:
    """A fresh AWS-signed JWT for Entra (RS256, audience api://AzureADTokenExchange)."""
    try:
        response = sts.get_web_identity_token(
            Audience=[contract.TOKEN_EXCHANGE_AUDIENCE],
            SigningAlgorithm=contract.SIGNING_ALGORITHM,
            DurationSeconds=settings.token_duration_seconds,
        )
    except ClientError as e:
        raise IdentityError(explain_sts_error(e, settings)) from None
    except BotoCoreError as e:
        raise IdentityError(
            f"STS GetWebIdentityToken at {settings.sts_url} failed: {e}. "
            "Check the task's network path to the regional STS endpoint "
            "(private subnets need an STS interface VPC endpoint)."
        ) from None
    return response["WebIdentityToken"]


def explain_sts_error(error: ClientError, settings: WorkerSettings) -> str:
    code = error.response.get("Error", {}).get("Code", "")
    message = error.response.get("Error", {}).get("Message", "")
    if code == "OutboundWebIdentityFederationDisabledException":
        return (
            "STS: outbound identity federation is not enabled in this AWS account. Enable it once per account "
            "(the stack's aws.iam.OutboundWebIdentityFederation resource, or `aws iam "
            "enable-outbound-web-identity-federation`), then rerun."
        )
    if code == "SessionDurationEscalationException":
        # Per the STS service model: the token would outlive the caller's own role session. A policy
        # limit (sts:DurationSeconds condition) is AccessDenied instead, handled below.
        return (
            f"STS SessionDurationEscalationException: a DurationSeconds={settings.token_duration_seconds} token "
            "would outlive the task role's current session, and STS never issues a token beyond the session "
            f"that asks for it. Lower {Env.TOKEN_DURATION_SECONDS} (Pulumi config {_CONFIG}:tokenDurationSeconds; "
            f"default {contract.DEFAULT_WEB_IDENTITY_TOKEN_SECONDS}) "
            "below the session's remaining lifetime, or, if the session is just near its end, rerun: the task "
            f"then gets fresh role credentials. AWS said: {message}"
        )
    if code in ("AccessDenied", "AccessDeniedException"):
        return (
            "STS: the task role may not call sts:GetWebIdentityToken with these parameters "
            f"(audience {contract.TOKEN_EXCHANGE_AUDIENCE}, algorithm {contract.SIGNING_ALGORITHM}, "
            f"duration {settings.token_duration_seconds}s). Fix the task role's IAM policy conditions "
            "(sts:IdentityTokenAudience, sts:SigningAlgorithm, sts:DurationSeconds) or run `pulumi up` "
            f"so the policy matches {_CONFIG}:tokenDurationSeconds. AWS said: {message}"
        )
    if code in ("Throttling", "ThrottlingException"):
        return f"STS throttled GetWebIdentityToken after retries; rerun later. AWS said: {message}"
    return f"STS GetWebIdentityToken failed ({code}): {message}"


_AADSTS_FIXES: dict[str, str] = {
    "700211": (
        "the token issuer does not match the federated identity credential's issuer. Set the FIC issuer to "
        "this account's issuer exactly (stack output awsIssuer, no trailing slash) and run `pulumi up`."
    ),
    "700212": (
        f"the token audience does not match the federated identity credential. Its audiences must be "
        f"['{contract.TOKEN_EXCHANGE_AUDIENCE}'] and the worker must request that audience."
    ),
    "700213": (
        "the token subject (the task role ARN) matches no federated identity credential. Set the FIC subject "
        "to the task role ARN exactly (stack output taskRoleArn, including its path) and run `pulumi up`; "
        f"for extra roles see {_CONFIG}:additionalFederatedCredentials."
    ),
    "7002138": (
        "the token subject differs from the federated identity credential's subject only in letter case. "
        "Subjects are case-sensitive: copy the task role ARN exactly (stack output taskRoleArn)."
    ),
    "70021": (
        "no federated identity credential on the Entra app matches this token (issuer + subject + audience). "
        f"Check {Env.AZURE_CLIENT_ID} is the app that holds the FIC and that the FIC lists the issuer "
        "(awsIssuer) and task role ARN (taskRoleArn) exactly; run `pulumi up`."
    ),
    "700024": (
        "the client assertion expired before Entra used it. The worker fetches a fresh AWS token per request, "
        "so check the task's clock, or raise "
        f"{Env.TOKEN_DURATION_SECONDS} ({_CONFIG}:tokenDurationSeconds)."
    ),
    "5002738": (
        f"Entra rejected the token's signing algorithm. Request {contract.SIGNING_ALGORITHM} "
        "(ES384 is not accepted) and allow it in the task role's sts:SigningAlgorithm condition."
    ),
}
_AADSTS = re.compile(r"AADSTS(\d+)")


def explain_aadsts(message: str) -> str | None:
    """Plain-language fix for the first known AADSTS code in an Entra error message, else None."""
    for code in _AADSTS.findall(message or ""):
        if code in _AADSTS_FIXES:
            return f"Entra AADSTS{code}: {_AADSTS_FIXES[code]}"
    return None


class _AssertionFunc:
    """Callback for ClientAssertionCredential: a fresh AWS token on every call."""

    def __init__(self, sts: STSClient, settings: WorkerSettings):
        self._sts, self._settings = sts, settings

    def __call__(self) -> str:
        return web_identity_token(self._sts, self._settings)

    def __repr__(self) -> str:  # never shows a token in tracebacks
        return "<fresh AWS web identity token>"


def azure_credential(settings: WorkerSettings, session: boto3.Session | None = None) -> Any:
    """The Entra credential the Cosmos client uses.

    workload: ClientAssertionCredential backed by STS GetWebIdentityToken.
    laptop: DefaultAzureCredential (az login etc.); only when chosen explicitly.
    """
    from azure.identity import ClientAssertionCredential, DefaultAzureCredential

    kwargs: dict[str, Any] = {}
    if settings.azure_authority_host:
        kwargs["authority"] = settings.azure_authority_host
        # A non-public authority (sovereign cloud proxy, sandbox) has no instance-discovery document.
        kwargs["disable_instance_discovery"] = True
    if settings.identity_mode == "laptop":
        # The tenant is the one of your `az login` (use `az login --tenant <id>`).
        kwargs.pop("disable_instance_discovery", None)
        return DefaultAzureCredential(exclude_interactive_browser_credential=True, **kwargs)
    sts = sts_client(session or aws_session(settings), settings)
    # Workload mode requires both ids (WorkerSettings refuses to load without them).
    assert settings.azure_tenant_id is not None and settings.azure_client_id is not None
    return ClientAssertionCredential(
        settings.azure_tenant_id, settings.azure_client_id, _AssertionFunc(sts, settings), **kwargs
    )


def token_claims(token: str) -> dict[str, Any]:
    """Claims of a JWT, decoded WITHOUT verifying (for diagnostics only; Entra verifies)."""
    claims = jwt.decode(token, options={"verify_signature": False})
    header = jwt.get_unverified_header(token)
    return {"alg": header.get("alg"), **{k: claims.get(k) for k in ("iss", "sub", "aud", "exp", "iat")}}


def explain_auth_error(error: BaseException) -> str:
    """Message for an Entra / credential failure: the AADSTS fix when known, else the error itself."""
    if isinstance(error, IdentityError):
        return str(error)
    text = str(error)
    return (
        explain_aadsts(text) or f"Entra token request failed: {text.splitlines()[0] if text else type(error).__name__}"
    )
