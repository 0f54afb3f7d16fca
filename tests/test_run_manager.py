"""The run manager on its own, where a transport cannot reach the timing."""

from __future__ import annotations

import asyncio
import time

import pytest

from domain.agent import todo_agent
from domain.database import close_database, open_database, run_store
from domain.offline_model import OfflineModel
from domain.runs import RunManager
from domain.tables import Run
from tests.conftest import fetch_rows, stored_events


def test_a_start_abandoned_midway_still_ends_its_run_as_cancelled(database_url):
    async def scenario() -> None:
        db = await open_database(database_url)
        runs = RunManager(db, run_store(db), todo_agent(OfflineModel(0.01)))
        await runs.open()
        try:
            starting = asyncio.create_task(runs.start("alice", "hello"))
            await asyncio.sleep(0)  # it is now inside the database write
            starting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await starting
            deadline = time.monotonic() + 30
            # Until the run is stored as ended (its row may not even be committed yet).
            while not await Run.count().where(Run.status != "running") and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        finally:
            await runs.close()
            await close_database(db)

    asyncio.run(scenario())
    assert fetch_rows(database_url, "SELECT status FROM run") == [("cancelled",)]
    (run_id,) = fetch_rows(database_url, "SELECT id FROM run")[0]
    assert stored_events(database_url, str(run_id))[-1]["status"] == "cancelled"
