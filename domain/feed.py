"""A user's feed: their conversations and tasks changing, as it happens, on every instance.

Events are told here once the change is committed (a run started or finished, a conversation
created, renamed or deleted, a task added, changed or removed), get an id, are encoded once,
and go to the user's open feeds on this instance and, through the broker, on the others.

Resuming (``Last-Event-ID``): each instance keeps, per user, the last ``WINDOW_EVENTS``
events of the last ``WINDOW_S`` seconds, its own and those it heard from the others, in the
order it learnt them. Why in memory and not a table: the feed is a hint to refresh views, not
a record (what it announces is in the database already), so a client that falls out of the
window loses nothing by reloading; a table would cost a write and a clean-up on every change
for a rarely used replay. An id this instance does not hold (too old, from before its start,
another user's) gets a ``reload`` event: the client reloads its lists, then reads on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
from collections import deque
from collections.abc import Callable

import msgspec

from domain.errors import LimitExceeded, ShuttingDown
from domain.events import DoneStatus

WINDOW_EVENTS = 256  # per user and instance
WINDOW_S = 600.0
MAX_ID_CHARS = 64  # ids are "<instance>.<n>"; a longer one names nothing
MAX_PENDING = WINDOW_EVENTS  # a feed that reads nothing this far behind is told to reload instead


class _FeedEvent(msgspec.Struct, tag_field="type", kw_only=True, frozen=True, omit_defaults=True):
    id: str = ""  # set when told: what ``Last-Event-ID`` names


class RunStarted(_FeedEvent, tag="run_started"):
    """A reply is being written: follow it at ``GET /runs/{run_id}/events``."""

    run_id: str
    conversation_id: str


class RunEnded(_FeedEvent, tag="run_finished"):
    run_id: str
    conversation_id: str
    status: DoneStatus


class ConversationCreated(_FeedEvent, tag="conversation_created"):
    conversation_id: str
    title: str | None


class ConversationRenamed(_FeedEvent, tag="conversation_renamed"):
    conversation_id: str
    title: str


class ConversationDeleted(_FeedEvent, tag="conversation_deleted"):
    conversation_id: str


class TaskAdded(_FeedEvent, tag="task_added"):
    task_id: int
    title: str
    completed: bool


class TaskChanged(_FeedEvent, tag="task_changed"):
    task_id: int
    title: str
    completed: bool


class TaskRemoved(_FeedEvent, tag="task_removed"):
    task_id: int


class Reload(_FeedEvent, tag="reload"):
    """The events since the given id are not all known here: reload, then read on."""


FeedEvent = (RunStarted | RunEnded | ConversationCreated | ConversationRenamed | ConversationDeleted | TaskAdded
             | TaskChanged | TaskRemoved | Reload)

_encode = msgspec.json.Encoder().encode

Entry = tuple[str, bytes]
"""(event id, the encoded event)."""


class FeedNotice(msgspec.Struct, tag="feed", array_like=True, frozen=True):
    """An event as it goes to the other instances."""

    user_id: str
    id: str
    event: msgspec.Raw


class FeedReader:
    """One open feed: batches of entries; an empty batch means nothing for ``idle_s``."""

    def __init__(self, feed: Feed, user_id: str, pending: list[Entry], idle_s: float | None):
        self.user_id = user_id
        self._feed = feed
        self._pending = pending
        self._idle_s = idle_s
        self._woken: asyncio.Future[None] | None = None
        self._closed = False

    def __aiter__(self) -> FeedReader:
        return self

    def deliver(self, entry: Entry) -> None:
        if len(self._pending) >= MAX_PENDING:
            self._pending = [self._feed.reload_entry(self.user_id)]
        else:
            self._pending.append(entry)
        self._wake()

    def _wake(self) -> None:
        if self._woken is not None and not self._woken.done():
            self._woken.set_result(None)

    async def __anext__(self) -> list[Entry]:
        await asyncio.sleep(0)  # a replay that never awaits spins after a disconnect
        if not self._pending and not self._closed:
            self._woken = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._idle_s):
                    await self._woken
        if self._closed:
            raise StopAsyncIteration
        batch, self._pending = self._pending, []
        return batch

    def end(self) -> None:
        """No more events (the server is shutting down)."""
        self._closed = True
        self._wake()

    async def aclose(self) -> None:
        self.end()
        self._feed.release(self)


class Feed:
    def __init__(self, origin: str | None = None, *, max_readers_per_user: int = 32,
                 relay: Callable[[FeedNotice], None] | None = None):
        self.origin = origin or secrets.token_hex(4)  # this instance, in the ids it gives
        self.relay = relay  # to the other instances
        self._max_readers = max_readers_per_user
        self._numbers = itertools.count(1)
        self._rings: dict[str, deque[tuple[float, str, bytes]]] = {}  # user -> (learnt at, id, event)
        self._readers: dict[str, set[FeedReader]] = {}
        self._pruned = time.monotonic()
        self._closed = False

    def tell(self, user_id: str, event: FeedEvent) -> None:
        """``event`` happened (and is committed): to the user's feeds here and elsewhere."""
        entry_id = f"{self.origin}.{next(self._numbers)}"
        data = _encode(msgspec.structs.replace(event, id=entry_id))
        self._learn(user_id, entry_id, data)
        if self.relay is not None:
            self.relay(FeedNotice(user_id, entry_id, msgspec.Raw(data)))

    def heard(self, notice: FeedNotice) -> None:
        """An event another instance told."""
        self._learn(notice.user_id, notice.id, bytes(notice.event))

    def _learn(self, user_id: str, entry_id: str, data: bytes) -> None:
        now = time.monotonic()
        ring = self._rings.setdefault(user_id, deque(maxlen=WINDOW_EVENTS))
        ring.append((now, entry_id, data))
        if now - self._pruned > 60:
            self._prune(now)
        for reader in self._readers.get(user_id, ()):
            reader.deliver((entry_id, data))

    def _prune(self, now: float) -> None:
        """Forget what is older than the window (users who went quiet included)."""
        self._pruned = now
        for user_id in list(self._rings):
            ring = self._rings[user_id]
            while ring and now - ring[0][0] > WINDOW_S:
                ring.popleft()
            if not ring:
                del self._rings[user_id]

    def subscribe(self, user_id: str, last_event_id: str | None = None, idle_s: float | None = None) -> FeedReader:
        """The user's events from now on; with ``last_event_id``, those after it first, or a
        ``reload`` when it is outside the window. ``LimitExceeded`` past the per-user cap."""
        if self._closed:
            raise ShuttingDown("The server is shutting down; try again in a moment.")
        readers = self._readers.setdefault(user_id, set())
        if len(readers) >= self._max_readers:
            raise LimitExceeded(f"You have {self._max_readers} feeds open already; close one first.",
                                retry_after_s=5)
        pending: list[Entry] = []
        if last_event_id is not None:
            pending = self._since(user_id, last_event_id)
        reader = FeedReader(self, user_id, pending, idle_s)
        readers.add(reader)
        return reader

    def _since(self, user_id: str, last_event_id: str) -> list[Entry]:
        now = time.monotonic()
        ring = [(entry_id, data) for at, entry_id, data in self._rings.get(user_id, ()) if now - at <= WINDOW_S]
        for n in range(len(ring) - 1, -1, -1):
            if ring[n][0] == last_event_id:
                return ring[n + 1:]
        return [self.reload_entry(user_id)]

    def reload_entry(self, user_id: str) -> Entry:
        """A ``reload`` with the id of the newest event known here, so that a client reloading
        then resuming from it misses nothing; none known: no id (a new feed starts from now)."""
        ring = self._rings.get(user_id)
        newest = ring[-1][1] if ring else ""
        return newest, _encode(Reload(id=newest))

    def release(self, reader: FeedReader) -> None:
        readers = self._readers.get(reader.user_id)
        if readers is not None:
            readers.discard(reader)
            if not readers:
                del self._readers[reader.user_id]

    def close(self) -> None:
        self._closed = True
        for readers in list(self._readers.values()):
            for reader in list(readers):
                reader.end()
