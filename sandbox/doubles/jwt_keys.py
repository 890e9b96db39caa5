"""Signing keys, JWKS and JWT verification shared by the identity doubles.

The STS double signs web identity tokens with RS256 or ES384 (the two
algorithms `GetWebIdentityToken` offers); the Entra double signs access tokens
with RS256. Both publish their public keys as a JWKS whose `kid` is the RFC 7638
thumbprint, and verifiers pick the key by the token's `kid` header, as real
relying parties do.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

#: Algorithms these doubles can sign with.
SUPPORTED_ALGORITHMS = ("RS256", "ES384")


def _thumbprint(jwk: dict) -> str:
    """RFC 7638 JWK thumbprint (base64url SHA-256 of the required members)."""
    members = ("e", "kty", "n") if jwk["kty"] == "RSA" else ("crv", "kty", "x", "y")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


class KeySet:
    """One lazily generated private key per algorithm, and their public JWKS."""

    def __init__(self) -> None:
        self._keys: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _key(self, alg: str) -> Any:
        if alg not in SUPPORTED_ALGORITHMS:
            raise ValueError(f"signing algorithm {alg!r} is not supported; use one of {SUPPORTED_ALGORITHMS}")
        with self._lock:
            if alg not in self._keys:
                # RSA generation is the slow part (~0.1 s); do it once per double.
                self._keys[alg] = (
                    rsa.generate_private_key(public_exponent=65537, key_size=2048)
                    if alg == "RS256"
                    else ec.generate_private_key(ec.SECP384R1())
                )
            return self._keys[alg]

    def kid(self, alg: str) -> str:
        return _thumbprint(_public_jwk_without_kid(alg, self._key(alg).public_key()))

    def sign(self, claims: dict, alg: str = "RS256", *, typ: str = "JWT") -> str:
        return jwt.encode(claims, self._key(alg), algorithm=alg, headers={"kid": self.kid(alg), "typ": typ})

    def jwks(self, algorithms: tuple[str, ...] = SUPPORTED_ALGORITHMS) -> dict:
        keys = []
        for alg in algorithms:
            jwk = _public_jwk_without_kid(alg, self._key(alg).public_key())
            jwk.update({"kid": _thumbprint(jwk), "use": "sig", "alg": alg})
            keys.append(jwk)
        return {"keys": keys}


def _public_jwk_without_kid(alg: str, public_key: Any) -> dict:
    return (RSAAlgorithm if alg == "RS256" else ECAlgorithm).to_jwk(public_key, as_dict=True)


class SignatureError(Exception):
    """The token's signature does not verify against the JWKS (or no key has its kid)."""


def verify_signature(token: str, jwks: dict, *, algorithms: tuple[str, ...] = SUPPORTED_ALGORITHMS) -> dict:
    """Check the signature with the JWKS key named by `kid`; return the claims.

    Only the signature is checked here: callers apply their own issuer,
    audience and lifetime rules (and error codes) afterwards.
    """
    header = jwt.get_unverified_header(token)
    kid = header.get("kid")
    for jwk in jwks.get("keys", []):
        if jwk.get("kid") == kid:
            key = jwt.PyJWK(jwk, algorithm=jwk.get("alg") or header.get("alg"))
            try:
                return jwt.decode(
                    token,
                    key.key,
                    algorithms=list(algorithms),
                    options={
                        "verify_signature": True,
                        "verify_exp": False,
                        "verify_nbf": False,
                        "verify_iat": False,
                        "verify_aud": False,
                        "verify_iss": False,
                    },
                )
            except jwt.InvalidSignatureError as exc:
                raise SignatureError(f"signature of key {kid!r} does not verify: {exc}") from None
    raise SignatureError(f"no key with kid {kid!r} in the issuer's JWKS")


def unverified(token: str) -> tuple[dict, dict]:
    """Header and claims of a token, without any verification (for routing only)."""
    return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})
