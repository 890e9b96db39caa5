"""Helpers for tests that talk to the gateway double with the real SDK.

`sdk_client(url, credential, ca)` builds a CosmosClient that really verifies
the double's certificate: azure-cosmos 4.17 silently turns TLS verification
off for hosts named 127.0.0.1/localhost unless an `ssl_config` is given, so a
bare `connection_verify=<bundle>` is not enough.

`TestTokenIssuer` signs RS256 access tokens with pyjwt and verifies them the
way the gateway's `token_verifier(token, audience)` hook expects, with the
same nbf/exp clock leeway as real Cosmos DB (`leeway_seconds`, default 300).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
from azure.core.credentials import AccessToken
from azure.cosmos import CosmosClient, documents
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.doubles.entra import DEFAULT_CLOCK_LEEWAY_SECONDS
from sandbox.doubles.tls import LocalCA


def sdk_client(url: str, credential: Any, ca: LocalCA, **kwargs: Any) -> CosmosClient:
    return CosmosClient(
        url,
        credential=credential,
        connection_verify=str(ca.bundle_file),
        ssl_config=documents.SSLConfiguration(),
        **kwargs,
    )


class TestTokenIssuer:
    """Signs and verifies Entra-like access tokens (RS256, aud, oid, tid, exp)."""

    __test__ = False  # not a pytest class

    def __init__(
        self,
        tenant_id: str = "11111111-2222-3333-4444-555555555555",
        *,
        leeway_seconds: int = DEFAULT_CLOCK_LEEWAY_SECONDS,
    ):
        self.tenant_id = tenant_id
        self.leeway_seconds = leeway_seconds
        self.issuer = f"https://login.microsoftonline.com/{tenant_id}/v2.0"
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def sign(self, *, oid: str, audience: str, lifetime: int = 3600, key: Any = None) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": audience,
            "oid": oid,
            "tid": self.tenant_id,
            "sub": oid,
            "iat": now,
            "nbf": now - 5,
            "exp": now + lifetime,
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(claims, key or self._key, algorithm="RS256")

    def verify(self, token: str, audience: str) -> dict:
        return jwt.decode(
            token,
            self._key.public_key(),
            algorithms=["RS256"],
            audience=audience,
            issuer=self.issuer,
            options={"require": ["exp", "aud", "oid"]},
            leeway=self.leeway_seconds,
        )


class JwtCredential:
    """A TokenCredential that returns tokens from a TestTokenIssuer and records the scopes asked for."""

    def __init__(self, issuer: TestTokenIssuer, oid: str, *, audience: str | None = None, lifetime: int = 3600):
        self.issuer, self.oid, self.audience, self.lifetime = issuer, oid, audience, lifetime
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        # An Entra token's aud is the scope's resource (the scope without "/.default").
        audience = self.audience or scopes[0].removesuffix("/.default")
        return AccessToken(
            self.issuer.sign(oid=self.oid, audience=audience, lifetime=self.lifetime), int(time.time()) + self.lifetime
        )
