"""``chat-server chat`` against the server on 127.0.0.1: in a pseudo-terminal of its own, so
Ctrl-C and Ctrl-D are typed keys the terminal turns into SIGINT and end-of-file, and with
plain pipes, as a script would use it."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator

import msgspec
import pytest

from tests.conftest import JWT_SECRET, LiveServer, fetch_rows, start_live_server, token_for

# Make the pseudo-terminal the child's controlling terminal, so that a typed Ctrl-C reaches it.
_WITH_TERMINAL = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); os.execv(sys.argv[1], sys.argv[1:])"
)


@pytest.fixture
def database_url(tmp_path) -> str:
    """SQLite only: the client talks HTTP, and the engines are compared by the other tests."""
    return f"sqlite:///{tmp_path / 'chat.sqlite3'}"


@pytest.fixture
def server(settings) -> Iterator[LiveServer]:
    live = start_live_server(msgspec.structs.replace(settings, offline_token_delay_ms=40))
    yield live
    live.stop()


class Terminal:
    """The client running in a pseudo-terminal: type keys, wait for what it prints."""

    def __init__(self, *args: str, **env: str):
        master, slave = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WITH_TERMINAL, sys.executable, "-m", "app.cli", "chat", *args],
            stdin=slave, stdout=slave, stderr=slave, start_new_session=True, env={**os.environ, **env},
        )
        os.close(slave)
        self.master = master
        self.output = ""
        self.seen = 0  # expect() looks only at what came after its last match

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def expect(self, pattern: str, timeout_s: float = 15.0) -> str:
        deadline = time.monotonic() + timeout_s
        regex = re.compile(pattern)
        while not (match := regex.search(self.output, self.seen)):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read(remaining):
                raise AssertionError(f"{pattern!r} not printed; the terminal shows:\n{self.output}")
        self.seen = match.end()
        return match.group(0)

    def _read(self, timeout_s: float) -> bool:
        if not select.select([self.master], [], [], timeout_s)[0]:
            return False
        try:
            data = os.read(self.master, 4096)
        except OSError:  # EIO: the program exited and closed the terminal
            return False
        self.output += data.decode(errors="replace")
        return bool(data)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        os.close(self.master)


@pytest.fixture
def terminal() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for term in opened:
        term.close()


def run_statuses(server: LiveServer) -> list[str]:
    return [row[0] for row in fetch_rows(server.settings.database, "SELECT status FROM run ORDER BY created_at")]


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_a_terminal_session_streams_replies_and_ctrl_c_stops_only_the_reply(server, terminal, transport):
    term = Terminal("--url", server.url, "--transport", transport, "--token", token_for("alice"), NO_COLOR="")
    terminal.append(term)
    term.expect(r"Ctrl-D quits")

    term.type("add buy milk\n")
    term.expect(re.escape("\x1b[2m⚙ add_task {\"title\": \"buy milk\"}\x1b[0m"))  # a dim tool line
    term.expect(re.escape("Added “buy milk” to your list (task #1).") + r"\r?\n› ")

    term.type("hello\n")
    term.expect(r"I'm your todo assistant")  # mid-reply
    term.type("\x03")  # Ctrl-C
    term.expect(re.escape("[stopped]"))
    assert run_statuses(server) == ["completed", "cancelled"]
    [(status, content)] = fetch_rows(
        server.settings.database, "SELECT status, content FROM message WHERE role = 'assistant' AND status != 'completed'"
    )
    assert status == "cancelled" and "delete one" not in content

    term.type("list my tasks\n")  # the program is still there and answers the next line
    term.expect(r"You have 1 task:\r?\n1\. \[ \] buy milk\r?\n› ")
    term.type("\x03")  # at the prompt, Ctrl-C does not quit either
    term.expect(re.escape("(Ctrl-D quits)"))
    assert run_statuses(server) == ["completed", "cancelled", "completed"]

    term.type("\x04")  # Ctrl-D
    assert term.process.wait(timeout=15) == 0


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_with_pipes_it_prints_the_reply_and_tool_lines_without_colour_and_exits_0_at_eof(server, transport):
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "chat", "--url", server.url, "--transport", transport,
         "--token", token_for("alice")],
        input="add buy milk\nlist my tasks\n", capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "\x1b[" not in done.stdout
    lines = done.stdout.splitlines()
    assert lines[0] == '⚙ add_task {"title": "buy milk"}'
    assert lines[1].startswith('  → {"added": {"id": 1, "title": "buy milk"')
    assert lines[2] == "Added “buy milk” to your list (task #1)."
    assert lines[3] == '⚙ list_tasks {"status": "all"}'
    assert lines[-2:] == ["You have 1 task:", "1. [ ] buy milk"]


def test_usage_prints_todays_tokens(server, terminal):
    term = Terminal("--url", server.url, "--token", token_for("alice"), NO_COLOR="")
    terminal.append(term)
    term.expect(r"Tokens today \(UTC\): 0 in, 0 out")  # at start, in a terminal
    term.type("add buy milk\n")
    term.expect(r"task #1\)\.")
    term.type("/usage\n")
    term.expect(r"Tokens today \(UTC\): [1-9]\d* in, [1-9]\d* out")
    assert run_statuses(server) == ["completed"]  # a command, not a message


def test_without_a_token_it_signs_one_with_the_server_secret(server, tmp_path):
    def chat(**env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", "chat", "--url", server.url, "--user", "bob"],
            input="add call mom\n", capture_output=True, text=True, timeout=60,
            env={**os.environ, "CHAT_TOKEN": "", "DATA_DIR": str(tmp_path / "client"), **env},
        )

    signed = chat(JWT_SECRET=JWT_SECRET)
    assert signed.returncode == 0, signed.stderr
    assert "Added “call mom”" in signed.stdout

    missing = chat(JWT_SECRET="")
    assert missing.returncode == 2
    assert "no token" in missing.stderr
    assert not (tmp_path / "client").exists()  # no dev secret made up on the client's side

    refused = chat(CHAT_TOKEN=token_for("bob", ttl_s=-60))
    assert refused.returncode == 1
    assert "expired" in refused.stderr


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_a_tool_that_needs_approval_is_asked_about_y_or_n(settings, terminal, transport):
    live = start_live_server(msgspec.structs.replace(settings, offline_token_delay_ms=5, tool_approval="delete_task"))
    try:
        term = Terminal("--url", live.url, "--transport", transport, "--token", token_for("alice"), NO_COLOR="1")
        terminal.append(term)
        term.expect(r"Ctrl-D quits")
        term.type("add buy milk\n")
        term.expect(r"to your list \(task #1\)\.\r?\n› ")
        term.type("delete buy milk\n")
        term.expect(re.escape('Allow delete_task {"title": "buy milk"}? [y/N] '))
        term.type("n\n")
        term.expect(r"declined[^\n]*\r?\n› ")
        term.type("delete buy milk\n")
        term.expect(re.escape('Allow delete_task {"title": "buy milk"}? [y/N] '))
        term.type("y\n")
        term.expect(re.escape("Deleted “buy milk”.") + r"\r?\n› ")
        term.type("\x04")
        assert term.process.wait(timeout=15) == 0
        assert run_statuses(live) == ["completed", "awaiting_approval", "completed", "awaiting_approval", "completed"]
    finally:
        live.stop()
