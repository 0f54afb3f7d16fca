"""The server's tools over MCP: ``POST/GET/DELETE /mcp``, Streamable HTTP (the official ``mcp``
package), for AI clients (desktop assistants, IDEs) to manage the signed-in user's tasks.

The tools are the agent's own function tools, called as the agent calls them: the user comes
from the bearer token (the route's guard), never from the arguments, and a change reaches the
user's feed through the context the app builds. A tool that ``TOOL_APPROVAL`` names asks the
MCP client to confirm (elicitation) before it runs; a client that cannot ask is refused.

Sessions live in this process (``Mcp-Session-Id``): behind a load balancer, one client's
requests must reach the instance that opened its session (sticky sessions), as the spec's
stateful transport expects. A session belongs to the user who opened it; another user's token
on it gets the same 404 as an unknown session.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import mcp_types as types
from agents import FunctionTool, Tool
from agents.tool_context import ToolContext
from litestar.handlers import ASGIRouteHandler, asgi
from litestar.types import Guard, Receive, Scope, Send
from mcp.server import Server, ServerRequestContext
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from domain.approvals import ApprovalPolicy, declined, describe
from domain.errors import ShuttingDown

SERVER_NAME = "chat-server"
CONFIRM_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}  # a yes or no: nothing to fill in
ContextFor = Callable[[str], Any]
"""The run context the tools expect, for a user (the Todo tools: ``TodoContext``)."""


def _result(output: Any) -> types.CallToolResult:
    """A tool's output as an MCP result. The tools answer JSON text, and say no with
    ``{"error": …}``; text that is not JSON is the agents SDK's own report of a call that
    failed (arguments that do not fit the schema): an error too."""
    text = output if isinstance(output, str) else json.dumps(output, default=str)
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    failed = value is None or isinstance(value, dict) and "error" in value
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content=value if isinstance(value, dict) else None,
        is_error=failed,
    )


def _relaxed(schema: dict[str, Any]) -> dict[str, Any]:
    """A tool's schema for MCP clients. The agents SDK makes it strict for the model (every
    property required, ``null`` where there is nothing to say); a property with a default, or
    one that may be null, is optional here, as the tool itself takes it."""
    properties = schema.get("properties", {})

    def optional(name: str) -> bool:
        field = properties.get(name, {})
        return "default" in field or {"type": "null"} in field.get("anyOf", [])

    return {**schema, "required": [name for name in schema.get("required", []) if not optional(name)]}


def _refusal(message: str) -> types.CallToolResult:
    return _result(json.dumps({"error": message}))


def _user_of(ctx: ServerRequestContext[Any]) -> str:
    user = getattr(ctx.request, "scope", {}).get("user")
    if not isinstance(user, AuthenticatedUser) or not user.access_token.subject:
        # The route's guard authenticates every request: only a transport without one gets here.
        raise RuntimeError("an MCP request without an authenticated user")
    return user.access_token.subject


def _can_ask(ctx: ServerRequestContext[Any]) -> bool:
    """The client declared form elicitation (an empty ``elicitation`` is form, as before the
    spec split it) and this request's stream can carry the question."""
    capabilities = ctx.session.client_capabilities
    elicitation = capabilities.elicitation if capabilities else None
    if elicitation is None or (elicitation.form is None and elicitation.url is not None):
        return False
    return ctx.session.can_send_request


class ToolEndpoint:
    """The MCP server of one app: its tools, the sessions, and the task that keeps them."""

    def __init__(self, tools: Sequence[Tool], approvals: ApprovalPolicy, *, max_body_bytes: int):
        self._tools = {tool.name: tool for tool in tools if isinstance(tool, FunctionTool)}
        self._approvals = approvals
        self._schemas = {name: _relaxed(tool.params_json_schema) for name, tool in self._tools.items()}
        self._checks: dict[str, Any] = {}  # a jsonschema validator per tool, made on its first call
        self._listing = [
            types.Tool(name=name, description=tool.description, input_schema=self._schemas[name])
            for name, tool in self._tools.items()
        ]
        self._server: Server[Any] = Server(
            SERVER_NAME, on_list_tools=self._list_tools, on_call_tool=self._call_tool,
            get_tool_input_schema=self._schemas.get,
        )
        self._max_body_bytes = max_body_bytes
        self._context_for: ContextFor | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    # -- life --------------------------------------------------------------------------------

    async def open(self, context_for: ContextFor) -> None:
        """Start serving: the session manager runs in a task of its own, so that ``close`` can end
        every session (and its open streams) from anywhere, before uvicorn waits for them."""
        self._context_for = context_for
        # A manager runs once: each lifespan gets its own. SSE answers (not JSON), so that a
        # confirmation question travels on the call's own stream.
        self._sessions = StreamableHTTPSessionManager(app=self._server, max_request_body_size=self._max_body_bytes)
        self._stop, started = asyncio.Event(), asyncio.Event()  # this lifespan's loop
        self._task = asyncio.create_task(self._serve(started), name="mcp-sessions")
        await started.wait()

    async def _serve(self, started: asyncio.Event) -> None:
        async with self._sessions.run():
            started.set()
            await self._stop.wait()

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    # -- requests ----------------------------------------------------------------------------

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One HTTP request to ``/mcp``; the guard has put the token's user in ``scope["user"]``."""
        if self._task is None or self._stop.is_set():
            raise ShuttingDown("The server is shutting down; try again in a moment.")
        user = scope["user"]
        # The MCP SDK ties each session to the principal that opened it: here, the user.
        scope["user"] = AuthenticatedUser(AccessToken(token="", client_id=user, subject=user, scopes=[]))
        await self._sessions.handle_request(scope, receive, send)  # type: ignore[arg-type]

    async def _list_tools(self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
                          ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=self._listing)

    async def _call_tool(self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
                         ) -> types.CallToolResult:
        user = _user_of(ctx)
        tool = self._tools.get(params.name)
        if tool is None:
            return _refusal(f"No tool is named {params.name!r}.")
        arguments = params.arguments or {}
        if (wrong := self._wrong_arguments(tool.name, arguments)) is not None:
            return _refusal(wrong)
        if self._approvals.needs(tool.name):
            refused = await self._confirm(ctx, tool.name, arguments)
            if refused is not None:
                return _refusal(refused)
        assert self._context_for is not None, "opened first"
        text = json.dumps(arguments)
        call_id = f"mcp_{uuid.uuid4().hex}"
        context = ToolContext(context=self._context_for(user), tool_name=tool.name, tool_call_id=call_id,
                              tool_arguments=text)
        return _result(await tool.on_invoke_tool(context, text))

    def _wrong_arguments(self, name: str, arguments: dict[str, Any]) -> str | None:
        """What is wrong with the arguments, checked here where the reason can be told (the SDK's
        own check answers a bare "error")."""
        import jsonschema  # here: 90 ms of start-up for the first call only

        if name not in self._checks:
            self._checks[name] = jsonschema.Draft202012Validator(self._schemas[name])
        wrong = jsonschema.exceptions.best_match(self._checks[name].iter_errors(arguments))
        if wrong is None:
            return None
        where = "/".join(str(part) for part in wrong.absolute_path)
        return f"Invalid arguments{f' at {where}' if where else ''}: {wrong.message}"

    async def _confirm(self, ctx: ServerRequestContext[Any], name: str, arguments: dict[str, Any]) -> str | None:
        """None once the user said yes; otherwise why the call did not run."""
        if not _can_ask(ctx):
            return (f"{describe(name, arguments)}: this needs the user's confirmation, and this MCP client "
                    "cannot ask for it (no elicitation). The server's TOOL_APPROVAL decides which tools ask.")
        answer = await ctx.session.elicit_form(
            message=f"{describe(name, arguments)}?", requested_schema=CONFIRM_SCHEMA, related_request_id=ctx.request_id,
        )
        return None if answer.action == "accept" else declined(None)


def mcp_route(endpoint: ToolEndpoint, guards: Sequence[Guard]) -> ASGIRouteHandler:
    """``/mcp`` (and below it: some clients add a slash) for ``endpoint``; ``guards`` authenticate."""

    @asgi("/mcp", is_mount=True, copy_scope=True, guards=list(guards))
    async def mcp(scope: Scope, receive: Receive, send: Send) -> None:
        await endpoint.handle(scope, receive, send)

    return mcp

