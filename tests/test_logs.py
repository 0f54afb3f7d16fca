"""Log lines: ``LOG_FORMAT=json`` writes one JSON object a line naming the request, user and run;
the default stays readable; neither ever holds a token or a password."""

from __future__ import annotations

import json
import logging
import sys

import httpx
import pytest

from app.logs import JsonFormatter
from app.settings import Settings
from tests.conftest import ServerProcess, auth, token_for


@pytest.fixture
def sqlite_settings(tmp_path) -> Settings:
    return Settings(data_dir=str(tmp_path), database_url=f"sqlite:///{tmp_path / 'chat.sqlite3'}",
                    offline_token_delay_ms=0)


def chat_and_stop(server: ServerProcess) -> tuple[httpx.Response, str]:
    token = token_for("alice")
    try:
        reply = httpx.post(f"{server.url}/api/alice/chat", params={"token": token}, headers=auth("alice"),
                           json={"message": "add buy milk"}, timeout=30)
        httpx.get(f"{server.url}/health", timeout=10)  # the chat's access line is written by now
    finally:
        server.stop()
    output = server.output()
    assert token not in output
    return reply, output


def test_json_lines_parse_and_name_the_request_user_and_run(sqlite_settings):
    # Unbuffered: the server is killed at the end, and its access lines go to stdout.
    server = ServerProcess(sqlite_settings, LOG_FORMAT="json", LOG_LEVEL="INFO", PYTHONUNBUFFERED="1")
    reply, output = chat_and_stop(server)
    assert reply.status_code == 200
    run_id, request_id = reply.json()["run_id"], reply.headers["x-request-id"]

    lines = [json.loads(line) for line in output.splitlines()]  # every line is one JSON object
    assert all({"time", "level", "message"} <= line.keys() for line in lines)
    run_lines = [line for line in lines if line.get("run_id") == run_id]
    assert run_lines and all(line["user_id"] == "alice" and line["request_id"] == request_id
                             for line in run_lines)
    access = [line for line in lines
              if line.get("request_id") == request_id and "POST /api/alice/chat" in line["message"]]
    assert len(access) == 1 and access[0]["user_id"] == "alice" and access[0]["level"] == "INFO"
    assert "token=[redacted]" in access[0]["message"]


def test_the_default_format_stays_readable_and_names_the_request(sqlite_settings):
    server = ServerProcess(sqlite_settings, LOG_LEVEL="INFO", PYTHONUNBUFFERED="1")
    reply, output = chat_and_stop(server)
    run_line = next(line for line in output.splitlines() if reply.json()["run_id"] in line)
    assert f"[{reply.headers['x-request-id']}]" in run_line
    assert not run_line.startswith("{")
    assert "/api/alice/chat?token=[redacted]" in output


def test_an_error_logged_with_a_secret_in_its_traceback_is_redacted():
    try:
        raise ConnectionError("could not reach postgresql://chat:hunter2@db:5432/chat with Bearer abc.def.ghi")
    except ConnectionError:
        record = logging.LogRecord("chat", logging.ERROR, __file__, 1, "failed: %s", ("?api_key=sk-123",),
                                   sys.exc_info())
    line = json.loads(JsonFormatter().format(record))
    text = json.dumps(line)
    assert "hunter2" not in text and "abc.def.ghi" not in text and "sk-123" not in text
    assert line["message"] == "failed: ?api_key=[redacted]"
    assert "postgresql://chat:[redacted]@db:5432/chat" in line["exception"]
