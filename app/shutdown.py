"""Tell the run manager about SIGTERM/SIGINT before uvicorn starts its graceful wait.

uvicorn waits for open streams before it runs the lifespan shutdown, and our streams only
end when their runs do: so runs must hear about the signal first, from the signal itself.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def on_shutdown_signal(callback: Callable[[], object]) -> Callable[[], None]:
    """Chain ``callback`` (run on this loop) in front of the current signal handlers.

    Returns a function that restores them. Outside the main thread (tests that run uvicorn
    in a thread) signals cannot be handled, and this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}

    def handler(signum: int, frame: object) -> None:
        loop.call_soon_threadsafe(callback)
        chained = previous[signal.Signals(signum)]
        if callable(chained):
            chained(signum, frame)

    for sig in SIGNALS:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, chained in previous.items():
            signal.signal(sig, chained)

    return restore
