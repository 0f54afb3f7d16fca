"""Tell the run manager about SIGTERM/SIGINT before uvicorn hears of it.

uvicorn, once told, closes every WebSocket at once (1012) and then waits for open streams
before it runs the lifespan shutdown; our streams only end when their runs do. So the signal
goes to the run manager first, and to uvicorn once the runs have ended and their readers have
sent every ``done`` (the manager bounds that wait). A second signal goes through at once.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Awaitable, Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def on_shutdown_signal(callback: Callable[[], Awaitable[object]]) -> Callable[[], None]:
    """Chain ``callback`` (awaited on this loop) in front of the current signal handlers.

    Returns a function that restores them. Outside the main thread (tests that run uvicorn
    in a thread) signals cannot be handled, and this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}

    closing: list[asyncio.Future[object]] = []

    def handler(signum: int, frame: object) -> None:
        chained = previous[signal.Signals(signum)]

        def pass_on(_: object = None) -> None:
            if callable(chained):
                chained(signum, frame)

        if closing:  # asked again: do not wait any longer
            pass_on()
            return

        def begin() -> None:
            closing.append(asyncio.ensure_future(callback()))
            closing[0].add_done_callback(pass_on)

        loop.call_soon_threadsafe(begin)

    for sig in SIGNALS:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, chained in previous.items():
            signal.signal(sig, chained)

    return restore
