"""The server's own HS256 tokens: the secret that signs them and the claims they carry.

Apart from ``auth.py`` (which verifies tokens, and is a Litestar module) so that ``chat-server
token`` signs one without loading a web framework: ``tests/test_cli.py`` checks it does not.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

import jwt

from app.settings import Settings
from domain.errors import AuthError

_SECRET_FILE = "jwt_secret"


def load_secret(settings: Settings) -> str:
    """``JWT_SECRET``, or a random secret kept (0600) in the data directory for dev mode."""
    if settings.jwt_secret:
        return settings.jwt_secret
    path = Path(settings.data_dir) / _SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def signing_secret(settings: Settings) -> str | None:
    """What signs this server's tokens: ``JWT_SECRET``, the dev-mode secret when there is no
    identity provider either, or None when tokens come from the identity provider only."""
    return load_secret(settings) if settings.jwt_secret or not settings.jwt_jwks_url else None


def issue(secret: str | None, user_id: str, ttl_s: int, *, issuer: str | None = None,
          audience: str | None = None) -> str:
    """A token for ``user_id``, valid ``ttl_s`` seconds, with the server's issuer and audience."""
    if not secret:
        raise AuthError("This server has no JWT_SECRET: its tokens come from the identity provider.")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + ttl_s}
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")
