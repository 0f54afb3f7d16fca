"""``chat-server``: serve, migrate, token, chat.

A command imports what it needs when it runs: ``token`` and ``--help`` load no web framework,
database driver or model SDK (importing them all took ``token`` 4-5 s to sign a JWT).
``tests/test_cli.py`` checks what ``token`` loads.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from litestar import Litestar


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How ``serve`` runs uvicorn (the live-server tests run it the same way)."""
    from app.uvicorn_batched_websocket import BatchingWebSocketProtocol

    return dict(
        # Named, not "auto": a missing uvloop or httptools fails loudly instead of falling back
        # to the pure-Python loop and parser.
        loop="uvloop", http="httptools",
        # websockets' sans-I/O protocol: at 250 paced WebSocket replies 126-129 µs of server CPU
        # per event against 134 for the default, 95.7% of ideal against 92.8%; with an extension
        # that sends a batch of frames in one write (app/uvicorn_batched_websocket.py). It
        # subclasses uvicorn internals: if they moved, the stock protocol, and frames are sent
        # one by one.
        ws=BatchingWebSocketProtocol or "websockets-sansio",
        # Browsers ask for permessage-deflate; each event is a small frame of its own, so
        # compressing them costs CPU per event for little gain. SSE is never compressed.
        ws_per_message_deflate=False,
        # websockets reads a frame's length first and closes with 1009 (message too big) when
        # the message would pass this: it is refused before it is buffered. At uvicorn's default
        # (16 MiB) a message was read in whole before MAX_WS_FRAME_BYTES was checked.
        ws_max_size=settings.max_ws_frame_bytes,
        # Open streams would hold shutdown forever; runs end as "interrupted" well before this.
        timeout_graceful_shutdown=10,
    )


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.logs import uvicorn_log_config
    from app.startup import check_database, check_port

    os.environ.setdefault("PUBLIC_URL", f"http://{args.host}:{args.port}")
    settings = load_settings()  # fail here, naming the variable, before uvicorn starts
    if args.workers > 1 and not settings.redis_url and not settings.database.startswith("postgres"):
        # Each worker runs its own replies: a cancel or resume landing on another worker
        # needs the broker, which needs PostgreSQL or Redis.
        raise SettingsError("--workers > 1 needs DATABASE_URL=postgresql://… or REDIS_URL")
    check_database(settings)
    check_port(args.host, args.port)
    with metrics_directory(args.workers):
        uvicorn.run(
            "app.cli:serving_app", factory=True, host=args.host, port=args.port, workers=args.workers,
            log_level=settings.log_level.lower(), log_config=uvicorn_log_config(settings.log_format),
            # With --workers, uvicorn kills a worker that has not answered its supervisor's ping
            # within this (5 s by default): on a busy machine importing the stack alone took
            # longer, and workers were killed and restarted in a loop without ever serving.
            timeout_worker_healthcheck=30,
            **uvicorn_options(settings),
        )
    return 0


@contextlib.contextmanager
def metrics_directory(workers: int) -> Iterator[None]:
    """Workers share their metrics through files (prometheus_client's multi-process mode); the
    variable must be set before a worker imports prometheus_client, and the directory start
    empty: values of an earlier run would be added to this one's."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        os.makedirs(given, exist_ok=True)
        for stale in Path(given).glob("*.db"):
            stale.unlink()
        yield
    elif workers > 1:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="chat-server-metrics-") as directory:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
            try:
                yield
            finally:
                del os.environ["PROMETHEUS_MULTIPROC_DIR"]
    else:
        yield


def serving_app() -> Litestar:
    """The app of a ``serve`` process (each worker calls this), garbage collector tuned."""
    from app.gc_tuning import tune_gc
    from app.main import create_app

    tune_gc()
    return create_app()


def _migrate(args: argparse.Namespace) -> int:
    import asyncio

    from app.startup import check_database
    from domain.database import close_database, open_database

    settings = load_settings()
    check_database(settings)

    async def run() -> None:
        await close_database(await open_database(settings.database))

    asyncio.run(run())
    print("database is up to date")
    return 0


def _token(args: argparse.Namespace) -> int:
    from app.tokens import issue, signing_secret
    from domain.errors import AuthError

    settings = load_settings()
    try:
        # The server's own rules: its secret, and its issuer and audience when set.
        print(issue(signing_secret(settings), args.user, args.ttl, issuer=settings.jwt_issuer,
                    audience=settings.jwt_audience))
    except AuthError as exc:
        print(f"chat-server: {exc.message}", file=sys.stderr)
        return 2
    return 0


def _chat(args: argparse.Namespace) -> int:
    from app.terminal_client import main as chat_main

    return chat_main(args.url, args.user, args.transport, args.token)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="chat-server", description="A streaming Todo chat server.")
    commands = root.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(handler=_serve)

    migrate = commands.add_parser("migrate", help="apply database migrations and exit")
    migrate.set_defaults(handler=_migrate)

    token = commands.add_parser("token", help="print a JWT for USER signed with the server's secret")
    token.add_argument("user")
    token.add_argument("--ttl", type=int, default=7 * 24 * 3600, help="lifetime in seconds (default: 7 days)")
    token.set_defaults(handler=_token)

    chat = commands.add_parser("chat", help="talk to a running server from the terminal")
    chat.add_argument("--url", help="the server (default: PUBLIC_URL, http://127.0.0.1:8000)")
    chat.add_argument("--user", help="the user to talk as (default: the token's user, else demo)")
    chat.add_argument("--transport", choices=["sse", "ws"], default="sse", help="default: sse")
    chat.add_argument(
        "--token", help="a JWT (default: CHAT_TOKEN, else one signed with the server's JWT_SECRET or dev secret)"
    )
    chat.set_defaults(handler=_chat)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except SettingsError as exc:
        print(f"chat-server: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
