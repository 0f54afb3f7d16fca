"""Bearer JWT auth: HS256 tokens whose ``sub`` is the user id."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import jwt
from litestar import Request
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.params import FromPath

from app.settings import Settings

_SECRET_FILE = "jwt_secret"


class AuthError(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


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


class Authenticator:
    def __init__(self, secret: str):
        self._secret = secret

    def issue(self, user_id: str, ttl_s: int = 7 * 24 * 3600) -> str:
        now = int(time.time())
        return jwt.encode({"sub": user_id, "iat": now, "exp": now + ttl_s}, self._secret, algorithm="HS256")

    def user_of(self, token: str) -> str:
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], options={"require": ["sub"]})
        except jwt.ExpiredSignatureError:
            raise AuthError("The token has expired.") from None
        except jwt.InvalidTokenError:
            raise AuthError("The token is not valid.") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthError("The token has no user (sub).")
        return subject

    def check(self, token: str | None, user_id: str) -> None:
        """Raise AuthError (401) or PermissionError (403) unless the token is ``user_id``'s."""
        if not token:
            raise AuthError("Missing bearer token.")
        if self.user_of(token) != user_id:
            raise PermissionError("This token belongs to another user.")


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def authenticate(request: Request, authenticator: Authenticator) -> str:
    """The user the request's bearer token names."""
    token = bearer_token(request)
    try:
        if not token:
            raise AuthError("Missing bearer token.")
        return authenticator.user_of(token)
    except AuthError as exc:
        raise NotAuthorizedException(exc.message, headers={"WWW-Authenticate": "Bearer"}) from None


async def provide_user(request: Request, user_id: FromPath[str], authenticator: NamedDependency[Authenticator]) -> str:
    """The path's user, once the bearer token proves the caller is that user."""
    if authenticate(request, authenticator) != user_id:
        raise PermissionDeniedException("This token belongs to another user.")
    return user_id
