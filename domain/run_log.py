"""The in-memory log of one active run.

Every event is encoded once; each reader keeps its own cursor into the shared list, so a
slow reader lags but loses nothing, and readers cost no queue each.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator


class RunLog:
    def __init__(self) -> None:
        self._events: list[bytes] = []
        self._closed = False
        self._changed: asyncio.Event | None = None  # made by a reader that waits

    def __len__(self) -> int:
        return len(self._events)

    def append(self, event: bytes, *, last: bool = False) -> None:
        if self._closed:
            raise RuntimeError("append to a closed run log")
        self._events.append(event)
        self._closed = last
        # Wake the readers waiting now; the next one to wait makes a new event. A model that
        # streams flat out appends many events between two waits: no event object for each.
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def since(self, start: int) -> list[bytes]:
        return self._events[start:]

    async def read(self, after: int = 0, idle_s: float | None = None) -> AsyncIterator[list[bytes]]:
        """Batches of events with seq > ``after`` until the log closes.

        Whatever piled up while the reader was busy comes as one batch; an empty batch means
        nothing happened for ``idle_s`` seconds (time for a keep-alive).
        """
        cursor = max(after, 0)
        while True:
            if cursor < len(self._events):
                batch = self._events[cursor:]
                cursor += len(batch)
                yield batch
                continue
            if self._closed:
                return
            if self._changed is None:
                self._changed = asyncio.Event()
            changed = self._changed
            try:
                # Not wait_for: on Python 3.11 it wraps the wait in a new task, once per event
                # per reader, which cost more than the rest of the read.
                async with asyncio.timeout(idle_s):
                    await changed.wait()
            except TimeoutError:
                yield []
