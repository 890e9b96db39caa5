"""AWS STS double: `GetWebIdentityToken` (outbound identity federation) and `GetCallerIdentity`.

Wire protocol (what botocore 1.44 sends and parses, service model
`sts/2011-06-15`, protocol `query`):
- `POST /`, `Content-Type: application/x-www-form-urlencoded; charset=utf-8`,
  body `Action=GetWebIdentityToken&Version=2011-06-15&Audience.member.1=...
  &SigningAlgorithm=RS256&DurationSeconds=300[&Tags.member.1.Key=k&Tags.member.1.Value=v]`.
- SigV4 `Authorization: AWS4-HMAC-SHA256 Credential=<AKID>/<date>/<region>/sts/aws4_request,
  SignedHeaders=..., Signature=...` plus `X-Amz-Security-Token` for temporary
  credentials. The caller is identified by the access key id; the session token
  and (when the secret was registered) the signature must match.
- Success: `<GetWebIdentityTokenResponse><GetWebIdentityTokenResult>
  <WebIdentityToken>jwt</WebIdentityToken><Expiration>ISO8601</Expiration>`.
- Errors: `<ErrorResponse><Error><Type>Sender</Type><Code>..</Code><Message>..</Message>
  </Error><RequestId>..</RequestId></ErrorResponse>` with the service's HTTP
  status; botocore raises `ClientError` with `Error.Code` (and for modeled
  exceptions, `client.exceptions.<Code>`). `Throttling` (400) and 5xx are retried
  by botocore's retry handler.

Token claims follow the IAM "Understanding token claims" page: `iss` is the
account issuer (no trailing slash), `sub` the *role* ARN with its path (not the
assumed-role session ARN), `aud` a string for one audience and a list for
several, `iat`, `nbf`, `exp` = `iat + DurationSeconds`, `jti`, and the AWS
claims under the `https://sts.amazonaws.com/` namespace.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Iterable
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import jwt

from sandbox.doubles.jwt_keys import SUPPORTED_ALGORITHMS, KeySet, verify_signature
from sandbox.doubles.server import DoubleHandler, ServedDouble
from sandbox.doubles.tls import LocalCA

XMLNS = "https://sts.amazonaws.com/doc/2011-06-15/"
API_VERSION = "2011-06-15"
MIN_DURATION_SECONDS = 60
MAX_DURATION_SECONDS = 3600
DEFAULT_DURATION_SECONDS = 300
AWS_CLAIMS_NAMESPACE = "https://sts.amazonaws.com/"

_ROLE_ARN = re.compile(r"^arn:(aws[\w-]*):iam::(\d{12}):role/(?:(.*)/)?([\w+=,.@-]+)$")
_CREDENTIAL = re.compile(r"Credential=([A-Z0-9]+)/\d{8}/([\w-]+)/sts/aws4_request")

FEDERATION_DISABLED_MESSAGE = (
    "The outbound web identity federation feature is not enabled for this account. To use this feature, "
    "you must first enable it through the Amazon Web Services Management Console or API."
)
SESSION_ESCALATION_MESSAGE = (
    "The requested token duration would extend the session beyond its original expiration time."
)


class StsError(Exception):
    def __init__(self, status: int, code: str, message: str, sender: bool = True):
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message, self.sender = status, code, message, sender


@dataclass(frozen=True)
class Caller:
    access_key_id: str
    role_arn: str
    session_name: str
    session_token: str | None
    session_expires_at: float | None  # epoch seconds; None = no session limit known
    secret_access_key: str | None = None  # when known, the SigV4 signature is checked

    def _role_parts(self) -> tuple[str, ...]:
        match = _ROLE_ARN.match(self.role_arn)
        assert match is not None, f"{self.role_arn!r} is not a role ARN"  # checked when the caller is set up
        return match.groups()

    @property
    def account(self) -> str:
        return self._role_parts()[1]

    @property
    def assumed_role_arn(self) -> str:
        # Assumed-role ARNs drop the role path: arn:aws:sts::<acct>:assumed-role/<name>/<session>.
        partition, account, _path, name = self._role_parts()
        return f"arn:{partition}:sts::{account}:assumed-role/{name}/{self.session_name}"


class StsDoubleState:
    """Configuration, registered callers, fault knobs and a request log of the STS double."""

    def __init__(
        self,
        issuer: str,
        *,
        federation_enabled: bool = True,
        allowed_audiences: Iterable[str] = ("api://AzureADTokenExchange",),
        max_duration_seconds: int = MAX_DURATION_SECONDS,
        allowed_signing_algorithms: Iterable[str] = ("RS256", "ES384"),
        region: str = "us-east-1",
    ) -> None:
        if issuer.endswith("/") or not issuer.startswith("https://"):
            raise ValueError(
                f"issuer {issuer!r} must be an https URL without a trailing slash, "
                "e.g. https://<uuid>.tokens.sts.global.api.aws"
            )
        bad = set(allowed_signing_algorithms) - set(SUPPORTED_ALGORITHMS)
        if bad:
            raise ValueError(
                f"allowed_signing_algorithms has {sorted(bad)}; STS only signs with {SUPPORTED_ALGORITHMS}"
            )
        self.issuer = issuer
        self.federation_enabled = federation_enabled
        # The task role policy's conditions: ForAllValues:StringEquals sts:IdentityTokenAudience,
        # NumericLessThanEquals sts:DurationSeconds, StringEquals sts:SigningAlgorithm.
        self.allowed_audiences = tuple(allowed_audiences)
        self.max_duration_seconds = max_duration_seconds
        self.allowed_signing_algorithms = tuple(allowed_signing_algorithms)
        self.region = region
        self.clock_skew_seconds = 0.0  # shifts iat/nbf/exp of issued tokens (negative = already older)
        self.keys = KeySet()
        self._callers: dict[str, Caller] = {}
        self._lock = threading.Lock()
        self._throttle = 0
        self._fail: list[int] = []
        self.issued: list[dict] = []  # claims of every token issued (never the token itself)
        self.requests: list[tuple[str, str]] = []  # (action, outcome code or "OK")

    # --- setup ---------------------------------------------------------------
    def register_credentials(
        self,
        access_key_id: str,
        role_arn: str,
        *,
        session_name: str = "session",
        session_token: str | None = None,
        session_expires_at: dt.datetime | float | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        """Make `access_key_id` (e.g. from moto's AssumeRole) a session of `role_arn`.

        With `session_token` the request must carry it; with `secret_access_key`
        the SigV4 signature must verify; with `session_expires_at` a token may
        not outlive the session (SessionDurationEscalationException).
        """
        if not _ROLE_ARN.match(role_arn):
            raise ValueError(
                f"role_arn {role_arn!r} is not an IAM role ARN (arn:aws:iam::<12 digits>:role/[path/]name)"
            )
        if isinstance(session_expires_at, dt.datetime):
            session_expires_at = session_expires_at.timestamp()
        with self._lock:
            self._callers[access_key_id] = Caller(
                access_key_id, role_arn, session_name, session_token, session_expires_at, secret_access_key
            )

    def jwks(self) -> dict:
        """Public keys of the issuer (what `<issuer>/.well-known/jwks.json` would serve)."""
        return self.keys.jwks()

    def verify(self, token: str, *, audience: str | None = None) -> dict:
        """Verify a token this double issued (signature, issuer, lifetime, audience when given)."""
        verify_signature(token, self.jwks())
        return jwt.decode(
            token,
            options={
                "verify_signature": False,
                "verify_exp": True,
                "verify_nbf": True,
                "verify_iat": True,
                "verify_iss": True,
                "verify_aud": audience is not None,
                "require": ["iss", "sub", "aud", "exp", "iat", "jti"],
            },
            issuer=self.issuer,
            audience=audience,
        )

    # --- faults --------------------------------------------------------------
    def throttle_next(self, n: int) -> None:
        with self._lock:
            self._throttle += n

    def fail_next(self, n: int, status: int = 500) -> None:
        with self._lock:
            self._fail.extend([status] * n)

    def _take_fault(self) -> StsError | None:
        with self._lock:
            if self._throttle:
                self._throttle -= 1
                return StsError(400, "Throttling", "Rate exceeded")
            if self._fail:
                status = self._fail.pop(0)
                code = "ServiceUnavailable" if status == 503 else "InternalFailure"
                return StsError(
                    status,
                    code,
                    "The request processing has failed because of an unknown error, exception or failure.",
                    sender=False,
                )
        return None

    # --- operations ----------------------------------------------------------
    def caller(self, method: str, path: str, headers, body: bytes) -> Caller:
        authorization = headers.get("Authorization", "")
        match = _CREDENTIAL.search(authorization)
        if not match:
            raise StsError(403, "MissingAuthenticationToken", "Request is missing Authentication Token")
        with self._lock:
            caller = self._callers.get(match.group(1))
        if caller is None or (
            caller.session_token is not None and caller.session_token != headers.get("X-Amz-Security-Token")
        ):
            raise StsError(403, "InvalidClientTokenId", "The security token included in the request is invalid.")
        if caller.secret_access_key is not None and not _sigv4_matches(
            caller.secret_access_key, method, path, headers, body
        ):
            raise StsError(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. "
                "Check your AWS Secret Access Key and signing method. Consult the service "
                "documentation for details.",
            )
        return caller

    def get_caller_identity(self, caller: Caller) -> dict:
        return {
            "Arn": caller.assumed_role_arn,
            "UserId": f"AROA{caller.access_key_id[4:]}:{caller.session_name}",
            "Account": caller.account,
        }

    def get_web_identity_token(self, caller: Caller, params: dict[str, str]) -> dict:
        audiences = _members(params, "Audience")
        algorithm = params.get("SigningAlgorithm")
        raw_duration = params.get("DurationSeconds", str(DEFAULT_DURATION_SECONDS))
        tags = _tags(params)

        errors = []
        if not audiences:
            errors.append("Value null at 'audience' failed to satisfy constraint: Member must not be null")
        elif len(audiences) > 10:
            errors.append(
                f"Value '{audiences}' at 'audience' failed to satisfy constraint: "
                "Member must have length less than or equal to 10"
            )
        if algorithm is None:
            errors.append("Value null at 'signingAlgorithm' failed to satisfy constraint: Member must not be null")
        elif algorithm not in SUPPORTED_ALGORITHMS:
            errors.append(
                f"Value '{algorithm}' at 'signingAlgorithm' failed to satisfy constraint: "
                f"Member must satisfy enum value set: [{', '.join(SUPPORTED_ALGORITHMS)}]"
            )
        try:
            duration = int(raw_duration)
        except ValueError:
            raise StsError(
                400, "ValidationError", f"Value '{raw_duration}' at 'durationSeconds' is not an integer"
            ) from None
        if duration < MIN_DURATION_SECONDS:
            errors.append(
                f"Value '{duration}' at 'durationSeconds' failed to satisfy constraint: "
                f"Member must have value greater than or equal to {MIN_DURATION_SECONDS}"
            )
        elif duration > MAX_DURATION_SECONDS:
            errors.append(
                f"Value '{duration}' at 'durationSeconds' failed to satisfy constraint: "
                f"Member must have value less than or equal to {MAX_DURATION_SECONDS}"
            )
        if errors:
            n = len(errors)
            raise StsError(
                400, "ValidationError", f"{n} validation error{'s' if n > 1 else ''} detected: " + "; ".join(errors)
            )

        if not self.federation_enabled:
            raise StsError(403, "OutboundWebIdentityFederationDisabledException", FEDERATION_DISABLED_MESSAGE)

        # IAM evaluation of the task role policy's conditions. Real IAM says only "no identity-based
        # policy allows"; the double adds the failing condition key so a test can tell which one.
        denied = (
            f"User: {caller.assumed_role_arn} is not authorized to perform: sts:GetWebIdentityToken "
            "because no identity-based policy allows the sts:GetWebIdentityToken action"
        )
        outside = [a for a in audiences if a not in self.allowed_audiences]
        if outside:
            raise StsError(
                403,
                "AccessDenied",
                f"{denied} (condition ForAllValues:StringEquals sts:IdentityTokenAudience does not allow {outside})",
            )
        if duration > self.max_duration_seconds:
            raise StsError(
                403,
                "AccessDenied",
                f"{denied} (condition NumericLessThanEquals sts:DurationSeconds "
                f"{self.max_duration_seconds} does not allow {duration})",
            )
        if algorithm not in self.allowed_signing_algorithms:
            raise StsError(
                403,
                "AccessDenied",
                f"{denied} (condition StringEquals sts:SigningAlgorithm "
                f"{list(self.allowed_signing_algorithms)} does not allow {algorithm})",
            )

        now = time.time()
        if caller.session_expires_at is not None and now + duration > caller.session_expires_at:
            raise StsError(403, "SessionDurationEscalationException", SESSION_ESCALATION_MESSAGE)

        iat = int(now + self.clock_skew_seconds)
        exp = iat + duration
        aws_claims: dict = {"aws_account": caller.account, "source_region": self.region}
        if tags:
            aws_claims["request_tags"] = tags
        claims = {
            "iss": self.issuer,
            "sub": caller.role_arn,
            "aud": audiences[0] if len(audiences) == 1 else audiences,
            "iat": iat,
            "nbf": iat,
            "exp": exp,
            "jti": str(uuid.uuid4()),
            AWS_CLAIMS_NAMESPACE: aws_claims,
        }
        token = self.keys.sign(claims, algorithm)
        with self._lock:
            self.issued.append(claims)
        return {"WebIdentityToken": token, "Expiration": _iso8601(exp)}


_AUTH = re.compile(r"^AWS4-HMAC-SHA256 Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]{64})$")


def _sigv4_matches(secret: str, method: str, path: str, headers, body: bytes) -> bool:
    """Recompute the SigV4 signature (AWS4-HMAC-SHA256) over the signed headers and the body."""
    match = _AUTH.match(headers.get("Authorization", "").strip())
    if not match:
        return False
    credential, signed_headers, signature = match.groups()
    _akid, date, region, service, _term = credential.split("/")
    amz_date = headers.get("X-Amz-Date", "")
    canonical_headers = "".join(
        f"{name}:{' '.join((headers.get(name) or '').split())}\n" for name in signed_headers.split(";")
    )
    canonical_path, _, query = path.partition("?")
    canonical_request = "\n".join(
        [method, canonical_path or "/", query, canonical_headers, signed_headers, hashlib.sha256(body).hexdigest()]
    )
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            f"{date}/{region}/{service}/aws4_request",
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def _members(params: dict[str, str], name: str) -> list[str]:
    indexes = sorted(int(k.split(".")[2]) for k in params if re.fullmatch(rf"{name}\.member\.\d+", k))
    return [params[f"{name}.member.{i}"] for i in indexes]


def _tags(params: dict[str, str]) -> dict[str, str]:
    indexes = sorted({int(m.group(1)) for k in params if (m := re.fullmatch(r"Tags\.member\.(\d+)\.Key", k))})
    return {params[f"Tags.member.{i}.Key"]: params.get(f"Tags.member.{i}.Value", "") for i in indexes}


def _iso8601(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _xml_fields(fields: dict) -> str:
    return "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in fields.items())


class StsHandler(DoubleHandler):
    server_version = "AmazonSTSDouble"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # tokens never reach a log
        pass

    def _send(self, status: int, body: str, content_type: str = "text/xml") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", self._request_id)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # the issuer's discovery documents, served here for convenience
        self._request_id = str(uuid.uuid4())
        state: StsDoubleState = self.server.state

        if self.path == "/.well-known/jwks.json":
            self._send(200, json.dumps(state.jwks()), "application/json")
        elif self.path == "/.well-known/openid-configuration":
            self._send(
                200,
                json.dumps(
                    {
                        "issuer": state.issuer,
                        "jwks_uri": f"{state.issuer}/.well-known/jwks.json",
                        "id_token_signing_alg_values_supported": list(SUPPORTED_ALGORITHMS),
                        "response_types_supported": ["id_token"],
                        "subject_types_supported": ["public"],
                    }
                ),
                "application/json",
            )
        else:
            self._send(404, "", "text/plain")

    def do_POST(self) -> None:
        self._request_id = str(uuid.uuid4())
        state: StsDoubleState = self.server.state
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        params = {k: v[0] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
        action = params.get("Action", "")
        try:
            fault = state._take_fault()
            if fault:
                raise fault
            if params.get("Version") != API_VERSION:
                raise StsError(
                    400, "InvalidAction", f"Could not find operation {action} for version {params.get('Version')}"
                )
            caller = state.caller("POST", self.path, self.headers, raw)
            if action == "GetWebIdentityToken":
                result = state.get_web_identity_token(caller, params)
            elif action == "GetCallerIdentity":
                result = state.get_caller_identity(caller)
            else:
                raise StsError(400, "InvalidAction", f"Could not find operation {action} for version {API_VERSION}")
        except StsError as exc:
            with state._lock:
                state.requests.append((action, exc.code))
            self._send(
                exc.status,
                (
                    f'<ErrorResponse xmlns="{XMLNS}"><Error><Type>{"Sender" if exc.sender else "Receiver"}</Type>'
                    f"<Code>{escape(exc.code)}</Code><Message>{escape(exc.message)}</Message></Error>"
                    f"<RequestId>{self._request_id}</RequestId></ErrorResponse>"
                ),
            )
            return
        with state._lock:
            state.requests.append((action, "OK"))
        self._send(
            200,
            (
                f'<{action}Response xmlns="{XMLNS}"><{action}Result>{_xml_fields(result)}</{action}Result>'
                f"<ResponseMetadata><RequestId>{self._request_id}</RequestId></ResponseMetadata></{action}Response>"
            ),
        )


def serve_sts(state: StsDoubleState, ca: LocalCA | None = None, port: int = 0) -> ServedDouble:
    """The STS double on 127.0.0.1 (plain HTTP unless a CA is given); use as a context manager or `.start()`."""
    return ServedDouble(StsHandler, state, ca, port)


def assume_role_and_register(
    state: StsDoubleState,
    moto_url: str,
    role_arn: str,
    *,
    session_name: str = "cosmos-export",
    duration_seconds: int = 3600,
    region: str = "us-east-1",
) -> dict:
    """AssumeRole on moto (as ECS would for the task role) and register the session with the double.

    Returns boto3 keyword arguments (`aws_access_key_id`, `aws_secret_access_key`,
    `aws_session_token`) for a client of the task role's session.
    """
    import boto3

    moto_sts = boto3.client(
        "sts", endpoint_url=moto_url, region_name=region, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    creds = moto_sts.assume_role(RoleArn=role_arn, RoleSessionName=session_name, DurationSeconds=duration_seconds)[
        "Credentials"
    ]
    state.register_credentials(
        creds["AccessKeyId"],
        role_arn,
        session_name=session_name,
        session_token=creds["SessionToken"],
        session_expires_at=creds["Expiration"],
        secret_access_key=creds["SecretAccessKey"],
    )
    return {
        "aws_access_key_id": creds["AccessKeyId"],
        "aws_secret_access_key": creds["SecretAccessKey"],
        "aws_session_token": creds["SessionToken"],
    }
