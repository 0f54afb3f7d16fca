"""RunLog: the in-memory log of an active run, read by many readers with their own cursors.

Pure asyncio, no server: every test runs on its own loop under a hard timeout, so a reader
that never ends fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio

import pytest

from domain.runs.log import RunLog

TIMEOUT_S = 5.0


def run(coro):
    """Run a test body on a private loop; errors raised in loop callbacks fail the test."""

    async def guarded():
        loop = asyncio.get_running_loop()
        callback_errors: list[dict] = []
        loop.set_exception_handler(lambda _loop, context: callback_errors.append(context))
        result = await asyncio.wait_for(coro, TIMEOUT_S)
        await asyncio.sleep(0.01)  # let any stray timer or callback fire
        assert callback_errors == [], callback_errors
        return result

    return asyncio.run(guarded())


def ev(seq: int) -> bytes:
    return f'{{"seq":{seq}}}'.encode()


async def collect(log: RunLog, after: int = 0, idle_s: float | None = None) -> list[list[bytes]]:
    return [batch async for batch in log.read(after, idle_s)]


def flat(batches: list[list[bytes]]) -> list[bytes]:
    return [event for batch in batches for event in batch]


async def produce(log: RunLog, count: int, *, pause_every: int = 1, close: bool = True) -> None:
    for seq in range(1, count + 1):
        log.append(ev(seq), last=close and seq == count)
        if seq % pause_every == 0:
            await asyncio.sleep(0)


# -- reading from the start --------------------------------------------------------------------


def test_reader_from_start_gets_every_event_in_order_and_ends_when_log_closes():
    async def body():
        log = RunLog()
        reader = asyncio.create_task(collect(log))
        await asyncio.sleep(0)  # the reader is waiting before anything is appended
        await produce(log, 20)
        return await reader, log

    batches, log = run(body())
    assert flat(batches) == [ev(seq) for seq in range(1, 21)]
    assert all(batch for batch in batches), "no idle ticks without idle_s"
    assert len(log) == 20


def test_reader_of_a_closed_log_gets_everything_in_one_batch_and_ends():
    async def body():
        log = RunLog()
        await produce(log, 5)
        return await collect(log)

    assert run(body()) == [[ev(seq) for seq in range(1, 6)]]


def test_reader_waiting_at_close_receives_the_last_event_then_ends():
    async def body():
        log = RunLog()
        log.append(ev(1))
        reader = log.read(0)
        assert await reader.__anext__() == [ev(1)]
        pending = asyncio.ensure_future(reader.__anext__())
        await asyncio.sleep(0.01)
        assert not pending.done(), "an open log with nothing new must keep the reader waiting"
        log.append(ev(2), last=True)
        assert await pending == [ev(2)]
        with pytest.raises(StopAsyncIteration):
            await reader.__anext__()

    run(body())


def test_reader_caught_up_with_a_closed_log_ends_at_once():
    async def body():
        log = RunLog()
        await produce(log, 3)
        return await collect(log, after=3, idle_s=0.01)

    assert run(body()) == []


# -- starting late ---------------------------------------------------------------------------


def test_late_reader_gets_only_events_after_its_cursor():
    async def body():
        log = RunLog()
        await produce(log, 5, close=False)
        reader = asyncio.create_task(collect(log, after=3))
        await asyncio.sleep(0)
        log.append(ev(6))
        await asyncio.sleep(0)
        log.append(ev(7), last=True)
        return await reader

    assert flat(run(body())) == [ev(4), ev(5), ev(6), ev(7)]


def test_reader_ahead_of_the_log_waits_for_the_events_after_its_cursor():
    async def body():
        log = RunLog()
        log.append(ev(1))
        reader = asyncio.create_task(collect(log, after=3))
        for seq in (2, 3, 4):
            await asyncio.sleep(0)
            log.append(ev(seq))
        log.append(ev(5), last=True)
        return await reader

    assert flat(run(body())) == [ev(4), ev(5)]


def test_negative_cursor_reads_from_the_start():
    async def body():
        log = RunLog()
        await produce(log, 3)
        return await collect(log, after=-7)

    assert flat(run(body())) == [ev(1), ev(2), ev(3)]


# -- lagging and concurrent readers ------------------------------------------------------------


def test_lagging_reader_receives_what_piled_up_as_one_batch():
    async def body():
        log = RunLog()
        log.append(ev(1))
        reader = log.read(0)
        first = await reader.__anext__()
        # The reader is busy with its first batch while three more events arrive.
        for seq in (2, 3, 4):
            log.append(ev(seq))
        second = await reader.__anext__()
        log.append(ev(5), last=True)
        rest = [batch async for batch in reader]
        return first, second, rest

    first, second, rest = run(body())
    assert first == [ev(1)]
    assert second == [ev(2), ev(3), ev(4)]
    assert rest == [[ev(5)]]


def test_slow_reader_loses_nothing_while_a_fast_reader_keeps_up():
    async def body():
        log = RunLog()

        async def slow() -> list[list[bytes]]:
            batches = []
            async for batch in log.read(0):
                batches.append(batch)
                await asyncio.sleep(0.005)
            return batches

        slow_reader = asyncio.create_task(slow())
        fast_reader = asyncio.create_task(collect(log))
        await asyncio.sleep(0)
        await produce(log, 50)
        return await slow_reader, await fast_reader

    slow_batches, fast_batches = run(body())
    expected = [ev(seq) for seq in range(1, 51)]
    assert flat(slow_batches) == expected
    assert flat(fast_batches) == expected
    assert len(slow_batches) < len(fast_batches), "the slow reader should get piled-up batches"


def test_many_concurrent_readers_all_get_every_event_in_order():
    async def body():
        log = RunLog()
        readers = [asyncio.create_task(collect(log, idle_s=None if n % 2 else 1.0)) for n in range(8)]
        await asyncio.sleep(0)
        await produce(log, 200, pause_every=7)
        return await asyncio.gather(*readers)

    expected = [ev(seq) for seq in range(1, 201)]
    for batches in run(body()):
        assert flat(batches) == expected


# -- idle ticks --------------------------------------------------------------------------------


def test_idle_tick_is_an_empty_batch_after_idle_s_of_quiet():
    async def body():
        loop = asyncio.get_running_loop()
        log = RunLog()
        reader = log.read(0, idle_s=0.02)
        started = loop.time()
        tick = await reader.__anext__()
        waited = loop.time() - started
        second_tick = await reader.__anext__()
        log.append(ev(1), last=True)
        rest = [batch async for batch in reader]
        return tick, waited, second_tick, rest

    tick, waited, second_tick, rest = run(body())
    assert tick == []
    assert waited >= 0.015, f"the idle tick came after {waited:.4f}s, before idle_s"
    assert second_tick == [], "idle ticks repeat while nothing happens"
    assert rest == [[ev(1)]]


def test_no_idle_tick_while_events_keep_arriving_faster_than_idle_s():
    async def body():
        log = RunLog()
        reader = asyncio.create_task(collect(log, idle_s=0.06))
        for seq in range(1, 9):  # ~0.16 s in all, never 0.06 s quiet
            await asyncio.sleep(0.02)
            log.append(ev(seq), last=seq == 8)
        return await reader

    batches = run(body())
    assert [] not in batches, "an idle tick came although events arrived within idle_s"
    assert flat(batches) == [ev(seq) for seq in range(1, 9)]


def test_idle_tick_comes_idle_s_after_the_last_event_not_after_the_first_wait():
    async def body():
        loop = asyncio.get_running_loop()
        log = RunLog()
        reader = log.read(0, idle_s=0.06)
        pending = asyncio.ensure_future(reader.__anext__())
        await asyncio.sleep(0.04)
        log.append(ev(1))
        assert await pending == [ev(1)]
        last_event_at = loop.time()
        tick = await reader.__anext__()
        quiet = loop.time() - last_event_at
        await reader.aclose()
        return tick, quiet

    tick, quiet = run(body())
    assert tick == []
    assert quiet >= 0.05, f"idle tick only {quiet:.4f}s after the last event"


def test_no_idle_ticks_without_idle_s():
    async def body():
        log = RunLog()
        reader = log.read(0, idle_s=None)
        pending = asyncio.ensure_future(reader.__anext__())
        await asyncio.sleep(0.1)
        still_waiting = not pending.done()
        log.append(ev(1), last=True)
        first = await pending
        rest = [batch async for batch in reader]
        return still_waiting, first, rest

    still_waiting, first, rest = run(body())
    assert still_waiting, "a reader without idle_s must not get an idle tick"
    assert first == [ev(1)]
    assert rest == []


# -- closing and appending ------------------------------------------------------------------------


def test_append_after_close_raises_and_leaves_the_log_unchanged():
    log = RunLog()
    log.append(ev(1))
    log.append(ev(2), last=True)
    with pytest.raises(RuntimeError):
        log.append(ev(3))
    with pytest.raises(RuntimeError):
        log.append(ev(3), last=True)
    assert len(log) == 2
    assert log.since(0) == [ev(1), ev(2)]


def test_append_without_last_keeps_the_log_open():
    log = RunLog()
    log.append(ev(1), last=False)
    log.append(ev(2))
    log.append(ev(3), last=True)
    assert len(log) == 3


def test_since_returns_events_from_an_index_on():
    log = RunLog()
    assert log.since(0) == []
    for seq in (1, 2, 3, 4):
        log.append(ev(seq))
    assert log.since(0) == [ev(1), ev(2), ev(3), ev(4)]
    assert log.since(2) == [ev(3), ev(4)]
    assert log.since(4) == []
    assert log.since(10) == []


def test_since_returns_a_copy_that_later_appends_do_not_change():
    log = RunLog()
    log.append(ev(1))
    snapshot = log.since(0)
    log.append(ev(2))
    assert snapshot == [ev(1)]


# -- readers leaving early ---------------------------------------------------------------------


def test_reader_cancelled_while_waiting_does_not_break_appends_or_other_readers():
    async def body():
        log = RunLog()
        log.append(ev(1))
        leaver = asyncio.create_task(collect(log, idle_s=0.02))
        stayer = asyncio.create_task(collect(log))
        await asyncio.sleep(0.005)  # both have read ev(1) and wait
        leaver.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaver
        for seq in (2, 3, 4):
            log.append(ev(seq), last=seq == 4)  # must not touch the cancelled reader's future
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)  # past the cancelled reader's idle timer
        return await stayer

    assert flat(run(body())) == [ev(1), ev(2), ev(3), ev(4)]


def test_reader_closed_early_with_aclose_does_not_break_other_readers():
    async def body():
        log = RunLog()
        log.append(ev(1))
        leaver = log.read(0, idle_s=0.02)
        assert await leaver.__anext__() == [ev(1)]
        stayer = asyncio.create_task(collect(log))
        await asyncio.sleep(0)
        await leaver.aclose()
        log.append(ev(2))
        await asyncio.sleep(0.05)  # an idle timer left behind would fire here
        log.append(ev(3), last=True)
        with pytest.raises(StopAsyncIteration):
            await leaver.__anext__()
        return await stayer

    assert flat(run(body())) == [ev(1), ev(2), ev(3)]


def test_many_readers_leaving_early_leave_later_appends_working():
    async def body():
        log = RunLog()
        leavers = [asyncio.create_task(collect(log, idle_s=0.01)) for _ in range(10)]
        stayer = asyncio.create_task(collect(log, idle_s=0.01))
        await asyncio.sleep(0)
        for task in leavers:
            task.cancel()
        await asyncio.gather(*leavers, return_exceptions=True)
        await asyncio.sleep(0.03)
        for seq in range(1, 6):
            log.append(ev(seq), last=seq == 5)
            await asyncio.sleep(0)
        return await stayer

    batches = run(body())
    assert flat(batches) == [ev(seq) for seq in range(1, 6)]
    assert [] in batches, "the waiting reader should have had an idle tick during the quiet spell"


def test_a_new_reader_after_others_left_still_reads_everything():
    async def body():
        log = RunLog()
        log.append(ev(1))
        first = log.read(0)
        await first.__anext__()
        await first.aclose()
        log.append(ev(2), last=True)
        return await collect(log)

    assert flat(run(body())) == [ev(1), ev(2)]
