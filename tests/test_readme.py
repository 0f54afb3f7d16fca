"""README.md is the user's manual: its runnable snippets run against a real server, and its
configuration table lists every setting."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
import pytest
from playwright.sync_api import Route, expect

from app.settings import ENV_VARS, Settings
from tests.conftest import JWT_SECRET, start_live_server, token_for
from tests.test_ai_sdk import require_node_clients
from tests.test_web_page import browser  # noqa: F401 (a fixture)

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
SNIPPETS = re.findall(r"```(python|sh|js|tsx) test\n(.*?)```", README, re.S)
NODE_DIR = ROOT / "tests" / "node"  # where the snippets' npm packages are installed


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("readme")
    live = start_live_server(Settings(data_dir=str(data), jwt_secret=JWT_SECRET, offline_token_delay_ms=20,
                                      tool_approval="delete_task"))
    yield live
    live.stop()


def run_snippet(language: str, code: str, server) -> str:
    code = code.replace("http://127.0.0.1:8000", server.url).replace(
        "ws://127.0.0.1:8000", server.url.replace("http://", "ws://")
    )
    command = {
        "python": [sys.executable, "-c", code], "sh": ["bash", "-euc", code], "js": ["node", "--input-type=module", "-e", code],
    }[language]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=NODE_DIR if language == "js" else ROOT,
                          env={**os.environ, "CHAT_TOKEN": token_for("alice")})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_readme_has_runnable_snippets_for_every_transport():
    assert len(SNIPPETS) == 14


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


def test_ai_sdk_websocket_node_snippet(server):
    require_node_clients()
    output = run_snippet(*SNIPPETS[6], server)
    assert "[tool-add_task]" in output and "buy milk" in output


def test_react_use_chat_snippet_in_chromium(server, browser):  # noqa: F811 (the imported fixture)
    """The README's component, bundled by esbuild with a two-line mount, chatting in Chromium."""
    require_node_clients()
    language, code = SNIPPETS[5]
    entry = code.replace("http://127.0.0.1:8000", server.url) + (
        'import { createRoot } from "react-dom/client";\n'
        'createRoot(document.getElementById("root")!).render(<Chat />);\n'
    )
    bundled = subprocess.run(
        [str(NODE_DIR / "node_modules" / ".bin" / "esbuild"), "--bundle", f"--loader={language}", "--jsx=automatic",
         "--format=esm", '--define:process.env.NODE_ENV="production"'],
        input=entry, capture_output=True, text=True, timeout=60, cwd=NODE_DIR,
    )
    assert bundled.returncode == 0, bundled.stderr
    pages = {"index.html": ('<div id="root"></div><script type="module" src="app.js"></script>', "text/html"),
             "app.js": (bundled.stdout, "text/javascript")}

    def serve_page(route: Route) -> None:
        body, content_type = pages[route.request.url.rsplit("/", 1)[1]]
        route.fulfill(body=body, content_type=content_type)

    context = browser.new_context()
    # The page comes from the server's origin (as an app would), its API calls reach the server.
    context.route(f"{server.url}/readme-react/*", serve_page)
    context.add_init_script(f"localStorage.setItem('chatToken', '{token_for('alice')}')")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"{server.url}/readme-react/index.html")
        page.get_by_label("Message").fill("add buy milk")
        page.get_by_role("button", name="Send").click()
        reply = page.locator("p.assistant")
        expect(reply).to_contain_text("[add_task]", timeout=15_000)
        expect(reply).to_contain_text("buy milk", timeout=15_000)
        expect(page.get_by_role("button", name="Send")).to_be_visible(timeout=15_000)  # the reply finished
    finally:
        context.close()
    assert errors == []


def test_ag_ui_node_snippet(server):
    require_node_clients()
    output = run_snippet(*SNIPPETS[7], server)
    assert "[add_task] { title: 'buy milk' }" in output
    assert "buy milk" in output.split("\n", 1)[1] and output.rstrip().endswith("(success)")


def test_feed_snippet_tells_a_change_made_elsewhere(server):
    output = run_snippet(*SNIPPETS[10], server)
    assert output.splitlines() == [
        "conversation_created add call the bank", "run_started ", "task_added call the bank", "run_finished ",
    ]


def test_approval_curl_snippet_rejects(server):
    output = run_snippet(*SNIPPETS[8], server)
    assert '"type":"approval_request"' in output and '"name":"delete_task"' in output
    assert '"type":"tool_result"' in output and "not today" in output and '"status":"completed"' in output


def test_approval_python_snippet_approves(server):
    output = run_snippet(*SNIPPETS[9], server).splitlines()
    assert output[0] == "awaiting_approval delete_task {'title': 'water the ferns'}"
    assert "Deleted" in output[1] and output[1].endswith("(completed)")


def test_usage_curl_snippet(server):
    usage = msgspec.json.decode(run_snippet(*SNIPPETS[13], server))
    assert set(usage) == {"from", "to", "input_tokens", "output_tokens", "days", "tokens_per_day", "tokens_left_today"}
    assert usage["from"] == usage["to"] and len(usage["days"]) == 1


def test_mcp_python_snippet(server):
    output = run_snippet(*SNIPPETS[11], server).splitlines()
    assert output == [str(["add_task", "list_tasks", "complete_task", "update_task", "delete_task"]), "renew the passport"]


def test_mcp_client_configuration_reaches_the_server(server):
    """The README's MCP client configuration, as a client reads it: its URL and headers work."""
    import asyncio

    import httpx2
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    config = json.loads(re.search(r"```json\n(\{\n  \"mcpServers\".*?)```", README, re.S)[1])
    todo = config["mcpServers"]["todo"]
    assert todo["type"] == "http"
    url = todo["url"].replace("http://127.0.0.1:8000", server.url)
    headers = {name: value.replace("<token>", token_for("alice")) for name, value in todo["headers"].items()}

    async def tools() -> list[str]:
        async with httpx2.AsyncClient(headers=headers) as http, \
                streamable_http_client(url, http_client=http) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            return [tool.name for tool in (await session.list_tools()).tools]

    # In a thread of its own: Playwright's sync API (the browser test of this module) leaves the
    # main thread looking as if an event loop ran there, and asyncio.run refuses to start.
    with ThreadPoolExecutor(1) as pool:
        assert "add_task" in pool.submit(asyncio.run, tools()).result()


def test_search_fork_and_feedback_snippet(server):
    found, forked, rated = run_snippet(*SNIPPETS[12], server).splitlines()
    assert "book a table at the [Café] [Zoë]" in found  # the matched words marked
    assert forked.startswith("add book a table at the Café Zoë (fork) ") and forked.endswith(" 3")
    assert rated == "[('up', 'quick')]"
