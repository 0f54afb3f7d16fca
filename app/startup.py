"""What ``serve`` checks before it starts uvicorn, so a server that cannot run says why in one
line naming the variable or flag to fix (exit 2), before anything claims to be ready.

Each check also happens again for real later (the lifespan opens the database, uvicorn binds
the port); these only turn the likely mistakes into a sentence instead of a traceback.
"""

from __future__ import annotations

import asyncio
import errno
import socket

from app.settings import Settings, SettingsError
from domain.database import DatabaseUnreachable, DatabaseUrlError, probe


class StartupError(SettingsError):
    """A reason the server cannot start; its text is the one line printed."""


def check_database(settings: Settings) -> None:
    variable = "DATABASE_URL" if settings.database_url else "DATA_DIR"
    try:
        asyncio.run(probe(settings.database))
    except DatabaseUrlError as exc:
        raise StartupError(f"{variable} is not a database URL: {exc}") from None
    except DatabaseUnreachable as exc:
        raise StartupError(f"{exc} (check {variable})") from None


def check_port(host: str, port: int) -> None:
    """Bind the address uvicorn will bind, the way it binds it, and let it go."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on host {host!r}: {exc.strerror} (check --host)") from None
    with socket.socket(family, kind, proto) as probe_socket:
        probe_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe_socket.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(f"port {port} on {host} is already in use (choose another with --port)") from None
            if exc.errno == errno.EACCES:
                raise StartupError(f"not allowed to listen on port {port} (use --port 1024 or above)") from None
            raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror} (check --host and --port)") from None
