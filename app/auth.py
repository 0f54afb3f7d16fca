"""Bearer JWT auth: ``sub`` is the user id.

Two kinds of token are accepted, side by side:
- HS256, signed with ``JWT_SECRET`` (or the dev-mode secret): the tokens this server issues.
- EdDSA, RS256 and ES256 from an identity provider, checked against its JWKS (``JWT_JWKS_URL``).

The token's header picks the kind, and each kind only ever sees its own keys: an HS256 token
is never checked against a public key (the classic algorithm-confusion forgery), and a JWKS
key only verifies the one algorithm its key type implies.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, NamedTuple

import httpx
import jwt
from litestar import Request
from litestar.config.cors import CORSConfig
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.params import FromPath

from app.settings import Settings
from app.tokens import issue, signing_secret
from domain import log_context
from domain.errors import AuthError, Forbidden, InvalidInput, KeysUnavailable  # 401, 403, 503; WebSocket: 1008 / 1013
from domain.limits import check_user_id

log = logging.getLogger(__name__)

ASYMMETRIC_ALGORITHMS = frozenset({"EdDSA", "RS256", "ES256"})


class JWKSKeys:
    """An identity provider's public keys by ``kid``, fetched with httpx and cached.

    The set is fetched on first use, again once it is ``max_age_s`` old, and again when a
    token names a ``kid`` the cache lacks (a key rotation), but never more often than once per
    ``refresh_interval_s``: tokens with made-up kids cannot turn into a flood of fetches.
    """

    def __init__(
        self, url: str, *, refresh_interval_s: float = 30.0, max_age_s: float = 3600.0, timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.url = url
        self.refresh_interval_s = refresh_interval_s
        self.max_age_s = max_age_s
        self.timeout_s = timeout_s
        self._transport = transport
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # monotonic time of the last good fetch
        self._tried_at = float("-inf")  # monotonic time of the last attempt, good or not
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str | None) -> jwt.PyJWK:
        if self._fetched_at is None or time.monotonic() - self._fetched_at > self.max_age_s:
            await self._refresh()
        key = self._lookup(kid)
        if key is None and kid is not None:
            await self._refresh()
            key = self._lookup(kid)
        if key is None:
            if self._fetched_at is None:
                raise KeysUnavailable("The identity provider's keys could not be fetched; try again later.",
                                      retry_after_s=self.next_fetch_in_s())
            raise AuthError("The token's signing key is unknown." if kid else "The token names no signing key (kid).")
        return key

    def next_fetch_in_s(self) -> int:
        """Whole seconds until a token can make this cache fetch the keys again."""
        return max(1, math.ceil(self._tried_at + self.refresh_interval_s - time.monotonic()))

    def _lookup(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:  # providers with a single key often leave kid out
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        tried_before = self._tried_at
        async with self._lock:
            if self._tried_at != tried_before:  # another request refreshed while this one waited
                return
            if time.monotonic() - self._tried_at < self.refresh_interval_s:
                return
            self._tried_at = time.monotonic()
            try:
                keys = await self._fetch()
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("could not fetch the JWKS at %s: %s", self.url, exc)
                return
            self._keys, self._fetched_at = keys, time.monotonic()

    async def _fetch(self) -> dict[str, jwt.PyJWK]:
        # A client per fetch: fetches are rare, and a client kept across them would be bound
        # to whichever event loop made it (the test client runs the app on a loop of its own).
        async with httpx.AsyncClient(timeout=self.timeout_s, transport=self._transport) as client:
            response = await client.get(self.url, headers={"Accept": "application/json"})
            response.raise_for_status()
            document = response.json()
        keys: dict[str, jwt.PyJWK] = {}
        for data in document.get("keys", []) if isinstance(document, dict) else []:
            key = _public_key(data)
            if key is not None:
                keys[key.key_id or f"#{len(keys)}"] = key
        if not keys:
            raise ValueError("the JWKS holds no usable EdDSA, RS256 or ES256 signing key")
        return keys


def _public_key(data: Any) -> jwt.PyJWK | None:
    """A JWKS entry as a key, or None for what this server must not or cannot use."""
    if not isinstance(data, dict) or data.get("use", "sig") != "sig":
        return None
    try:
        key = jwt.PyJWK(data)
    except (jwt.PyJWKError, jwt.InvalidKeyError, TypeError, ValueError):
        return None
    # Symmetric (kty "oct") and other algorithms stay out, whatever the document says.
    return key if key.algorithm_name in ASYMMETRIC_ALGORITHMS else None


_MISSING = {
    "exp": "The token has no expiry (exp).",
    "iss": "The token's issuer (iss) is not accepted.",
    "aud": "The token's audience (aud) is not accepted.",
    "sub": "The token has no user (sub).",
}


class _Verified(NamedTuple):
    user: str
    until: float  # time.time() after which the token is checked again
    kid: str | None
    key: Any  # the provider's key that vouched for it; None for our own secret


_VERIFIED_TOKENS = 4096
_VERIFIED_FOR_S = 60.0


class Authenticator:
    """Verifies bearer tokens; issues HS256 ones when it has a secret.

    A verified token is remembered (up to a minute, never past its ``exp``): a session sends
    the same token with every request, and checking it costs ≈ 80 µs of CPU each time (1.5%
    of a whole streamed reply). A provider's token is accepted from memory only while the key
    that signed it is still in the provider's set, so a rotated-out key stops it at once.
    """

    def __init__(
        self, secret: str | None, *, jwks: JWKSKeys | None = None, issuer: str | None = None,
        audience: str | None = None, leeway_s: float = 5.0,
    ):
        self._secret = secret
        self.jwks = jwks
        self._issuer = issuer
        self._audience = audience
        self._leeway_s = leeway_s
        self._verified: dict[str, _Verified] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        """HS256 with ``JWT_SECRET``, JWKS with ``JWT_JWKS_URL``, either or both; dev mode has
        neither and signs with a local secret."""
        jwks = None
        if settings.jwt_jwks_url:
            jwks = JWKSKeys(settings.jwt_jwks_url, refresh_interval_s=settings.jwt_jwks_refresh_s,
                            max_age_s=settings.jwt_jwks_max_age_s)
        secret = signing_secret(settings)
        return cls(secret, jwks=jwks, issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                   leeway_s=settings.jwt_leeway_s)

    def issue(self, user_id: str, ttl_s: int = 7 * 24 * 3600) -> str:
        return issue(self._secret, user_id, ttl_s, issuer=self._issuer, audience=self._audience)

    async def user_of(self, token: str) -> str:
        """The token's user; AuthError (401) unless it is valid, KeysUnavailable (503)."""
        user = await self._user_of(token)
        log_context.identify_user(user)  # every later log line of this request names its user
        return user

    async def _user_of(self, token: str) -> str:
        now = time.time()
        known = self._verified.get(token)
        if known is not None and now < known.until:
            if known.key is None or self.jwks is not None and await self.jwks.key_for(known.kid) is known.key:
                return known.user
        verified = await self._verify(token, now)
        if len(self._verified) >= _VERIFIED_TOKENS:
            self._verified.pop(next(iter(self._verified)))  # the oldest
        self._verified[token] = verified
        return verified.user

    async def _verify(self, token: str, now: float) -> _Verified:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthError("The token is not valid.") from None
        algorithm, kid = header.get("alg"), header.get("kid")
        key: Any
        # Every token expires: one without ``exp`` would be good forever once leaked.
        required = ["sub", "exp"]
        if algorithm == "HS256" and self._secret:
            key = self._secret
        elif isinstance(algorithm, str) and algorithm in ASYMMETRIC_ALGORITHMS and self.jwks is not None:
            key = await self.jwks.key_for(kid)
            algorithm = key.algorithm_name  # the key's type decides, not the header
        else:
            raise AuthError("The token's signing algorithm is not accepted.")
        try:
            claims = jwt.decode(
                token, key, algorithms=[algorithm], issuer=self._issuer, audience=self._audience,
                leeway=self._leeway_s,
                # Without JWT_AUDIENCE an aud claim is not checked (PyJWT would reject any).
                options={"require": required, "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("The token has expired.") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(_MISSING.get(exc.claim, "The token is not valid.")) from None
        except jwt.InvalidIssuerError:
            raise AuthError("The token's issuer (iss) is not accepted.") from None
        except jwt.InvalidAudienceError:
            raise AuthError("The token's audience (aud) is not accepted.") from None
        except jwt.InvalidTokenError:
            raise AuthError("The token is not valid.") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthError("The token has no user (sub).")
        try:
            check_user_id(subject)  # the user ids the store keeps, on both engines
        except InvalidInput as exc:
            raise AuthError(f"The token's user (sub) is not accepted: {exc.message}") from None
        until = min(now + _VERIFIED_FOR_S, claims["exp"] + self._leeway_s)
        return _Verified(subject, until, kid, None if key is self._secret else key)


def cors_config(settings: Settings) -> CORSConfig | None:
    """Browser front ends on other origins (ChatKit's UI runs in an iframe on OpenAI's CDN) may
    call the API with a bearer token; without ``CORS_ORIGINS`` no CORS header is ever sent."""
    origins = [origin.strip().rstrip("/") for origin in settings.cors_origins.split(",") if origin.strip()]
    if not origins:
        return None
    return CORSConfig(
        allow_origins=origins,
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        # MCP's session and version headers: for MCP clients in a browser (/mcp).
        allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "Mcp-Session-Id", "Mcp-Protocol-Version"],
        expose_headers=["X-Request-ID", "Retry-After", "Mcp-Session-Id"],
        # Bearer tokens travel in a header, never in cookies: no credentials mode.
        allow_credentials=False,
    )


def bearer_token(request: ASGIConnection) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def authenticate(request: ASGIConnection, authenticator: Authenticator) -> str:
    """The user the request's bearer token names; ``AuthError`` (401) or ``KeysUnavailable``
    (503), answered from the app's error table like every other error."""
    token = bearer_token(request)
    if not token:
        raise AuthError("Missing bearer token.")
    return await authenticator.user_of(token)


async def provide_user(request: Request, user_id: FromPath[str], authenticator: NamedDependency[Authenticator]) -> str:
    """The path's user, once the bearer token proves the caller is that user."""
    if await authenticate(request, authenticator) != user_id:
        raise Forbidden("This token belongs to another user.")
    return user_id


async def provide_token_user(request: Request, authenticator: NamedDependency[Authenticator]) -> str:
    """The user the bearer token names, for routes without a user in the path (ChatKit)."""
    return await authenticate(request, authenticator)


async def bearer_guard(connection: ASGIConnection, _: object) -> None:
    """For mounted ASGI apps (``/mcp``), which get no dependencies: the token's user goes in
    ``scope["user"]``; no token or a bad one is the usual 401 (503 while keys cannot be fetched)."""
    connection.scope["user"] = await authenticate(connection, connection.app.state.authenticator)
