"""Tokens from an identity provider's JWKS, beside the server's own HS256 tokens.

A local JWKS server (http.server on 127.0.0.1, a free port) plays the identity provider: it
holds RSA, EC (P-256) and Ed25519 keys, can rotate them, and counts how often it is asked.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from litestar.testing import TestClient

from app.auth import AuthError, Authenticator, cors_config
from app.main import create_app
from app.settings import Settings, load_settings
from tests.conftest import JWT_SECRET, token_for

ISSUER = "https://id.example.test/"
AUDIENCE = "todo-api"


class SigningKey(msgspec.Struct):
    kid: str
    algorithm: str
    private: Any

    @property
    def public_jwk(self) -> dict[str, Any]:
        to_jwk = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[self.algorithm].to_jwk
        return {**to_jwk(self.private.public_key(), as_dict=True), "kid": self.kid, "use": "sig"}

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(claims, self.private, algorithm=self.algorithm, headers={"kid": self.kid, **header})


def new_key(algorithm: str) -> SigningKey:
    private = {
        "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "EdDSA": ed25519.Ed25519PrivateKey.generate,
    }[algorithm]()
    return SigningKey(kid=f"{algorithm}-{uuid.uuid4().hex[:8]}", algorithm=algorithm, private=private)


class IdentityProvider:
    """A JWKS endpoint whose keys a test can change while it runs."""

    def __init__(self, keys: list[SigningKey]):
        self.keys = list(keys)
        self.extra_jwks: list[dict[str, Any]] = []
        self.requests = 0
        self.failing = False
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                provider.requests += 1
                if provider.failing:
                    self.send_error(503)
                    return
                body = json.dumps({"keys": [k.public_jwk for k in provider.keys] + provider.extra_jwks}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/.well-known/jwks.json"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    return {algorithm: new_key(algorithm) for algorithm in ("RS256", "ES256", "EdDSA")}


@pytest.fixture
def idp(keys) -> Iterator[IdentityProvider]:
    provider = IdentityProvider(list(keys.values()))
    yield provider
    provider.close()


def claims(user: str = "alice", ttl_s: int = 3600, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": user, "iat": now, "exp": now + ttl_s, "iss": ISSUER, "aud": AUDIENCE, **extra}


def app_client(tmp_path, idp: IdentityProvider | None, **overrides: Any) -> TestClient:
    settings = Settings(**{
        "data_dir": str(tmp_path / "data"), "database_url": f"sqlite:///{tmp_path / 'chat.sqlite3'}",
        "jwt_secret": JWT_SECRET, "jwt_jwks_url": idp.url if idp else None, "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE, "offline_token_delay_ms": 0, **overrides,
    })
    return TestClient(create_app(settings), timeout=30)


@pytest.fixture
def client(tmp_path, idp) -> Iterator[TestClient]:
    with app_client(tmp_path, idp) as test_client:
        yield test_client


def get_tasks(client: TestClient, token: str, user: str = "alice"):
    return client.get(f"/api/{user}/tasks", headers={"Authorization": f"Bearer {token}"})


def assert_401(response, detail: str) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["detail"] == detail
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "EdDSA"])
def test_identity_provider_tokens_are_accepted(client, keys, algorithm):
    response = get_tasks(client, keys[algorithm].sign(claims()))
    assert response.status_code == 200, response.text
    assert response.json() == []


def test_keys_are_fetched_once_and_cached(client, idp, keys):
    for key in keys.values():
        for _ in range(3):
            assert get_tasks(client, key.sign(claims())).status_code == 200
    assert idp.requests == 1


def test_hs256_tokens_still_work_beside_the_jwks(tmp_path, idp):
    with app_client(tmp_path, idp, jwt_issuer=None, jwt_audience=None) as client:
        assert get_tasks(client, token_for("alice")).status_code == 200
    assert idp.requests == 0  # an HS256 token never needs the provider


def test_the_servers_own_tokens_carry_the_configured_issuer_and_audience(tmp_path, idp):
    authenticator = Authenticator(JWT_SECRET, issuer=ISSUER, audience=AUDIENCE)
    with app_client(tmp_path, idp) as client:
        assert get_tasks(client, authenticator.issue("alice")).status_code == 200
        # One without iss/aud is refused once JWT_ISSUER is set, whatever signed it.
        assert_401(get_tasks(client, token_for("alice")), "The token's issuer (iss) is not accepted.")


def test_a_rotated_key_is_fetched_on_its_first_token(tmp_path, idp, keys):
    with app_client(tmp_path, idp, jwt_jwks_refresh_s=0) as client:
        assert get_tasks(client, keys["RS256"].sign(claims())).status_code == 200
        rotated = new_key("ES256")
        idp.keys = [rotated]  # the provider rotates after the server has cached its keys
        assert get_tasks(client, rotated.sign(claims())).status_code == 200
        assert idp.requests == 2
        # The old key left the set with the refresh.
        assert_401(get_tasks(client, keys["RS256"].sign(claims())), "The token's signing key is unknown.")


def test_unknown_kids_refresh_at_most_once_per_interval(client, idp, keys):
    assert get_tasks(client, keys["EdDSA"].sign(claims())).status_code == 200
    time.sleep(0.05)
    for _ in range(5):
        stranger = new_key("EdDSA")  # signed by a key the provider never published
        assert_401(get_tasks(client, stranger.sign(claims())), "The token's signing key is unknown.")
    assert idp.requests == 1  # the default interval (30 s) has not passed since the first fetch


def test_refresh_on_unknown_kid_once_the_interval_has_passed(tmp_path, idp, keys):
    with app_client(tmp_path, idp, jwt_jwks_refresh_s=2) as client:
        assert get_tasks(client, keys["RS256"].sign(claims())).status_code == 200
        rotated = new_key("RS256")
        idp.keys.append(rotated)
        assert_401(get_tasks(client, rotated.sign(claims())), "The token's signing key is unknown.")
        # Refused (without a fetch) until the interval has passed, then fetched once and accepted.
        deadline = time.monotonic() + 30
        while get_tasks(client, rotated.sign(claims())).status_code == 401:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert idp.requests == 2


@pytest.mark.parametrize("bad_claims, detail", [
    (claims(iss="https://evil.example.test/"), "The token's issuer (iss) is not accepted."),
    (claims(aud="another-api"), "The token's audience (aud) is not accepted."),
    ({k: v for k, v in claims().items() if k != "iss"}, "The token's issuer (iss) is not accepted."),
    ({k: v for k, v in claims().items() if k != "aud"}, "The token's audience (aud) is not accepted."),
    (claims(ttl_s=-60), "The token has expired."),
    ({k: v for k, v in claims().items() if k != "exp"}, "The token has no expiry (exp)."),
    ({k: v for k, v in claims().items() if k != "sub"}, "The token has no user (sub)."),
    (claims(nbf=int(time.time()) + 365 * 86400), "The token is not valid."),  # built at collection: far enough ahead for any run
])
@pytest.mark.parametrize("algorithm", ["RS256", "EdDSA"])
def test_bad_claims_are_401_with_a_clear_message(client, keys, algorithm, bad_claims, detail):
    assert_401(get_tasks(client, keys[algorithm].sign(bad_claims)), detail)


def test_audience_may_be_one_of_several(client, keys):
    assert get_tasks(client, keys["ES256"].sign(claims(aud=["other", AUDIENCE]))).status_code == 200


def test_without_issuer_and_audience_settings_neither_is_checked(tmp_path, idp, keys):
    with app_client(tmp_path, idp, jwt_issuer=None, jwt_audience=None) as client:
        assert get_tasks(client, keys["RS256"].sign(claims(iss="anyone", aud="anything"))).status_code == 200


def test_expired_hs256_token_has_the_same_clear_message(tmp_path, idp):
    with app_client(tmp_path, idp, jwt_issuer=None, jwt_audience=None) as client:
        assert_401(get_tasks(client, token_for("alice", ttl_s=-60)), "The token has expired.")


def test_another_users_token_is_403(client, keys):
    response = get_tasks(client, keys["RS256"].sign(claims(user="bob")))
    assert response.status_code == 403


def test_a_forged_signature_is_rejected(client, keys):
    header, payload, _ = keys["RS256"].sign(claims()).split(".")
    forged_payload = _b64(json.dumps(claims(user="alice", ttl_s=10**6)).encode())
    assert_401(get_tasks(client, f"{header}.{forged_payload}.{_}"), "The token is not valid.")


def test_a_kid_of_one_key_type_cannot_vouch_for_another_algorithm(client, keys):
    """An RS256 signature that names the EC key's kid fails: the key's type decides."""
    token = jwt.encode(claims(), keys["RS256"].private, algorithm="RS256", headers={"kid": keys["ES256"].kid})
    assert_401(get_tasks(client, token), "The token is not valid.")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_forgery(secret: bytes, kid: str | None = None) -> str:
    """What PyJWT refuses to make: an HS256 token keyed with public key material."""
    header = {"alg": "HS256", "typ": "JWT", **({"kid": kid} if kid else {})}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims()).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


@pytest.mark.parametrize("jwt_secret", [JWT_SECRET, None])
def test_algorithm_confusion_with_the_public_key_as_hmac_secret_is_rejected(tmp_path, idp, keys, jwt_secret):
    rsa_key = keys["RS256"]
    pem = rsa_key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    detail = "The token is not valid." if jwt_secret else "The token's signing algorithm is not accepted."
    with app_client(tmp_path, idp, jwt_secret=jwt_secret) as client:
        for secret in (pem, json.dumps(rsa_key.public_jwk).encode(), rsa_key.public_jwk["n"].encode()):
            assert_401(get_tasks(client, hs256_forgery(secret, kid=rsa_key.kid)), detail)


def test_symmetric_keys_in_the_jwks_are_ignored(tmp_path, idp):
    """A JWKS that (wrongly) publishes an "oct" key does not let anyone sign HS256 tokens."""
    shared = b"published-to-the-world-by-mistake"
    idp.extra_jwks = [{"kty": "oct", "kid": "sym", "k": _b64(shared), "alg": "HS256"}]
    with app_client(tmp_path, idp, jwt_secret=None) as client:
        assert_401(get_tasks(client, hs256_forgery(shared, kid="sym")),
                   "The token's signing algorithm is not accepted.")


def test_alg_none_is_rejected(client):
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    unsigned = f"{header}.{_b64(json.dumps(claims()).encode())}."
    assert_401(get_tasks(client, unsigned), "The token's signing algorithm is not accepted.")


@pytest.mark.parametrize("header", [{"alg": ["RS256"]}, {"alg": {"a": 1}}, {"alg": 7}, {}])
def test_odd_headers_are_401_not_500(client, header):
    token = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims()).encode())}.c2ln"
    assert get_tasks(client, token).status_code == 401


def test_a_token_without_kid_uses_the_only_key(tmp_path, idp, keys):
    idp.keys = [keys["EdDSA"]]
    token = jwt.encode(claims(), keys["EdDSA"].private, algorithm="EdDSA")
    with app_client(tmp_path, idp) as client:
        assert get_tasks(client, token).status_code == 200


def test_a_token_without_kid_is_refused_when_the_set_has_several_keys(client, keys):
    token = jwt.encode(claims(), keys["EdDSA"].private, algorithm="EdDSA")
    assert_401(get_tasks(client, token), "The token names no signing key (kid).")


def test_provider_down_is_503_not_401(tmp_path, idp, keys):
    idp.failing = True
    with app_client(tmp_path, idp) as client:
        response = get_tasks(client, keys["RS256"].sign(claims()))
        assert response.status_code == 503
        assert response.headers["retry-after"] == "30"
        # HS256 tokens keep working while the provider is down.
        assert get_tasks(client, Authenticator(JWT_SECRET, issuer=ISSUER, audience=AUDIENCE).issue("alice")
                         ).status_code == 200


def test_websocket_accepts_an_identity_provider_token(client, keys):
    with client.websocket_connect(f"/api/alice/ws?token={keys['ES256'].sign(claims())}") as ws:
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}


def test_websocket_closes_1008_on_an_expired_provider_token(client, keys):
    from litestar.exceptions import WebSocketDisconnect

    with client.websocket_connect(f"/api/alice/ws?token={keys['EdDSA'].sign(claims(ttl_s=-60))}") as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1008
    assert closed.value.detail == "The token has expired."


def test_websocket_closes_1013_while_the_provider_is_down(tmp_path, idp, keys):
    from litestar.exceptions import WebSocketDisconnect

    idp.failing = True
    with app_client(tmp_path, idp) as client:
        with client.websocket_connect(f"/api/alice/ws?token={keys['RS256'].sign(claims())}") as ws:
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
    assert closed.value.code == 1013  # try again later


def test_settings_come_from_the_environment():
    settings = load_settings({
        "JWT_JWKS_URL": "https://id.example.test/jwks", "JWT_ISSUER": ISSUER, "JWT_AUDIENCE": AUDIENCE,
        "JWT_JWKS_REFRESH_S": "10", "JWT_LEEWAY_S": "2", "CORS_ORIGINS": "https://a.test, https://b.test/",
    }, env_file=None)
    assert (settings.jwt_jwks_url, settings.jwt_issuer, settings.jwt_audience) == (
        "https://id.example.test/jwks", ISSUER, AUDIENCE)
    assert (settings.jwt_jwks_refresh_s, settings.jwt_jwks_max_age_s, settings.jwt_leeway_s) == (10.0, 3600.0, 2.0)
    assert not settings.dev_mode  # a JWKS alone is a real identity setup, not dev mode
    assert cors_config(settings).allow_origins == ["https://a.test", "https://b.test"]


def test_jwks_only_server_issues_no_tokens_of_its_own(tmp_path):
    settings = Settings(data_dir=str(tmp_path), jwt_jwks_url="http://127.0.0.1:9/jwks")
    authenticator = Authenticator.from_settings(settings)
    with pytest.raises(Exception, match="no JWT_SECRET"):
        authenticator.issue("alice")
    assert not (tmp_path / "jwt_secret").exists()


def test_a_remembered_token_is_still_refused_once_it_expires():
    authenticator = Authenticator(JWT_SECRET, leeway_s=0)
    expires = int(time.time()) + 1
    token = jwt.encode({"sub": "alice", "exp": expires}, JWT_SECRET, algorithm="HS256")
    assert asyncio.run(authenticator.user_of(token)) == "alice"  # verified, and remembered
    time.sleep(max(0.0, expires - time.time()) + 0.05)
    with pytest.raises(AuthError, match="expired"):
        asyncio.run(authenticator.user_of(token))


def test_an_hs256_token_without_exp_is_401(client):
    """Issue 33: a server token without ``exp`` was accepted forever; every token must expire,
    as identity-provider tokens already must."""
    forever = jwt.encode({k: v for k, v in claims().items() if k != "exp"}, JWT_SECRET, algorithm="HS256")
    response = get_tasks(client, forever)
    assert_401(response, "The token has no expiry (exp).")
    assert response.json()["code"] == "unauthorized"
    from litestar.exceptions import WebSocketDisconnect

    with client.websocket_connect(f"/api/alice/ws?token={forever}") as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1008 and closed.value.detail == "The token has no expiry (exp)."


def test_provider_down_retry_after_is_when_the_keys_are_fetched_again(tmp_path, idp, keys):
    """The 503's Retry-After comes from the key cache's real refresh interval (it was a fixed 30)."""
    idp.failing = True
    with app_client(tmp_path, idp, jwt_jwks_refresh_s=7) as client:
        response = get_tasks(client, keys["RS256"].sign(claims()))
        assert response.status_code == 503, response.text
        assert 1 <= int(response.headers["retry-after"]) <= 7
        assert response.json()["code"] == "auth_unavailable"
