"""Bad input gets a clear 4xx in Litestar's error body, and writes nothing."""

from __future__ import annotations

import pytest

from tests.conftest import auth, count_rows, token_for

TABLES = ("conversation", "message", "task", "run", "run_event")


def assert_nothing_written(settings) -> None:
    assert {t: count_rows(settings.database, t) for t in TABLES} == dict.fromkeys(TABLES, 0)


@pytest.mark.parametrize("route", ["/api/alice/chat/stream", "/api/alice/chat"])
@pytest.mark.parametrize("headers, status, detail", [
    ({}, 401, "Missing bearer token."),
    ({"Authorization": "Bearer nonsense"}, 401, "The token is not valid."),
    ({"Authorization": f"Bearer {token_for('alice', ttl_s=-10)}"}, 401, "The token has expired."),
    ({"Authorization": f"Bearer {token_for('bob')}"}, 403, "This token belongs to another user."),
])
def test_auth_failures(client, settings, route, headers, status, detail):
    response = client.post(route, json={"message": "add x"}, headers=headers)
    assert response.status_code == status
    code = "unauthorized" if status == 401 else "forbidden"
    assert response.json() == {"status_code": status, "detail": detail, "code": code, "extra": {"code": code}}
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    assert_nothing_written(settings)


def test_token_signed_with_another_secret_is_rejected(client, settings):
    import jwt

    forged = jwt.encode({"sub": "alice"}, "another-secret-that-is-long-enough-too", algorithm="HS256")
    response = client.get("/api/alice/tasks", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401


@pytest.mark.parametrize("route", ["/api/alice/chat/stream", "/api/alice/chat"])
@pytest.mark.parametrize("body, key, message", [
    (b'{"message": ', None, None),
    (b'[]', None, None),
    # A missing field is reported on the body ("data"); the message names the field.
    (b'{}', "data", "Object missing required field `message`"),
    (b'{"message": 42}', "message", "Expected `str`, got `int`"),
    (b'{"message": "hi", "conversation_id": 7}', "conversation_id", "Expected `str | null`, got `int`"),
    (b'{"message": "hi", "on_disconnect": "explode"}', "on_disconnect", "Invalid enum value 'explode'"),
    (b'{"message": ""}', "message", "The message is empty."),
    (b'{"message": "   \\n "}', "message", "The message is empty."),
])
def test_malformed_bodies_are_400_naming_the_field(client, settings, route, body, key, message):
    response = client.post(route, content=body, headers={**auth("alice"), "Content-Type": "application/json"})
    assert response.status_code == 400
    error = response.json()
    assert error["status_code"] == 400 and error["detail"]
    if key:
        assert {"key": key, "message": message, "source": "body"} in error["extra"]
    assert_nothing_written(settings)


def test_over_long_message_is_400(client, settings):
    too_long = "x" * (settings.max_message_bytes + 1)
    response = client.post("/api/alice/chat/stream", json={"message": too_long}, headers=auth("alice"))
    assert response.status_code == 400
    assert response.json()["extra"] == [
        {"key": "message", "message": f"The message is longer than {settings.max_message_bytes} bytes.",
         "source": "body"}
    ]
    assert_nothing_written(settings)


def test_oversized_body_is_413(client, settings):
    body = b'{"message": "' + b"x" * (settings.max_body_bytes + 10) + b'"}'
    response = client.post("/api/alice/chat/stream", content=body,
                           headers={**auth("alice"), "Content-Type": "application/json"})
    assert response.status_code == 413
    assert_nothing_written(settings)


@pytest.mark.parametrize("conversation_id", ["nope", "00000000-0000-0000-0000-000000000000"])
def test_unknown_conversation_is_404(client, settings, conversation_id):
    response = client.post("/api/alice/chat/stream", json={"message": "hi", "conversation_id": conversation_id},
                           headers=auth("alice"))
    assert response.status_code == 404
    assert response.json() == {"status_code": 404, "detail": "No such conversation.", "code": "not_found",
                               "extra": {"code": "not_found"}}
    assert_nothing_written(settings)


def test_another_users_conversation_is_404_and_untouched(client, settings):
    alice = client.post("/api/alice/chat", json={"message": "add secret plan"}, headers=auth("alice")).json()
    before = {t: count_rows(settings.database, t) for t in TABLES}
    for method, path, kwargs in [
        ("POST", "/api/bob/chat/stream", {"json": {"message": "hi", "conversation_id": alice["conversation_id"]}}),
        ("GET", f"/api/bob/conversations/{alice['conversation_id']}", {}),
        ("DELETE", f"/api/bob/conversations/{alice['conversation_id']}", {}),
        ("GET", f"/api/bob/runs/{alice['run_id']}/events", {}),
        ("POST", f"/api/bob/runs/{alice['run_id']}/cancel", {}),
    ]:
        response = client.request(method, path, headers=auth("bob"), **kwargs)
        assert response.status_code == 404, path
        assert "Traceback" not in response.text
    assert {t: count_rows(settings.database, t) for t in TABLES} == before
    assert client.get("/api/bob/tasks", headers=auth("bob")).json() == []
