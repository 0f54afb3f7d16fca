"""The ``chat-server`` command."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys

import httpx
import jwt
import msgspec
import pytest

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


# What `token` and `--help` must not load: each took seconds to import (`token` took 4-5 s).
HEAVY = {"agents", "openai", "litestar", "uvicorn", "piccolo", "asyncpg"}
_LOADED_BY = """
import contextlib, io, json, sys
from app.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
    main(sys.argv[1:])
print(json.dumps({"out": out.getvalue(), "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


@pytest.mark.parametrize("args", [["token", "alice"], ["--help"], ["token", "--help"]])
def test_token_and_help_load_no_web_framework_database_or_model_sdk(tmp_path, args):
    done = subprocess.run([sys.executable, "-c", _LOADED_BY, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "JWT_SECRET": "s" * 40, "DATA_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert HEAVY & set(loaded["modules"]) == set()
    if args == ["token", "alice"]:
        assert jwt.decode(loaded["out"].strip(), "s" * 40, algorithms=["HS256"])["sub"] == "alice"
    else:
        assert "usage: chat-server" in loaded["out"]


def test_token_is_refused_in_one_line_when_tokens_come_from_the_identity_provider(tmp_path):
    done = chat_server("token", "alice", JWT_SECRET="", JWT_JWKS_URL="https://id.example/jwks.json",
                       DATA_DIR=str(tmp_path))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "chat-server: This server has no JWT_SECRET: its tokens come from the identity provider.\n"


def test_token_carries_the_servers_issuer_and_audience(tmp_path):
    done = chat_server("token", "alice", JWT_SECRET="s" * 40, JWT_ISSUER="https://chat.example",
                       JWT_AUDIENCE="todo", DATA_DIR=str(tmp_path))
    claims = jwt.decode(done.stdout.strip(), "s" * 40, algorithms=["HS256"], audience="todo")
    assert (claims["iss"], claims["aud"]) == ("https://chat.example", "todo")


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


def one_line(done: subprocess.CompletedProcess) -> str:
    """What a start-up failure prints: a single line on stderr, nothing before it, exit 2."""
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_a_malformed_database_url_stops_start_up_in_one_line(tmp_path):
    line = one_line(chat_server("serve", "--port", "0", DATABASE_URL="postgres//db.internal/chat",
                                DATA_DIR=str(tmp_path)))
    assert line.startswith("chat-server: DATABASE_URL is not a database URL")


def test_an_unreachable_database_stops_start_up_in_one_line_without_its_password(tmp_path):
    with socket.socket() as closed:  # bound, never listening: a connection is refused at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        line = one_line(chat_server("serve", "--port", "0", DATA_DIR=str(tmp_path),
                                    DATABASE_URL=f"postgresql://chat:hunter2@127.0.0.1:{port}/chat"))
    assert f"cannot open the database at 127.0.0.1:{port}/chat" in line
    assert "DATABASE_URL" in line
    assert "hunter2" not in line and "version" not in line


def test_a_port_in_use_stops_start_up_in_one_line_before_any_link_is_printed(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line(chat_server("serve", "--port", str(port), DATA_DIR=str(tmp_path), JWT_SECRET=""))
    assert line == f"chat-server: port {port} on 127.0.0.1 is already in use (choose another with --port)"


def test_migrate_names_a_malformed_database_url_in_one_line(tmp_path):
    line = one_line(chat_server("migrate", DATABASE_URL="mysql://db/chat", DATA_DIR=str(tmp_path)))
    assert "DATABASE_URL" in line and "'mysql'" in line
