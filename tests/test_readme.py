"""README.md is the user's manual: its runnable snippets run against a real server, and its
configuration table lists every setting."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from app.settings import ENV_VARS, Settings
from tests.conftest import JWT_SECRET, start_live_server, token_for

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
SNIPPETS = re.findall(r"```(python|sh) test\n(.*?)```", README, re.S)
JS_SNIPPETS = re.findall(r"```js test\n(.*?)```", README, re.S)  # run under Node, in tests/node


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("readme")
    live = start_live_server(Settings(data_dir=str(data), jwt_secret=JWT_SECRET, offline_token_delay_ms=20))
    yield live
    live.stop()


def run_snippet(language: str, code: str, server) -> str:
    code = code.replace("http://127.0.0.1:8000", server.url).replace(
        "ws://127.0.0.1:8000", server.url.replace("http://", "ws://")
    )
    command = [sys.executable, "-c", code] if language == "python" else ["bash", "-euc", code]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "CHAT_TOKEN": token_for("alice")})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_readme_has_runnable_snippets_for_every_transport():
    assert len(SNIPPETS) == 6


def test_curl_sse_snippet(server):
    output = run_snippet(*SNIPPETS[0], server)
    assert output.startswith('data: {"type":"start"')
    assert '"name":"add_task"' in output and '"status":"completed"' in output


def test_python_sse_snippet(server):
    output = run_snippet(*SNIPPETS[1], server)
    assert "[add_task {'title': 'water the plants'}]" in output
    assert "[ ] water the plants" in output
    assert output.count("(completed)") == 2


def test_retried_send_snippet_answers_one_reply(server):
    output = run_snippet(*SNIPPETS[2], server)
    assert "pay the rent" in output


def test_websocket_snippet_stops_the_reply(server):
    output = run_snippet(*SNIPPETS[3], server)
    assert output.rstrip().endswith("(cancelled)")


def test_chatkit_snippet(server):
    output = run_snippet(*SNIPPETS[4], server)
    assert output.lstrip().startswith("[thread.created]")
    assert "[stream_options]" in output and "[thread.item.done]" in output
    assert "Added “call mom” to your list" in output


def test_configuration_table_lists_every_setting_with_its_default():
    table = dict(re.findall(r"^\| `([A-Z_]+)` \| (.*?) \|", README, re.M))
    assert set(ENV_VARS) <= table.keys(), set(ENV_VARS) - table.keys()
    defaults = msgspec.structs.asdict(Settings())
    for name, value in defaults.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert table[name.upper()].strip("`") in (str(value), f"{value:g}"), name


def test_quick_start_commands_are_what_ci_runs():
    assert "make serve" in README and "make test" in README
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^serve: ", makefile, re.M) and re.search(r"^test: ", makefile, re.M)
    assert (ROOT / ".ci" / "run").read_text().rstrip().endswith("make test")


def test_ai_sdk_node_snippet(server):
    from tests.test_ai_sdk import require_node_clients

    require_node_clients()
    output = run_snippet(*SNIPPETS[5], server)
    assert '"tool-add_task"' in output and "buy milk" in output


def test_ag_ui_node_snippet(server):
    from tests.test_ai_sdk import require_node_clients

    require_node_clients()
    [code] = JS_SNIPPETS
    done = subprocess.run(
        ["node", "--input-type=module", "-e", code.replace("http://127.0.0.1:8000", server.url)],
        capture_output=True, text=True, timeout=60, cwd=ROOT / "tests" / "node",
        env={**os.environ, "CHAT_TOKEN": token_for("alice")},
    )
    assert done.returncode == 0, done.stderr
    assert "[add_task] { title: 'buy milk' }" in done.stdout
    assert "buy milk" in done.stdout.split("\n", 1)[1] and done.stdout.rstrip().endswith("(success)")
