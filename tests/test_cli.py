"""The ``chat-server`` command."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import httpx
import jwt
import msgspec

from tests.conftest import ServerProcess, count_rows


def chat_server(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], env={**os.environ, **env}, capture_output=True, text=True,
        timeout=60,
    )


def test_token_is_signed_with_jwt_secret(tmp_path):
    done = chat_server("token", "alice", "--ttl", "60", JWT_SECRET="s" * 40, DATA_DIR=str(tmp_path))
    assert done.returncode == 0
    claims = jwt.decode(done.stdout.strip(), "s" * 40, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["exp"] - claims["iat"] == 60
    assert done.stdout.count("\n") == 1


def test_dev_mode_secret_is_created_once_and_shared_with_the_server(tmp_path, settings):
    env = {"DATA_DIR": settings.data_dir, "JWT_SECRET": ""}
    token = chat_server("token", "alice", **env).stdout.strip()
    secret_file = os.path.join(settings.data_dir, "jwt_secret")
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
    assert chat_server("token", "bob", **env).returncode == 0
    secret = open(secret_file).read().strip()
    assert jwt.decode(token, secret, algorithms=["HS256"])["sub"] == "alice"

    server = ServerProcess(msgspec.structs.replace(settings, jwt_secret=None), JWT_SECRET="")
    try:
        response = httpx.post(f"{server.url}/api/alice/chat", json={"message": "add from the cli token"},
                              headers={"Authorization": f"Bearer {token}"}, timeout=30)
    finally:
        server.stop()
    assert response.status_code == 200
    output = server.output()
    assert "DEVELOPMENT MODE" in output
    assert f"{server.url}/#token=" in output


def test_migrate_creates_the_schema(tmp_path, database_url):
    done = chat_server("migrate", DATABASE_URL=database_url, DATA_DIR=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert count_rows(database_url, "task") == 0


def test_an_invalid_setting_stops_start_up_naming_the_variable(tmp_path):
    done = chat_server("serve", "--port", "1", MAX_MESSAGE_BYTES="lots", DATA_DIR=str(tmp_path))
    assert done.returncode == 2
    assert "MAX_MESSAGE_BYTES" in done.stderr
