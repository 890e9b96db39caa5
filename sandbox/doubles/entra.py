"""Microsoft Entra ID double: the v2.0 token endpoint for workload identity federation.

What the clients call (azure-identity 1.27, msal 1.39):
- `ClientAssertionCredential` (sync) does *not* go through MSAL for the
  network: its `AadClient` POSTs straight to
  `<authority>/<tenant>/oauth2/v2.0/token` (authority = `https://` + the host
  given, trailing `/` stripped; plain http is refused by azure-identity) with the
  form fields `client_assertion`, `client_assertion_type=urn:ietf:params:oauth:
  client-assertion-type:jwt-bearer`, `client_id`, `grant_type=client_credentials`,
  `scope` (space separated). No discovery request is made. It calls the assertion
  callback on every token request, caches the access token until `expires_on`
  (`request time + expires_in`) and retries 408/429/5xx (honouring Retry-After).
- MSAL `ConfidentialClientApplication` (used by other credentials) first GETs
  `<authority>/<tenant>/v2.0/.well-known/openid-configuration` and posts to its
  `token_endpoint`; both are served.
- Errors are JSON `{error, error_description: "AADSTS<code>: ... Trace ID: ..
  Correlation ID: .. Timestamp: ..", error_codes: [code], timestamp, trace_id,
  correlation_id, error_uri}`; azure-identity raises `ClientAuthenticationError`
  with `Microsoft Entra ID error '(<error>) <error_description>'`.

Assertion checks, in this order: signing algorithm (only RS256/384/512; ES384
gives AADSTS5002738), client app (700016), a federated credential with the
assertion's issuer (700211), signature with that issuer's JWKS (50013),
lifetime (700024, outside nbf/exp by more than `clock_leeway_seconds`), subject (exact; 7002138 when it differs only in case,
700213 otherwise), audience (700212), and a single credential matching all
three (70021).

Access tokens: RS256 JWT with `aud` = the scope's resource (`scope` minus
`/.default`; the Cosmos SDK asks `<scheme>://<hostname>/.default`, no port),
`iss` = `https://sts.windows.net/<tenant>/`, `tid`, `oid` (service principal
object id), `appid`, `sub`, `iat`/`nbf`/`exp`.

Clock leeway: real Entra (assertion nbf/exp) and Cosmos DB (access token
nbf/exp) tolerate about five minutes of clock skew, so both checks here allow
`clock_leeway_seconds` (default `DEFAULT_CLOCK_LEEWAY_SECONDS`, 300). Tests of
expiry must expire beyond it, or set it to 0 to test an exact boundary.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Iterable
from urllib.parse import parse_qs, urlsplit

import jwt

from sandbox.doubles.jwt_keys import KeySet, SignatureError, unverified, verify_signature
from sandbox.doubles.server import DoubleHandler, ServedDouble
from sandbox.doubles.tls import LocalCA

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: Entra accepts only RSA-signed client assertions.
ACCEPTED_ASSERTION_ALGORITHMS = ("RS256", "RS384", "RS512")
MAX_FEDERATED_CREDENTIALS = 20
#: Clock skew tolerated on nbf/exp, like real Entra and Cosmos DB (about 5 minutes).
DEFAULT_CLOCK_LEEWAY_SECONDS = 300
_WIF_DOC = "https://learn.microsoft.com/entra/workload-id/workload-identity-federation"


class EntraError(Exception):
    def __init__(self, code: int, error: str, description: str, status: int = 400):
        super().__init__(f"AADSTS{code}: {description}")
        self.code, self.error, self.description, self.status = code, error, description, status


@dataclass(frozen=True)
class FederatedCredential:
    issuer: str
    subject: str
    audiences: tuple[str, ...]


@dataclass
class Application:
    client_id: str
    service_principal_object_id: str
    federated_credentials: list[FederatedCredential] = field(default_factory=list)


@dataclass(frozen=True)
class TokenRequest:
    """One token request as the double saw it (a hash of the assertion, never the assertion)."""

    at: float
    client_id: str
    scope: str
    assertion_sha256: str | None
    assertion_jti: str | None
    outcome: str  # "OK" or "AADSTS<code>"


class EntraDoubleState:
    def __init__(
        self,
        tenant_id: str,
        *,
        token_lifetime_seconds: int = 3600,
        clock_leeway_seconds: int = DEFAULT_CLOCK_LEEWAY_SECONDS,
        known_resources: Iterable[str] | None = None,
    ) -> None:
        if clock_leeway_seconds < 0:
            raise ValueError(
                f"clock_leeway_seconds={clock_leeway_seconds!r} is negative: pass 0 for exact "
                f"nbf/exp checks, or the tolerated skew in seconds (real services: about 300)"
            )
        self.tenant_id = tenant_id
        self.token_lifetime_seconds = token_lifetime_seconds
        # Tolerance on nbf/exp of assertions (token endpoint) and access tokens (verify_access_token).
        self.clock_leeway_seconds = clock_leeway_seconds
        # When set, a scope for any other resource fails with AADSTS500011 (the Cosmos SDK
        # falls back to https://cosmos.azure.com/.default on that code).
        self.known_resources = None if known_resources is None else set(known_resources)
        self.clock_skew_seconds = 0.0  # shifts the double's clock (assertion checks and issued tokens)
        self.keys = KeySet()
        self.issuer = f"https://sts.windows.net/{tenant_id}/"
        self._trusted: dict[str, dict] = {}
        self._apps: dict[str, Application] = {}
        self._fail: list[int] = []
        self._lock = threading.Lock()
        self.requests: list[TokenRequest] = []
        self.discovery_requests: list[str] = []  # paths of GETs (openid-configuration, keys)

    # --- setup ---------------------------------------------------------------
    def trust_issuer(self, issuer: str, jwks: dict) -> None:
        """Keys Entra would fetch from `<issuer>/.well-known/openid-configuration` -> `jwks_uri`."""
        with self._lock:
            self._trusted[issuer] = jwks

    def add_application(self, client_id: str, service_principal_object_id: str) -> Application:
        with self._lock:
            app = self._apps[client_id] = Application(client_id, service_principal_object_id)
            return app

    def add_federated_credential(self, client_id: str, issuer: str, subject: str, audiences: Iterable[str]) -> None:
        audiences = tuple(audiences)
        with self._lock:
            app = self._apps.get(client_id)
            if app is None:
                raise ValueError(f"no application with client_id {client_id!r}; call add_application first")
            if len(app.federated_credentials) >= MAX_FEDERATED_CREDENTIALS:
                raise ValueError(
                    f"application {client_id} already has {MAX_FEDERATED_CREDENTIALS} federated "
                    "identity credentials, the maximum Entra allows"
                )
            if len(audiences) != 1:
                raise ValueError(
                    f"audiences {list(audiences)!r}: a federated identity credential takes exactly one "
                    "audience (api://AzureADTokenExchange)"
                )
            app.federated_credentials.append(FederatedCredential(issuer, subject, audiences))

    # --- faults --------------------------------------------------------------
    def fail_next(self, n: int, status: int = 503) -> None:
        with self._lock:
            self._fail.extend([status] * n)

    def now(self) -> float:
        return time.time() + self.clock_skew_seconds

    # --- request log ---------------------------------------------------------
    def assertions_seen(self) -> int:
        """How many token requests carried an assertion."""
        return sum(1 for r in self.requests if r.assertion_sha256)

    def distinct_assertions(self) -> int:
        return len({r.assertion_sha256 for r in self.requests if r.assertion_sha256})

    # --- token endpoint --------------------------------------------------------
    def token(self, tenant: str, form: dict[str, str]) -> dict:
        assertion = form.get("client_assertion")
        digest = hashlib.sha256(assertion.encode()).hexdigest() if assertion else None
        jti = None
        try:
            if assertion:
                try:
                    jti = unverified(assertion)[1].get("jti")
                except jwt.InvalidTokenError:
                    pass
            result = self._token(tenant, form)
            outcome = "OK"
            return result
        except EntraError as exc:
            outcome = f"AADSTS{exc.code}"
            raise
        finally:
            with self._lock:
                self.requests.append(
                    TokenRequest(time.time(), form.get("client_id", ""), form.get("scope", ""), digest, jti, outcome)
                )

    def _token(self, tenant: str, form: dict[str, str]) -> dict:
        if tenant.lower() != self.tenant_id.lower():
            raise EntraError(
                90002,
                "invalid_request",
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and "
                "are signing into the correct cloud.",
            )
        grant_type = form.get("grant_type")
        if grant_type != "client_credentials":
            raise EntraError(
                70003, "unsupported_grant_type", f"The app requested an unsupported grant type '{grant_type}'."
            )
        client_id = form.get("client_id", "")
        if not form.get("client_assertion"):
            raise EntraError(
                7000216,
                "invalid_client",
                "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
                401,
            )
        if form.get("client_assertion_type") != JWT_BEARER:
            raise EntraError(70002, "invalid_client", f"The client_assertion_type must be '{JWT_BEARER}'.", 401)
        resource = self._resource(form.get("scope", ""))
        app = self._validate_assertion(client_id, form["client_assertion"])

        now = int(self.now())
        exp = now + self.token_lifetime_seconds
        access_token = self.keys.sign(
            {
                "aud": resource,
                "iss": self.issuer,
                "iat": now,
                "nbf": now,
                "exp": exp,
                "appid": app.client_id,
                "appidacr": "2",
                "idtyp": "app",
                "oid": app.service_principal_object_id,
                "sub": app.service_principal_object_id,
                "tid": self.tenant_id,
                "ver": "1.0",
                "uti": uuid.uuid4().hex[:22],
            },
            "RS256",
        )
        return {
            "token_type": "Bearer",
            "expires_in": self.token_lifetime_seconds,
            "ext_expires_in": self.token_lifetime_seconds,
            "access_token": access_token,
        }

    def _resource(self, scope: str) -> str:
        scopes = scope.split()
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            raise EntraError(
                1002012,
                "invalid_scope",
                f"The provided value for scope {scope} is not valid. Client credential flows must "
                "have a scope value with /.default suffixed to the resource identifier "
                "(application ID URI).",
            )
        resource = scopes[0].removesuffix("/.default")
        if self.known_resources is not None and resource not in self.known_resources:
            raise EntraError(
                500011,
                "invalid_resource",
                f"The resource principal named {resource} was not found in the tenant named "
                f"{self.tenant_id}. This can happen if the application has not been installed by the "
                "administrator of the tenant or consented to by any user in the tenant. You might "
                "have sent your authentication request to the wrong tenant.",
            )
        return resource

    def _validate_assertion(self, client_id: str, assertion: str) -> Application:
        try:
            header, claims = unverified(assertion)
        except jwt.InvalidTokenError:
            raise EntraError(50027, "invalid_request", "JWT token is invalid or malformed.") from None
        alg = header.get("alg")
        if alg not in ACCEPTED_ASSERTION_ALGORITHMS:
            raise EntraError(
                5002738,
                "invalid_client",
                f"Invalid JWT token. '{alg}' is not a supported signature algorithm. Supported "
                f"signing algorithms are: '{','.join(ACCEPTED_ASSERTION_ALGORITHMS)}'",
                401,
            )
        with self._lock:
            app = self._apps.get(client_id)
            credentials = list(app.federated_credentials) if app else []
            trusted = dict(self._trusted)
        if app is None:
            raise EntraError(
                700016,
                "unauthorized_client",
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{self.tenant_id}'. This can happen if the application has not been installed by "
                "the administrator of the tenant or consented to by any user in the tenant. You may "
                "have sent your authentication request to the wrong tenant.",
            )
        iss, sub, aud = claims.get("iss"), claims.get("sub"), claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]

        if not credentials:
            raise EntraError(
                70021,
                "invalid_client",
                f"No matching federated identity record found for presented assertion. Assertion "
                f"Issuer: '{iss}'. Assertion Subject: '{sub}'. Assertion Audience: '{aud}'. "
                f"{_WIF_DOC}",
                401,
            )
        by_issuer = [c for c in credentials if c.issuer == iss]
        if not by_issuer:
            raise EntraError(
                700211,
                "invalid_client",
                f"No matching federated identity record found for presented assertion issuer "
                f"'{iss}'. Please check your federated identity credential Subject, Audience and "
                f"Issuer against the presented assertion. {_WIF_DOC}",
                401,
            )
        if iss not in trusted:
            raise EntraError(
                50013,
                "invalid_client",
                f"Assertion failed signature validation. [Reason - The key was not found., Issuer: '{iss}']",
                401,
            )
        try:
            verify_signature(assertion, trusted[iss], algorithms=ACCEPTED_ASSERTION_ALGORITHMS)
        except SignatureError as exc:
            raise EntraError(
                50013, "invalid_client", f"Assertion failed signature validation. [Reason - {exc}]", 401
            ) from None

        now = self.now()
        leeway = self.clock_leeway_seconds
        nbf, exp = claims.get("nbf", claims.get("iat")), claims.get("exp")
        if exp is None or now > exp + leeway or (nbf is not None and now + leeway < nbf):
            raise EntraError(
                700024,
                "invalid_client",
                f"Client assertion is not within its valid time range. Current time: {_ts(now)}, "
                f"assertion valid from {_ts(nbf)}, expiry time of assertion {_ts(exp)}. Review the "
                "documentation at https://learn.microsoft.com/entra/identity-platform/"
                "certificate-credentials .",
                401,
            )

        by_subject = [c for c in by_issuer if c.subject == sub]
        if not by_subject:
            if isinstance(sub, str) and any(c.subject.lower() == sub.lower() for c in by_issuer):
                raise EntraError(
                    7002138,
                    "invalid_client",
                    f"No matching federated identity record found for presented assertion subject "
                    f"'{sub}'. The subject matches with case-insensitive comparison, but not with "
                    "case-sensitive comparison. Check your federated identity credential Subject, "
                    f"Audience and Issuer against the presented assertion. See documentation at: "
                    f"{_WIF_DOC}.",
                    401,
                )
            raise EntraError(
                700213,
                "invalid_client",
                f"No matching federated identity record found for presented assertion subject "
                f"'{sub}'. Check your federated identity credential Subject, Audience and Issuer "
                f"against the presented assertion. {_WIF_DOC}",
                401,
            )
        if not any(a in c.audiences for c in by_subject for a in audiences):
            raise EntraError(
                700212,
                "invalid_client",
                f"No matching federated identity record found for presented assertion audience "
                f"'{aud if isinstance(aud, str) else ','.join(map(str, audiences))}'. Please check "
                "your federated identity credential Subject, Audience and Issuer against the "
                f"presented assertion. {_WIF_DOC}",
                401,
            )
        return app

    # --- resource side ---------------------------------------------------------
    def jwks(self) -> dict:
        return self.keys.jwks(("RS256",))

    def verify_access_token(self, token: str, audience: str) -> dict:
        """Verify an access token this double issued for `audience` (used by the Cosmos double).

        Checked against the resource's own (real) clock, not the double's skewed one, with
        `clock_leeway_seconds` on nbf/exp as Cosmos DB allows.
        """
        verify_signature(token, self.jwks(), algorithms=("RS256",))
        return jwt.decode(
            token,
            options={
                "verify_signature": False,
                "verify_exp": True,
                "verify_nbf": True,
                "verify_iss": True,
                "verify_aud": True,
                "require": ["aud", "iss", "exp", "oid", "tid"],
            },
            audience=audience,
            issuer=self.issuer,
            leeway=self.clock_leeway_seconds,
        )

    def openid_configuration(self, base_url: str, tenant: str) -> dict:
        root = f"{base_url}/{tenant}"
        return {
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{base_url}/{tenant}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base_url}/{self.tenant_id}/v2.0",
            "request_uri_parameter_supported": False,
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{root}/oauth2/v2.0/logout",
            "tenant_region_scope": "NA",
        }

    def _take_fault(self) -> int | None:
        with self._lock:
            return self._fail.pop(0) if self._fail else None


def _ts(epoch: float | None) -> str:
    if epoch is None:
        return "(none)"
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def error_body(exc: EntraError) -> dict:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
    return {
        "error": exc.error,
        "error_description": f"AADSTS{exc.code}: {exc.description} Trace ID: {trace_id} "
        f"Correlation ID: {correlation_id} Timestamp: {now}",
        "error_codes": [exc.code],
        "timestamp": now,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"https://login.microsoftonline.com/error?code={exc.code}",
    }


_TOKEN_PATH = re.compile(r"^/([^/]+)/oauth2/v2\.0/token$")
_OIDC_PATH = re.compile(r"^/([^/]+)/v2\.0/\.well-known/openid-configuration$")
_KEYS_PATH = re.compile(r"^/([^/]+)/discovery/v2\.0/keys$")


class EntraHandler(DoubleHandler):
    server_version = "EntraDouble"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # assertions never reach a log
        pass

    def _json(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store, no-cache")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _base_url(self) -> str:
        return f"https://{self.headers.get('Host', '127.0.0.1')}"

    def do_GET(self) -> None:
        state: EntraDoubleState = self.server.state
        path = urlsplit(self.path).path
        with state._lock:
            state.discovery_requests.append(path)
        if m := _OIDC_PATH.match(path):
            self._json(200, state.openid_configuration(self._base_url(), m.group(1)))
        elif _KEYS_PATH.match(path):
            self._json(200, state.jwks())
        else:
            self._json(404, error_body(EntraError(90002, "invalid_request", f"Unknown path {path}.")))

    def do_POST(self) -> None:
        state: EntraDoubleState = self.server.state
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        path = urlsplit(self.path).path
        m = _TOKEN_PATH.match(path)
        if not m:
            self._json(404, error_body(EntraError(90002, "invalid_request", f"Unknown path {path}.")))
            return
        status = state._take_fault()
        if status is not None:
            self._json(
                status,
                error_body(
                    EntraError(
                        90033, "temporarily_unavailable", "A transient error has occurred. Please try again.", status
                    )
                ),
            )
            return
        form = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
        try:
            self._json(200, state.token(m.group(1), form))
        except EntraError as exc:
            self._json(exc.status, error_body(exc))


def serve_entra(state: EntraDoubleState, ca: LocalCA, port: int = 0) -> ServedDouble:
    """The Entra double over HTTPS on 127.0.0.1; pass `authority=served.url` to azure-identity."""
    return ServedDouble(EntraHandler, state, ca, port)
