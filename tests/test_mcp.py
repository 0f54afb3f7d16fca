"""The server's tools over MCP (``/mcp``), driven by the official MCP clients: the ``mcp`` Python
package here, ``@modelcontextprotocol/sdk`` from tests/node."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import httpx2
import mcp_types as types
import msgspec
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import auth, start_live_server, token_for

NODE_DIR = Path(__file__).parent / "node"
TODO_TOOLS = ["add_task", "list_tasks", "complete_task", "update_task", "delete_task"]

Answer = Callable[[Any, types.ElicitRequestParams], Awaitable[types.ElicitResult]]


def answering(action: str, asked: list[str]) -> Answer:
    """An elicitation callback (the client then declares the capability) that gives ``action``."""

    async def answer(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action=action, content={} if action == "accept" else None)

    return answer


@contextlib.asynccontextmanager
async def mcp_session(url: str, user: str, elicit: Answer | None = None) -> AsyncIterator[ClientSession]:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token_for(user)}"}, timeout=30) as http, \
            streamable_http_client(f"{url}/mcp", http_client=http) as streams, \
            ClientSession(streams[0], streams[1], elicitation_callback=elicit) as session:
        await session.initialize()
        yield session


def result(called: types.CallToolResult) -> dict:
    """The tool's answer, as its JSON text says it (and as the structured content repeats it)."""
    value = json.loads(called.content[0].text)
    assert called.structured_content == value
    return value


def titles(listed: types.CallToolResult) -> list[str]:
    return [task["title"] for task in result(listed)["tasks"]]


def test_an_mcp_client_lists_the_tools_and_manages_the_users_tasks(live_server):
    async def scenario():
        async with mcp_session(live_server.url, "alice") as mcp:
            listed = await mcp.list_tools()
            added = await mcp.call_tool("add_task", {"title": "buy milk"})
            await mcp.call_tool("add_task", {"title": "call mom", "description": "about the trip"})
            completed = await mcp.call_tool("complete_task", {"title": "buy milk"})
            renamed = await mcp.call_tool("update_task", {"number": 2, "new_title": "call dad"})
            pending = await mcp.call_tool("list_tasks", {"status": "pending"})
            return listed, added, completed, renamed, pending

    listed, added, completed, renamed, pending = asyncio.run(scenario())
    assert [tool.name for tool in listed.tools] == TODO_TOOLS
    add = next(tool for tool in listed.tools if tool.name == "add_task")
    assert add.input_schema["required"] == ["title"]  # the description may be left out
    assert add.description.startswith("Add a task")
    assert not added.is_error and result(added)["added"]["title"] == "buy milk"
    assert result(completed)["updated"]["completed"] is True
    assert result(renamed)["updated"]["title"] == "call dad"
    assert titles(pending) == ["call dad"]
    # The same tasks the REST API (and the page) shows.
    rest = httpx.get(f"{live_server.url}/api/alice/tasks", headers=auth("alice")).json()
    assert [(t["title"], t["completed"]) for t in rest] == [("buy milk", True), ("call dad", False)]


def test_a_second_user_sees_none_of_the_first_users_tasks(live_server):
    async def scenario():
        async with mcp_session(live_server.url, "alice") as alice:
            task = result(await alice.call_tool("add_task", {"title": "alice's secret"}))["added"]
            async with mcp_session(live_server.url, "bob") as bob:
                seen = await bob.call_tool("list_tasks", {})
                by_id = await bob.call_tool("delete_task", {"task_id": task["id"]})
                renamed = await bob.call_tool("update_task", {"task_id": task["id"], "new_title": "mine now"})
            return seen, by_id, renamed, await alice.call_tool("list_tasks", {})

    seen, by_id, renamed, alices = asyncio.run(scenario())
    assert result(seen)["tasks"] == []
    assert by_id.is_error and renamed.is_error
    assert "No task matches" in result(renamed)["error"]
    assert titles(alices) == ["alice's secret"]


def test_another_users_token_cannot_use_a_session(live_server):
    """A session belongs to the user who opened it: someone else's token gets the 404 of a
    session that does not exist."""
    opened = httpx.post(f"{live_server.url}/mcp", headers={**auth("alice"), **MCP_HEADERS}, json=INITIALIZE)
    assert opened.status_code == 200, opened.text
    session = opened.headers["mcp-session-id"]
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    as_bob = httpx.post(f"{live_server.url}/mcp", json=listing,
                        headers={**auth("bob"), **MCP_HEADERS, "Mcp-Session-Id": session,
                                 "Mcp-Protocol-Version": "2025-06-18"})
    assert as_bob.status_code == 404


MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "curl", "version": "1"}},
}


@pytest.mark.parametrize("headers, detail", [
    ({}, "Missing bearer token."),
    ({"Authorization": "Bearer not-a-jwt"}, "The token is not valid."),
    ({"Authorization": f"Bearer {token_for('alice', ttl_s=-60)}"}, "The token has expired."),
])
def test_without_a_valid_token_mcp_is_401(live_server, headers, detail):
    for method in ("POST", "GET", "DELETE"):
        response = httpx.request(method, f"{live_server.url}/mcp", headers={**MCP_HEADERS, **headers},
                                 json=INITIALIZE if method == "POST" else None)
        assert response.status_code == 401, response.text
        assert response.json() == {"status_code": 401, "detail": detail, "code": "unauthorized",
                                   "extra": {"code": "unauthorized"}}
        assert response.headers["www-authenticate"] == "Bearer"


def test_the_official_client_without_a_token_is_refused(live_server):
    statuses: list[int] = []

    async def record(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    async def scenario():
        async with httpx2.AsyncClient(event_hooks={"response": [record]}) as http, \
                streamable_http_client(f"{live_server.url}/mcp", http_client=http) as streams, \
                ClientSession(streams[0], streams[1]) as session:
            await session.initialize()

    with pytest.raises(Exception):  # the SDK's error, raised out of its task groups
        asyncio.run(asyncio.wait_for(scenario(), 30))
    assert statuses == [401]


@pytest.mark.parametrize("action", ["accept", "decline", "cancel"])
def test_a_delete_asks_the_client_to_confirm(live_server, action):
    asked: list[str] = []

    async def scenario():
        async with mcp_session(live_server.url, "alice", answering(action, asked)) as mcp:
            await mcp.call_tool("add_task", {"title": "buy milk"})
            deleted = await mcp.call_tool("delete_task", {"title": "buy milk"})
            return deleted, await mcp.call_tool("list_tasks", {})

    deleted, left = asyncio.run(scenario())
    assert asked == ["Delete the task “buy milk”?"]
    if action == "accept":
        assert not deleted.is_error and result(deleted)["deleted"]["title"] == "buy milk"
        assert titles(left) == []
    else:
        assert deleted.is_error
        assert result(deleted)["error"].startswith("The user declined this tool call; it did not run.")
        assert titles(left) == ["buy milk"]


def test_a_client_that_cannot_confirm_is_refused_a_delete(live_server):
    async def scenario():
        async with mcp_session(live_server.url, "alice") as mcp:  # no elicitation callback
            await mcp.call_tool("add_task", {"title": "buy milk"})
            deleted = await mcp.call_tool("delete_task", {"number": 1})
            return deleted, await mcp.call_tool("list_tasks", {})

    deleted, left = asyncio.run(scenario())
    assert deleted.is_error
    assert "needs the user's confirmation" in result(deleted)["error"]
    assert titles(left) == ["buy milk"]


def test_tool_approval_decides_which_tools_ask(settings):
    """TOOL_APPROVAL=none: a delete runs without asking; naming add_task: adding asks."""
    asked: list[str] = []

    async def scenario(url: str, user: str) -> tuple:
        async with mcp_session(url, user, answering("decline", asked)) as mcp:
            added = await mcp.call_tool("add_task", {"title": "buy milk"})
            await mcp.call_tool("add_task", {"title": "buy milk"})
            deleted = await mcp.call_tool("delete_task", {"title": "buy milk"})
            return added, deleted

    live = start_live_server(msgspec.structs.replace(settings, tool_approval="none"))
    try:
        added, deleted = asyncio.run(scenario(live.url, "alice"))
    finally:
        live.stop()
    assert asked == [] and not added.is_error and result(deleted)["deleted"]["title"] == "buy milk"

    live = start_live_server(msgspec.structs.replace(settings, tool_approval="add_task"))
    try:
        added, deleted = asyncio.run(scenario(live.url, "bob"))
    finally:
        live.stop()
    assert asked == ["Add the task “buy milk”?"] * 2
    assert added.is_error and deleted.is_error  # nothing was added: nothing to delete


def test_bad_arguments_are_a_clear_tool_error_that_changes_nothing(live_server):
    async def scenario():
        async with mcp_session(live_server.url, "alice") as mcp:
            missing = await mcp.call_tool("add_task", {})
            wrong = await mcp.call_tool("list_tasks", {"status": "someday"})
            unknown = await mcp.call_tool("drop_tables", {})
            blank = await mcp.call_tool("add_task", {"title": "  "})
            return missing, wrong, unknown, blank, await mcp.call_tool("list_tasks", {})

    missing, wrong, unknown, blank, left = asyncio.run(scenario())
    assert result(missing) == {"error": "Invalid arguments: 'title' is a required property"}
    assert result(wrong)["error"].startswith("Invalid arguments at status: 'someday' is not one of")
    assert result(unknown) == {"error": "No tool is named 'drop_tables'."}
    assert result(blank) == {"error": "A task needs a title."}
    assert all(r.is_error for r in (missing, wrong, unknown, blank))
    assert titles(left) == []


def test_a_change_over_mcp_reaches_the_users_open_feed(live_server):
    async def scenario():
        async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http, \
                http.stream("GET", "/api/alice/events", headers=auth("alice")) as feed:
            lines = feed.aiter_lines()
            async with mcp_session(live_server.url, "alice", answering("accept", [])) as mcp:
                task = result(await mcp.call_tool("add_task", {"title": "buy milk"}))["added"]
                await mcp.call_tool("complete_task", {"task_id": task["id"]})
                await mcp.call_tool("delete_task", {"task_id": task["id"]})
            seen = []
            while len(seen) < 3:
                line = await asyncio.wait_for(anext(lines), 30)
                if line.startswith("data: "):
                    seen.append(json.loads(line.removeprefix("data: ")))
            return task, seen

    task, seen = asyncio.run(scenario())
    assert [(e["type"], e["task_id"]) for e in seen] == [
        ("task_added", task["id"]), ("task_changed", task["id"]), ("task_removed", task["id"])]
    assert seen[1]["completed"] is True


def require_node_clients() -> None:
    """As tests/test_ai_sdk.py: skipped without Node or the pinned clients, failed in CI."""
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "@modelcontextprotocol" / "sdk").is_dir():
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail("the Node clients are not installed: npm ci --prefix tests/node")
        pytest.skip("needs Node.js and the pinned MCP client (`npm ci --prefix tests/node`)")


def node_mcp(url: str, user: str, *steps: str) -> list[dict]:
    require_node_clients()
    done = subprocess.run(["node", str(NODE_DIR / "mcp_client.mjs"), f"{url}/mcp", token_for(user), *steps],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_node_mcp_client_lists_and_calls_the_tools(live_server):
    tools, added, _, confirmed, declined, left = node_mcp(
        live_server.url, "alice",
        "list", 'add_task {"title": "buy milk"}', 'add_task {"title": "call mom"}',
        'accept:delete_task {"title": "buy milk"}', 'decline:delete_task {"title": "call mom"}', "list_tasks {}",
    )
    assert tools == TODO_TOOLS
    assert not added["isError"] and added["value"]["added"]["title"] == "buy milk"
    assert confirmed["asked"] == ["Delete the task “buy milk”?"] and confirmed["value"]["deleted"]["title"] == "buy milk"
    assert declined["isError"] and declined["value"]["error"].startswith("The user declined")
    assert [task["title"] for task in left["value"]["tasks"]] == ["call mom"]

    bobs, refused = node_mcp(live_server.url, "bob", "list_tasks {}", 'delete_task {"number": 1}')
    assert bobs["value"]["tasks"] == []
    assert refused["isError"] and "needs the user's confirmation" in refused["value"]["error"]
    (cannot,) = node_mcp(live_server.url, "alice", 'delete_task {"title": "call mom"}')  # no elicitation
    assert cannot["isError"] and "needs the user's confirmation" in cannot["value"]["error"]
