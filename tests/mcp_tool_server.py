"""A small remote MCP server for the tests, built with the official ``mcp`` package (MCPServer),
served over Streamable HTTP at ``/mcp``: ``python tests/mcp_tool_server.py PORT TOKEN [reverse]``.

It answers only requests that carry ``Authorization: Bearer TOKEN`` (the header MCP_SERVERS
sends). Its tools: ``echo`` (says back what it is given), ``hang`` (never returns: the test
kills this process while the call is open) and ``count`` (how often ``echo`` ran, so a test can
tell whether a call ran); with ``reverse``, one more tool (``reverse``): a server whose list changed.
"""

from __future__ import annotations

import asyncio
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer

server = MCPServer("files")
echoed: list[str] = []


@server.tool()
def echo(text: str) -> str:
    """Say the text back."""
    echoed.append(text)
    return f"echo: {text}"


@server.tool()
async def hang() -> str:
    """Never return."""
    print("hanging", flush=True)  # the test waits for this line before it kills the server
    await asyncio.Event().wait()
    return "unreachable"


@server.tool()
def count() -> int:
    """How many times echo ran."""
    return len(echoed)


def reverse(text: str) -> str:
    """The text backwards."""
    return text[::-1]


def guarded(app, token: str):
    async def asgi(scope, receive, send):
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != f"Bearer {token}".encode():
            await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"no"})
            return
        await app(scope, receive, send)

    return asgi


if __name__ == "__main__":
    port, token = int(sys.argv[1]), sys.argv[2]
    if "reverse" in sys.argv[3:]:
        server.add_tool(reverse)
    app = server.streamable_http_app(host="127.0.0.1")
    # The Starlette app's lifespan runs the session manager; the guard passes lifespan events on.
    uvicorn.run(guarded(app, token), host="127.0.0.1", port=port, log_level="warning")
