"""The run manager: start a run, subscribe to it, cancel it, close; and its background loops.

A run lives apart from the connection that started it. Its events go to the store (the group
commit, ``_commit_forever``) and, once stored, to an in-memory log readers follow live; a
reader that reconnects, or comes after a restart, resumes from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import msgspec
from agents import Agent
from piccolo.engine.base import Engine

from domain import conversations, events, feed, tasks
from domain.approvals import Decision, check_decision
from domain.conversations import parse_id
from domain.errors import (
    AlreadyStarted, DatabaseUnavailable, LimitExceeded, NotFound, RunActive, RunFinished, ShuttingDown,
)
from domain.limits import MAX_CLIENT_ID_CHARS, Limits, check_text
from domain.notices import Broker, BrokerUnavailable, Notices
from domain.runs.execution import ActiveRun, RunReply, Transcript
from domain.runs.observer import NO_OBSERVER, RunObserver, Transport
from domain.runs.reading import OnLeave, Subscription, stored_batches
from domain.runs.store import AlreadySent, Continuation, NewRun, RunRecord, RunStore
from domain.runs.tracing import NO_TRACER, RunTracer
from domain.tasks import TaskView
from domain.tools import TodoContext

logger = logging.getLogger(__name__)


class RunSettings(msgspec.Struct, frozen=True):
    lease_s: float = 15.0
    remote_poll_s: float = 0.1  # how often a follower of a run on another instance reads the store
    notice_poll_s: float = 2.0  # the same with a broker: its notices wake followers, this is a safety net
    # How often an instance reads the Stop requests stored for its runs while no broker tells it
    # of them (none configured, or away); with one listening, every notice_poll_s (a safety net).
    cancel_poll_s: float = 1.0
    shutdown_grace_s: float = 5.0
    ping_interval_s: float = 15.0
    tracing: bool = False


class RunManager:
    def __init__(
        self,
        db: Engine,
        store: RunStore,
        agent: Agent[TodoContext],
        limits: Limits = Limits(),
        settings: RunSettings = RunSettings(),
        broker: Broker | None = None,
        observer: RunObserver = NO_OBSERVER,
        tracer: RunTracer = NO_TRACER,
    ):
        self.db = db  # the tools' database
        self.store = store
        self.agent = agent
        self.limits = limits
        self.settings = settings
        self.broker = broker
        self.observer = observer  # monitoring (domain/runs/observer.py); runs and transports report to it
        self.tracer = tracer  # traces of runs (domain/runs/tracing.py); off unless the app sets one
        self._active: dict[str, ActiveRun] = {}
        self._background: list[asyncio.Task[None]] = []
        self._unsaved = asyncio.Event()  # some active run has events the store has not
        self._unsaved_runs: dict[str, ActiveRun] = {}  # which: a commit reads those, not every run
        self._save_lock = asyncio.Lock()  # one writer of run events at a time: the order holds
        self._subscriptions: dict[Subscription, str] = {}  # open ones, and whose
        self._followers: dict[str, int] = {}  # user -> open subscriptions
        self._closed: asyncio.Future[None] | None = None
        self._admitting = 0  # starts and decisions the database is still admitting
        self.feed = feed.Feed(max_readers_per_user=limits.followers_per_user)
        self.notices = Notices(broker, self.feed)
        self.feed.relay = self.notices.tell

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        await self.store.begin_serving(lambda: self._sweep(lease_s=0))
        await self._sweep()
        self._background = [
            asyncio.create_task(self._commit_forever(), name="run-event-commits"),
            asyncio.create_task(self._keep_leases_forever(), name="run-leases"),
            asyncio.create_task(self._obey_stored_cancels_forever(), name="run-stored-cancels"),
        ]
        if self.broker is not None:
            self._background += [
                asyncio.create_task(self._obey_cancels_forever(), name="run-cancels"),
                asyncio.create_task(self.notices.publish_forever(), name="notices-out"),
                asyncio.create_task(self.notices.hear_forever(), name="notices-in"),
            ]

    async def close(self) -> None:
        """End every active run as ``interrupted`` (text saved), then stop. Idempotent: the
        shutdown signal and the lifespan both call it."""
        if self._closed is None:
            self._closed = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closed)

    async def _close(self) -> None:
        self.feed.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_grace_s
        # A run's task ends once its outcome is stored; its readers end once they sent its
        # done: only then may the server close their connections. A start the database was
        # still admitting when closing began launches its run stopped (``_launch``): it is
        # waited for too, or it would stay ``running`` in the database.
        while loop.time() < deadline:
            for run in list(self._active.values()):
                run.stop("interrupted")
            if running := [run.task for run in self._active.values() if not run.task.done()]:
                await asyncio.wait(running, timeout=deadline - loop.time())
            elif self._admitting:
                await asyncio.sleep(0.01)
            else:
                break
        while any(s.local for s in self._subscriptions) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.store.end_serving()

    # -- commands ---------------------------------------------------------------------------

    async def start(
        self, user_id: str, message: str, conversation_id: str | None = None, *, again: str | None = None,
        client_message_id: str | None = None, client_conversation_id: str | None = None,
        transport: Transport = "other",
    ) -> ActiveRun:
        """Start a reply to ``message``, or with ``again`` (a user message id) answer that
        earlier message anew, dropping what followed it; ``again`` with a ``message`` first
        replaces that earlier message's text (an edit).

        A send that carries a ``client_message_id`` the user sent before is a retry: it gets
        the run that id started, when that runs here, or ``AlreadyStarted`` naming it."""
        asked_at = time.perf_counter()  # monitoring: the user's wait for the first event begins
        if again is None or message:
            self.limits.check_message(message)
        if client_message_id is not None:
            check_text(client_message_id, "client_message_id", "The client message id", MAX_CLIENT_ID_CHARS)
        if client_conversation_id is not None:
            check_text(client_conversation_id, "id", "The chat id", MAX_CLIENT_ID_CHARS)
        self._check_followers(user_id)
        if self._closed is not None:
            raise ShuttingDown("The server is shutting down; try again in a moment.")
        if conversation_id is not None:
            busy = next((r for r in self._active.values() if r.conversation_id == conversation_id), None)
            if busy is not None and busy.user_id == user_id:
                raise RunActive("A reply is still being written in this conversation; wait for it or cancel it.")
        begin = asyncio.ensure_future(self.store.begin_run(
            user_id, message, conversation_id, self.limits, self.agent.name, again=again,
            client_message_id=client_message_id, client_conversation_id=client_conversation_id,
        ))
        self._admitting += 1
        try:
            new = await asyncio.shield(begin)
        except AlreadySent as sent:
            if (run := self._active.get(sent.record.id)) is not None:
                return run
            raise AlreadyStarted(sent.record.id, sent.record.conversation_id) from None
        except asyncio.CancelledError:
            # The caller left mid-request (a client hung up): that is Stop. Once the run is
            # written, launch it stopped, so it still ends with done and leaves no "running" row.
            self._admitting += 1

            def launch_stopped(done: asyncio.Future[NewRun]) -> None:
                self._admitting -= 1
                if not done.cancelled() and done.exception() is None:
                    self._launch(done.result(), user_id, transport=transport, asked_at=asked_at).stop("cancelled")

            begin.add_done_callback(launch_stopped)
            raise
        finally:
            self._admitting -= 1
        # No await from here to the launch: closing cannot slip in between.
        return self._launch(new, user_id, message if new.created_conversation else None, transport, asked_at)

    def _launch(self, new: NewRun, user_id: str, first_message: str | None = None, transport: Transport = "other",
                asked_at: float | None = None, resume: Continuation | None = None) -> ActiveRun:
        run = ActiveRun(new, user_id, self._has_unsaved, self.observer, transport, asked_at, self.tracer)
        self._active[run.id] = run
        if new.created_conversation:
            self.feed.tell(user_id, feed.ConversationCreated(conversation_id=new.conversation_id, title=new.title))
        self.feed.tell(user_id, feed.RunStarted(run_id=run.id, conversation_id=new.conversation_id))
        # A conversation created by this start holds just that message: no need to read it back.
        history = None if first_message is None else [{"role": "user", "content": first_message}]
        run.launch(self._execute(run, history, resume), name=f"run-{run.id}")
        if self._closed is not None:  # admitted while the server began to close
            run.stop("interrupted")
        return run

    async def decide(self, user_id: str, run_id: str, decision: Decision,
                     transport: Transport = "other") -> ActiveRun | list[str]:
        """The user's decision on a call their run waits for: the continuation once every call
        of the run is decided, else the call ids still waiting."""
        check_decision(decision)
        self._check_followers(user_id)
        if self._closed is not None:
            raise ShuttingDown("The server is shutting down; try again in a moment.")
        self._admitting += 1
        try:
            decided = await self.store.decide(user_id, run_id, decision, self.limits, self.agent.name)
        finally:
            self._admitting -= 1
        if decided.continuation is None:
            return decided.waiting_for
        return self._launch(decided.continuation.new, user_id, transport=transport, resume=decided.continuation)

    async def cancel(self, user_id: str, run_id: str) -> None:
        run = self._active.get(run_id)
        if run is not None and run.user_id == user_id:
            if run.finished.is_set():
                raise RunFinished("This run has already finished.")
            run.stop("cancelled")
            return
        # It runs on another instance (or is being launched here). Stored on its row first: the
        # instance running it reads that too, so the Stop holds even when the broker is away or
        # loses the message; the broker only makes it arrive at once.
        if not await self.store.request_cancel(user_id, run_id):
            await self._owned(user_id, run_id)  # NotFound for a run that is not the user's
            raise RunFinished("This run has already finished.")
        if self.broker is not None:
            try:
                await self.broker.request_cancel(run_id)
            except BrokerUnavailable as error:
                logger.warning("the cancel of run %s goes through the database only: %s", run_id, error)

    def subscribe(self, run: ActiveRun, after: int = 0, *, on_leave: OnLeave, idle: bool = True) -> Subscription:
        """Follow a run started here (by this caller) from ``after`` on; ``start`` counted it
        against the user's followers already."""
        stop = (lambda: run.stop("cancelled")) if on_leave == "stop" else None
        idle_s = self.settings.ping_interval_s if idle else None
        return self._count(run.user_id, Subscription(run.id, after, run.log.read(after, idle_s), stop,
                                                     self._release, local=True))

    async def follow(self, user_id: str, run_id: str, after: int = 0, *, idle: bool = True) -> Subscription:
        """Follow any run of the user's, live or finished, here or elsewhere; leaving never
        stops it. ``NotFound`` for another user's run."""
        after = max(after, 0)
        self._check_followers(user_id)
        run = self._active.get(run_id)
        if run is not None and run.user_id == user_id:
            return self.subscribe(run, after, on_leave="continue", idle=idle)
        record = await self._owned(user_id, run_id)
        # Running elsewhere: follow it through the store until its done arrives, woken by
        # that instance's notices.
        poll_s = None
        if record.status == "running":
            poll_s = self.settings.remote_poll_s if self.broker is None else self.settings.notice_poll_s
        idle_s = self.settings.ping_interval_s if idle else None
        batches = stored_batches(self.store, run_id, after, idle_s, poll_s, self.notices)
        return self._count(user_id, Subscription(run_id, after, batches, released=self._release))

    def _check_followers(self, user_id: str) -> None:
        """Each subscription holds a connection and a reader: a user has a bounded number."""
        if self._followers.get(user_id, 0) >= self.limits.followers_per_user:
            raise LimitExceeded(
                f"You follow {self.limits.followers_per_user} replies at once already; close one first.",
                retry_after_s=5,
            )

    def _count(self, user_id: str, subscription: Subscription) -> Subscription:
        self._subscriptions[subscription] = user_id
        self._followers[user_id] = self._followers.get(user_id, 0) + 1
        return subscription

    def _release(self, subscription: Subscription) -> None:
        user_id = self._subscriptions.pop(subscription, None)
        if user_id is not None:
            if (left := self._followers[user_id] - 1) > 0:
                self._followers[user_id] = left
            else:
                del self._followers[user_id]

    async def conversation_of_client(self, user_id: str, client_id: str) -> str | None:
        """The user's conversation a client knows by its own id (an AI SDK chat id)."""
        check_text(client_id, "id", "The chat id", MAX_CLIENT_ID_CHARS)
        return await self.store.conversation_of_client(user_id, client_id)

    async def running_in(self, user_id: str, conversation_id: str) -> str | None:
        """The id of the user's reply running in the conversation, here or elsewhere."""
        for run in self._active.values():
            if run.conversation_id == conversation_id and run.user_id == user_id and not run.finished.is_set():
                return run.id
        record = await self.store.running_run(user_id, conversation_id)
        return record.id if record else None

    async def delete_conversation(self, user_id: str, conversation_id: str) -> bool:
        """False: the user has no such conversation; ``RunActive`` while a reply runs in it."""
        if not await self.store.delete_conversation(user_id, conversation_id):
            return False
        self.feed.tell(user_id, feed.ConversationDeleted(conversation_id=str(parse_id(conversation_id))))
        return True

    async def rename_conversation(self, user_id: str, conversation_id: str, title: str) -> bool:
        """False: the user has no such conversation; ``InvalidInput`` for a title it cannot have."""
        if not await conversations.rename_conversation(self.db, user_id, conversation_id, title):
            return False
        self.feed.tell(user_id, feed.ConversationRenamed(conversation_id=str(parse_id(conversation_id)), title=title))
        return True

    # Task changes made outside a reply (the REST routes, the page's task panel): told on the
    # feed like the tools' changes (domain/tools.py), so the user's other tabs follow.
    async def change_task(self, user_id: str, task_id: int, *, title: str | None = None,
                          description: str | None = None, completed: bool | None = None) -> TaskView | None:
        """None: the user has no such task; ``InvalidInput`` for a title it cannot have."""
        task = await tasks.update_task(self.db, user_id, task_id, title=title, description=description,
                                       completed=completed)
        if task is not None:
            self.feed.tell(user_id, feed.TaskChanged(task_id=task.id, title=task.title, completed=task.completed))
        return task

    async def remove_task(self, user_id: str, task_id: int) -> TaskView | None:
        """None: the user has no such task."""
        task = await tasks.delete_task(self.db, user_id, task_id)
        if task is not None:
            self.feed.tell(user_id, feed.TaskRemoved(task_id=task.id))
        return task

    async def reply(self, run: ActiveRun) -> RunReply:
        """The whole reply, once the run has finished."""
        await run.finished.wait()
        return run.reply()

    async def stored_reply(self, user_id: str, run_id: str) -> RunReply:
        """The whole reply of any run of the user's, read from its events once it ends."""
        subscription = await self.follow(user_id, run_id, idle=False)
        try:
            payloads = [payload async for batch in subscription for payload in batch]
        finally:
            await subscription.aclose()
        return RunReply.of(map(events.decode, payloads))

    async def _owned(self, user_id: str, run_id: str) -> RunRecord:
        record = await self.store.get_run(user_id, run_id)
        if record is None:
            raise NotFound("No such run.")
        return record

    # -- execution --------------------------------------------------------------------------

    async def _execute(self, run: ActiveRun, history: list[dict[str, Any]] | None,
                       resume: Continuation | None = None) -> None:
        context = TodoContext(user_id=run.user_id, db=self.db, tell=partial(self.feed.tell, run.user_id))
        done = await run.execute(self.agent, context, self.limits, self.settings.tracing, history, resume)
        # Stored before it is shown: a client that sees ``done`` and reloads finds the whole run,
        # and the outcome it was told is the one stored. A second cancel (shutdown) must not
        # lose the outcome, so saving goes on regardless.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(asyncio.ensure_future(self._finish(run, done)))

    async def _finish(self, run: ActiveRun, done: bytes) -> None:
        outcome = run.outcome()
        async with self._save_lock:
            first, unsaved = run.take_unsaved()
            last = [*unsaved, done]
            await self._until_stored(f"the outcome of run {run.id}",
                                     lambda retry: self.store.finish_run(outcome, (run.id, first, last)))
        self._active.pop(run.id, None)
        run.close(last)
        self.notices.committed(run.id, first + len(last) - 1)
        self.feed.tell(run.user_id, feed.RunEnded(run_id=run.id, conversation_id=run.conversation_id,
                                                  status=outcome.status))

    async def _until_stored(self, what: str, save: Callable[[bool], Awaitable[None]]) -> None:
        """Retried with backoff until it lands: what is not stored is never shown. A database
        that refuses, resets or stops answering (each wait has its deadline) is one that is
        away; ``save`` learns whether it is a retry, as an attempt may have landed unseen."""
        pause, retry = 0.05, False
        while True:
            try:
                began = time.perf_counter()
                await save(retry)
                self.observer.committed(time.perf_counter() - began)
                return
            except DatabaseUnavailable:
                logger.warning("could not store %s: the database is unavailable; retrying in %.2f s", what, pause)
            except Exception:
                logger.exception("could not store %s; retrying in %.2f s", what, pause)
            await asyncio.sleep(pause)
            pause, retry = min(pause * 2, 2.0), True

    # -- background loops -------------------------------------------------------------------

    async def _sweep(self, lease_s: float | None = None) -> None:
        """Close runs a dead instance left ``running``: their partial text saved from the
        stored events, and the ``done`` a resuming client waits for appended."""
        closed = 0
        for record in await self.store.stale_runs(self.settings.lease_s if lease_s is None else lease_s):
            if record.id in self._active:
                continue  # ours: its lease lapsed while the database was away
            # Claim it first: several instances may sweep the same dead instance's runs.
            if not await self.store.claim_run(record.id, "interrupted"):
                continue
            payloads = await self.store.event_payloads(record.id)
            transcript = Transcript.of(map(events.decode, payloads))
            done = events.Done(run_id=record.id, seq=len(payloads) + 1, status="interrupted")
            await self.store.finish_run(
                transcript.outcome(record, record.id, record.user_id, "interrupted"),
                (record.id, len(payloads) + 1, [events.encode(done)]),
            )
            self.notices.committed(record.id, done.seq)
            self.feed.tell(record.user_id, feed.RunEnded(run_id=record.id, conversation_id=record.conversation_id,
                                                         status="interrupted"))
            closed += 1
        if closed:
            logger.warning("marked %d run(s) of a stopped server instance as interrupted", closed)

    async def _keep_leases_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            try:
                await self.store.renew_leases(list(self._active))
                await self._sweep()
            except DatabaseUnavailable:
                logger.warning("could not renew run leases: the database is unavailable")
            except Exception:
                logger.exception("could not renew run leases")

    async def _obey_cancels_forever(self) -> None:
        assert self.broker is not None
        while True:
            try:
                async for run_id in self.broker.cancel_requests():
                    if (run := self._active.get(run_id)) is not None:
                        run.stop("cancelled")
            except Exception:
                logger.exception("the cancel subscription failed; subscribing again")
                await asyncio.sleep(1)

    async def _obey_stored_cancels_forever(self) -> None:
        """Stop requests stored on a run's row (``cancel``) for the runs executing here: read
        every ``cancel_poll_s`` while no broker listens, else every ``notice_poll_s``, in case
        its message was lost (a broker that was reconnecting, a message at most once)."""
        loop = asyncio.get_running_loop()
        read_at, failing = loop.time(), False
        while True:
            await asyncio.sleep(self.settings.cancel_poll_s)
            listening = self.broker is not None and self.broker.listening
            every = self.settings.notice_poll_s if listening else self.settings.cancel_poll_s
            # (Half a tick of slack: a sleep may end a hair early.)
            if not self._active or loop.time() - read_at < every - self.settings.cancel_poll_s / 2:
                continue
            read_at = loop.time()
            try:
                requested = await self.store.cancels_requested()
            except Exception as error:  # the database is away: the next round asks again
                if not failing:  # once per outage, not per round
                    logger.warning("could not read the stop requests of runs: %r", error)
                failing = True
                continue
            failing = False
            for run_id in requested:
                if (run := self._active.get(run_id)) is not None:
                    run.stop("cancelled")

    def _has_unsaved(self, run: ActiveRun) -> None:
        self._unsaved_runs[run.id] = run
        self._unsaved.set()

    async def _commit_forever(self) -> None:
        """The group commit: every run's pending events in one transaction, as soon as the
        previous commit ends, then shown to readers. Under load one commit carries many
        runs' events; idle, an event costs one small transaction."""
        while True:
            await self._unsaved.wait()
            self._unsaved.clear()
            async with self._save_lock:
                runs, self._unsaved_runs = self._unsaved_runs, {}
                taken = [(run, *run.take_unsaved()) for run in runs.values()]
                batches = [(run.id, first, unsaved) for run, first, unsaved in taken if unsaved]
                if not batches:
                    continue
                await self._until_stored(f"the events of {len(batches)} run(s)",
                                         lambda retry: self.store.save_events(batches, retry=retry))
                for run, first, unsaved in taken:
                    if unsaved:
                        run.log.extend(unsaved)
                        self.notices.committed(run.id, first + len(unsaved) - 1)
