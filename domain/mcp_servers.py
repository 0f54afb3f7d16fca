"""Remote MCP servers whose tools join the agent's (``MCP_SERVERS``), through the agents SDK's
own MCP support (``Agent.mcp_servers``): each turn the SDK asks every server for its tools and
turns them into function tools, whose calls are shown, approved and stored like any other.

- Names: the model sees ``<server>__<tool>`` (a model's tool name may not hold a dot);
  ``TOOL_APPROVAL`` names them ``<server>.<tool>``.
- The tool list is cached for ``refresh_s``; a server that cannot be listed keeps its last list
  (none before the first), is asked again a few seconds later, and never fails a reply.
- Each list or call opens an MCP session of its own: no connection to keep alive, and a server
  restarted between two calls is simply used again.
- A call that fails (the server down or gone mid-call, a timeout, the tool's own error) tells
  the model ``{"error": …}`` as its result, as the Todo tools say no; the reply goes on.
- Results reach the model as JSON text: the tool's structured content, else its text (a JSON
  object as it is, other text as ``{"result": text}``, which is how ``mcp``'s MCPServer wraps a
  plain return value).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx2
import mcp_types as types
from agents import Agent
from agents.mcp import MCPServer
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from domain.approvals import ApprovalPolicy

logger = logging.getLogger(__name__)

RETRY_S = 5.0  # a server that could not be listed is asked again after this long
MAX_NAME = 64  # the longest tool name model providers take
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def tool_name(server: str, tool: str) -> str:
    """The name the model knows a server's tool by."""
    return f"{server}__{_UNSAFE.sub('_', tool)}"[:MAX_NAME]


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _reason(exc: BaseException, timeout_s: float) -> str:
    """Why a request to a server failed, in words that hold no URL or header."""
    for leaf in _leaves(exc):
        if isinstance(leaf, (httpx2.TimeoutException, TimeoutError)):
            return f"did not answer within {timeout_s:g} s"
        if isinstance(leaf, httpx2.HTTPStatusError):
            return f"answered HTTP {leaf.response.status_code}"
        if isinstance(leaf, httpx2.TransportError):
            return "could not be reached"
        if isinstance(leaf, MCPError):
            return f"failed: {leaf.error.message}"
    return f"failed ({type(exc).__name__})"


def _json_result(value: dict[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=json.dumps(value))],
                                structured_content=value)


def _as_json(result: types.CallToolResult) -> types.CallToolResult:
    """The result as one JSON object (see the module's notes); images and other content stay."""
    texts = [item.text for item in result.content if isinstance(item, types.TextContent)]
    if result.is_error:
        return _json_result({"error": "\n".join(texts) or "The tool failed."})
    if isinstance(result.structured_content, dict):
        return _json_result(result.structured_content)
    if len(texts) != len(result.content):
        return result
    text = "\n".join(texts)
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    return _json_result(value if isinstance(value, dict) else {"result": text})


class RemoteMCPServer(MCPServer):
    """One ``MCP_SERVERS`` entry, as the agents SDK's ``MCPServer``."""

    def __init__(self, name: str, url: str, headers: Mapping[str, str] | None = None, *,
                 approvals: ApprovalPolicy = ApprovalPolicy(), refresh_s: float = 60.0, timeout_s: float = 30.0):
        # Structured content (which _as_json always gives) reaches the model as JSON text.
        super().__init__(use_structured_content=True, require_approval=self._needs_approval)
        self._name = name
        self._url = url
        self._headers = dict(headers or {})
        self._approvals = approvals
        self._refresh_s = refresh_s
        self._timeout_s = timeout_s
        self._tools: list[types.Tool] = []
        self._originals: dict[str, str] = {}  # the model's name of a tool -> the server's
        self._next_listing = 0.0  # time.monotonic() when the list is read again
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self._name

    async def connect(self) -> None:
        """Nothing to open: each request has a session of its own."""

    async def cleanup(self) -> None:
        """Nothing to close."""

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[ClientSession]:
        async with httpx2.AsyncClient(headers=self._headers, timeout=self._timeout_s) as http, \
                streamable_http_client(self._url, http_client=http) as streams, \
                ClientSession(streams[0], streams[1], read_timeout_seconds=self._timeout_s) as session:
            await session.initialize()
            yield session

    # -- tools -----------------------------------------------------------------------------

    async def list_tools(self, run_context: Any = None, agent: Any = None) -> list[types.Tool]:
        if time.monotonic() < self._next_listing:
            return self._tools
        async with self._lock:
            if time.monotonic() >= self._next_listing:
                await self._read_tools()
        return self._tools

    async def _read_tools(self) -> None:
        try:
            listed: list[types.Tool] = []
            async with self._session() as session:
                cursor = None
                while True:
                    page = await session.list_tools(
                        params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
                    listed += page.tools
                    if not (cursor := page.next_cursor):
                        break
        except Exception as exc:  # noqa: BLE001 - a server away costs its tools, never the reply
            logger.warning("MCP server %s: its tools could not be listed: it %s; %s", self._name,
                           _reason(exc, self._timeout_s),
                           "keeping its last list" if self._tools else "no tools from it for now")
            self._next_listing = time.monotonic() + min(RETRY_S, self._refresh_s)
            return
        tools, originals = [], {}
        for tool in listed:
            name = tool_name(self._name, tool.name)
            if name in originals:
                logger.warning("MCP server %s: tool %r is left out: its name is taken (%s)", self._name, tool.name, name)
                continue
            originals[name] = tool.name
            tools.append(tool.model_copy(update={"name": name}))
        self._tools, self._originals = tools, originals
        self._next_listing = time.monotonic() + self._refresh_s

    @property
    def cached_tools(self) -> list[types.Tool] | None:
        return self._tools

    def _needs_approval(self, run_context: Any, agent: Any, tool: types.Tool) -> bool:
        return self._approvals.needs(f"{self._name}.{self._originals.get(tool.name, tool.name)}")

    async def call_tool(self, tool_name: str, arguments: dict[str, Any] | None,
                        meta: dict[str, Any] | None = None) -> types.CallToolResult:
        original = self._originals.get(tool_name)
        if original is None:
            return _json_result({"error": f"The MCP server “{self._name}” has no tool {tool_name!r} any more."})
        try:
            async with self._session() as session:
                result = await session.call_tool(original, arguments or {})
        except Exception as exc:  # noqa: BLE001 - the model is told, the reply goes on
            reason = _reason(exc, self._timeout_s)
            logger.warning("MCP server %s, tool %s: the server %s", self._name, original, reason)
            return _json_result({"error": f"The MCP server “{self._name}” {reason}; the tool {original} may not "
                                          "have run."})
        return _as_json(result)

    # -- what this server does not offer the agent -------------------------------------------

    async def list_prompts(self) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=[])

    async def get_prompt(self, name: str, arguments: dict[str, Any] | None = None) -> types.GetPromptResult:
        raise KeyError(name)


def with_servers(agent: Agent[Any], servers: Sequence[MCPServer]) -> Agent[Any]:
    """The agent, with the servers' tools joining its own."""
    return agent.clone(mcp_servers=[*agent.mcp_servers, *servers]) if servers else agent
