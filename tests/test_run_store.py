"""The run store's contract: one suite, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from domain import events
from domain.conversations import ToolRecord, list_messages
from domain.database import close_database, open_database, run_store
from domain.errors import InvalidInput, LimitExceeded, NotFound, RunActive
from domain.limits import Limits
from domain.runs.store import FinishedRun, RunStore, now
from tests.conftest import count_rows, fetch_rows

LIMITS = Limits()


def with_store(database_url: str, scenario: Callable[[RunStore], Awaitable[object]]) -> object:
    async def run() -> object:
        db = await open_database(database_url)
        try:
            return await scenario(run_store(db))
        finally:
            await close_database(db)

    return asyncio.run(run())


def text_events(run_id: str, first: int, *contents: str) -> list[bytes]:
    return [events.encode(events.Text(run_id=run_id, seq=first + n, content=c)) for n, c in enumerate(contents)]


def finished(new, status="completed", text="", tools=(), user_id="alice") -> FinishedRun:
    return FinishedRun(run_id=new.run_id, user_id=user_id, conversation_id=new.conversation_id, message_id=new.message_id,
                       status=status, text=text, tools=list(tools), input_tokens=3, output_tokens=5)


def test_begin_run_writes_a_conversation_its_message_and_a_running_run(database_url):
    async def scenario(store: RunStore):
        return await store.begin_run("alice", "add   buy milk\n", None, LIMITS, "todo")

    new = with_store(database_url, scenario)
    assert new.created_conversation and new.title == "add buy milk"
    assert new.user_message.content == "add   buy milk\n" and new.user_message.run_id == new.run_id
    assert fetch_rows(database_url, "SELECT user_id, title FROM conversation") == [("alice", "add buy milk")]
    assert fetch_rows(database_url, "SELECT role, content FROM message") == [("user", "add   buy milk\n")]
    assert fetch_rows(database_url, "SELECT user_id, status FROM run") == [("alice", "running")]


def test_a_long_first_message_is_titled_short(database_url):
    new = with_store(database_url, lambda store: store.begin_run("alice", "word " * 40, None, LIMITS, "todo"))
    assert len(new.title) == 60 and new.title.endswith("…")


def test_one_running_run_per_conversation_and_refusals_write_nothing(database_url):
    async def scenario(store: RunStore):
        first = await store.begin_run("alice", "hello", None, LIMITS, "todo")
        with pytest.raises(RunActive):
            await store.begin_run("alice", "again", first.conversation_id, LIMITS, "todo")
        for user, conversation in [("bob", first.conversation_id), ("alice", "nope"),
                                   ("alice", "00000000-0000-0000-0000-000000000000")]:
            with pytest.raises(NotFound):
                await store.begin_run(user, "hi", conversation, LIMITS, "todo")
        return first

    with_store(database_url, scenario)
    assert count_rows(database_url, "message") == 1 and count_rows(database_url, "run") == 1


def test_limits_are_counted_inside_the_write(database_url):
    tight = Limits(active_runs_per_user=2, messages_per_minute=3)

    async def scenario(store: RunStore):
        for _ in range(2):
            await store.begin_run("alice", "hi", None, tight, "todo")
        with pytest.raises(LimitExceeded) as active:
            await store.begin_run("alice", "hi", None, tight, "todo")
        await store.begin_run("bob", "hi", None, tight, "todo")  # another user's count is their own
        return active.value

    refused = with_store(database_url, scenario)
    assert refused.retry_after_s == 2
    assert count_rows(database_url, "run", "user_id = 'alice'") == 2


def test_messages_per_minute_says_when_to_retry(database_url):
    tight = Limits(active_runs_per_user=10, messages_per_minute=2)

    async def scenario(store: RunStore):
        for _ in range(2):
            new = await store.begin_run("alice", "hi", None, tight, "todo")
            await store.finish_run(finished(new), (new.run_id, 2, []))
        with pytest.raises(LimitExceeded) as refused:
            await store.begin_run("alice", "hi", None, tight, "todo")
        return refused.value

    assert 55 <= with_store(database_url, scenario).retry_after_s <= 60


def test_events_are_read_back_from_any_seq_across_rows(database_url):
    async def scenario(store: RunStore):
        new = await store.begin_run("alice", "hi", None, LIMITS, "todo")
        run = new.run_id
        await store.save_events([(run, 2, text_events(run, 2, "a", "b", "c"))])
        await store.save_events([(run, 5, text_events(run, 5, "d", "e")), (run, 7, [])])
        return new, [await store.event_payloads(run, after) for after in (0, 1, 3, 4, 5, 6, 9)]

    new, reads = with_store(database_url, scenario)
    everything = [new.start, *text_events(new.run_id, 2, "a", "b", "c", "d", "e")]
    assert reads == [everything, everything[1:], everything[3:], everything[4:], everything[5:], [], []]


def test_a_run_begins_with_its_start_event_stored(database_url):
    async def scenario(store: RunStore):
        new = await store.begin_run("alice", "hi", None, LIMITS, "todo")
        return new, await store.event_payloads(new.run_id)

    new, stored = with_store(database_url, scenario)
    assert stored == [new.start]
    assert events.decode(new.start) == events.Start(run_id=new.run_id, seq=1, conversation_id=new.conversation_id,
                                                    message_id=new.message_id, agent="todo")


def test_finish_run_stores_the_outcome_messages_and_the_last_events(database_url):
    call = ToolRecord("call-1", "add_task", {"title": "milk"}, {"id": 1})

    async def scenario(store: RunStore):
        new = await store.begin_run("alice", "add milk", None, LIMITS, "todo")
        await store.save_events([(new.run_id, 2, text_events(new.run_id, 2, "Ad"))])
        done = events.encode(events.Done(run_id=new.run_id, seq=4, status="completed"))
        await store.finish_run(finished(new, text="Added", tools=[(now(), call)]),
                               (new.run_id, 3, [*text_events(new.run_id, 3, "ded"), done]))
        return new, await store.event_payloads(new.run_id), await list_messages(new.conversation_id)

    new, stored, messages = with_store(database_url, scenario)
    assert [events.decode(p).seq for p in stored] == [1, 2, 3, 4] and events.is_done(stored[-1])
    assert [(m.role, m.content) for m in messages] == [("user", "add milk"), ("tool", ""), ("assistant", "Added")]
    assert messages[1].tool == call and messages[2].id == new.message_id
    assert fetch_rows(database_url, "SELECT status, input_tokens, output_tokens FROM run") == [("completed", 3, 5)]


def test_a_stopped_run_leaves_a_hidden_note_for_the_model(database_url):
    async def scenario(store: RunStore):
        new = await store.begin_run("alice", "hi", None, LIMITS, "todo")
        await store.finish_run(finished(new, "cancelled", text="Hel"), (new.run_id, 2, []))
        return await list_messages(new.conversation_id, include_hidden=True)

    messages = with_store(database_url, scenario)
    assert [(m.role, m.status) for m in messages] == [("user", "completed"), ("assistant", "cancelled"),
                                                       ("hidden", "completed")]


def test_answering_again_drops_what_followed_the_message(database_url):
    async def scenario(store: RunStore):
        first = await store.begin_run("alice", "hi", None, LIMITS, "todo")
        await store.finish_run(finished(first, text="Hello"), (first.run_id, 2, []))
        again = await store.begin_run("alice", "", first.conversation_id, LIMITS, "todo", again=first.user_message.id)
        left = await list_messages(first.conversation_id)
        await store.finish_run(finished(again), (again.run_id, 2, []))
        with pytest.raises(NotFound):
            await store.begin_run("alice", "", first.conversation_id, LIMITS, "todo", again="nope")
        replies = [m for m in await list_messages(first.conversation_id) if m.role == "assistant"]
        with pytest.raises(InvalidInput):
            await store.begin_run("alice", "", first.conversation_id, LIMITS, "todo", again=replies[0].id)
        return first, again, left

    first, again, left = with_store(database_url, scenario)
    assert again.user_message.id == first.user_message.id and again.user_message.run_id == again.run_id
    assert [(m.role, m.run_id) for m in left] == [("user", again.run_id)]


def test_a_run_is_claimed_once_and_read_only_by_its_user(database_url):
    async def scenario(store: RunStore):
        new = await store.begin_run("alice", "hi", None, LIMITS, "todo")
        claims = [await store.claim_run(new.run_id, "interrupted") for _ in range(2)]
        return new, claims, [await store.get_run(user, run) for user, run in
                             [("alice", new.run_id), ("bob", new.run_id), ("alice", "nope")]]

    new, claims, (mine, theirs, malformed) = with_store(database_url, scenario)
    assert claims == [True, False]
    assert mine.status == "interrupted" and mine.conversation_id == new.conversation_id
    assert theirs is None and malformed is None


def test_a_run_whose_lease_ran_out_is_stale_until_renewed(database_url):
    async def scenario(store: RunStore):
        new = await store.begin_run("alice", "hi", None, LIMITS, "todo")
        fresh = await store.stale_runs(60)
        await asyncio.sleep(0.3)
        stale = await store.stale_runs(0.2)
        await store.renew_leases([new.run_id])
        renewed = await store.stale_runs(0.2)
        return new, fresh, stale, renewed

    new, fresh, stale, renewed = with_store(database_url, scenario)
    assert fresh == [] and [r.id for r in stale] == [new.run_id] and renewed == []


def test_timestamps_keep_their_order_across_engines(database_url):
    """A second message a microsecond later sorts after the first (the model's order)."""
    async def scenario(store: RunStore):
        new = await store.begin_run("alice", "hi", None, LIMITS, "todo")
        await store.finish_run(finished(new, "cancelled", text="x"), (new.run_id, 2, []))
        return await list_messages(new.conversation_id, include_hidden=True)

    messages = with_store(database_url, scenario)
    assert messages[2].created_at - messages[1].created_at == timedelta(microseconds=1)


def test_events_are_read_a_page_of_rows_at_a_time(database_url):
    async def scenario(store: RunStore):
        new = await store.begin_run("alice", "hi", None, LIMITS, "todo")
        for n in range(2, 12, 2):  # five rows of two events after the start's row
            await store.save_events([(new.run_id, n, text_events(new.run_id, n, f"{n}", f"{n + 1}"))])
        return new, await store.event_payloads(new.run_id, 0, rows=2), await store.event_payloads(new.run_id, 4, rows=2)

    new, first_page, from_five = with_store(database_url, scenario)
    assert [events.decode(p).seq for p in first_page] == [1, 2, 3]
    assert [events.decode(p).seq for p in from_five] == [5, 6, 7]


def test_a_stop_request_is_stored_on_the_users_running_run_only(database_url):
    """How Stop reaches the instance running a reply when no broker carries it."""

    async def scenario(store: RunStore):
        running = await store.begin_run("alice", "hello", None, LIMITS, "todo")
        await store.begin_run("alice", "another reply, left alone", None, LIMITS, "todo")
        refused = [await store.request_cancel("bob", running.run_id), await store.request_cancel("alice", "nope")]
        before = await store.cancels_requested()
        accepted = await store.request_cancel("alice", running.run_id)
        asked = await store.cancels_requested()
        await store.finish_run(finished(running, status="cancelled"), (running.run_id, 2, []))
        after = await store.cancels_requested()
        return running.run_id, refused, before, accepted, asked, after, await store.request_cancel("alice", running.run_id)

    run_id, refused, before, accepted, asked, after, again = with_store(database_url, scenario)
    assert refused == [False, False] and before == []
    assert accepted and asked == [run_id]
    assert after == [] and not again  # a finished run: nothing to stop
