"""Admission under concurrency, on two instances sharing one database: exact, and never a 500."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import msgspec
import pytest

from tests.conftest import ServerProcess, auth, count_rows


@pytest.fixture
def two_instances(request, settings) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two server processes on one database (SQLite file or PostgreSQL)."""
    slow = msgspec.structs.replace(settings, offline_token_delay_ms=20)
    env = {name.upper(): str(value) for name, value in getattr(request, "param", {}).items()}
    a = ServerProcess(slow, **env)
    b = ServerProcess(slow, **env)
    a.settings = b.settings = slow
    yield a, b
    a.stop()
    b.stop()


async def rows(database_url: str, table: str, where: str = "", *args) -> int:
    return await asyncio.to_thread(count_rows, database_url, table, where, *args)


async def start_stream(client: httpx.AsyncClient, url: str, body: dict) -> int:
    """The status a message's stream answers; an admitted reply is left running."""
    async with client.stream("POST", f"{url}/api/alice/chat/stream",
                             json={**body, "on_disconnect": "continue"}) as response:
        return response.status_code


def race(*calls) -> list:
    async def all_at_once():
        return await asyncio.gather(*calls)

    return asyncio.run(all_at_once())


def test_two_messages_at_once_to_one_conversation_admit_exactly_one(two_instances):
    a, b = two_instances

    async def rounds() -> list[list[int]]:
        async with httpx.AsyncClient(headers=auth("alice"), timeout=30) as client:
            results = []
            for _ in range(5):
                created = await client.post(f"{a.url}/api/alice/chat", json={"message": "hello"})
                conversation = created.json()["conversation_id"]
                body = {"message": "list my tasks", "conversation_id": conversation}
                statuses = await asyncio.gather(start_stream(client, a.url, body), start_stream(client, b.url, body))
                results.append(sorted(statuses))
                for _ in range(200):  # let the admitted reply finish before the next round
                    if await rows(a.settings.database, "run", "status = 'running'") == 0:
                        break
                    await asyncio.sleep(0.05)
            return results

    assert asyncio.run(rounds()) == [[200, 409]] * 5


@pytest.mark.parametrize("two_instances", [{"messages_per_minute": 5, "max_active_runs_per_user": 100}],
                         indirect=True)
def test_messages_per_minute_is_exact_under_a_burst(two_instances):
    a, b = two_instances

    async def burst() -> list[int]:
        async with httpx.AsyncClient(headers=auth("alice"), timeout=30) as client:
            return await asyncio.gather(*(start_stream(client, (a, b)[n % 2].url, {"message": f"hi {n}"})
                                          for n in range(30)))

    statuses = asyncio.run(burst())
    assert sorted(statuses) == [200] * 5 + [429] * 25
    assert count_rows(a.settings.database, "run") == 5


@pytest.mark.parametrize("two_instances", [{"max_active_runs_per_user": 4}], indirect=True)
def test_active_runs_per_user_is_exact_under_a_burst(two_instances):
    a, b = two_instances

    async def burst() -> list[int]:
        async with httpx.AsyncClient(headers=auth("alice"), timeout=30) as client:
            return await asyncio.gather(*(start_stream(client, (a, b)[n % 2].url, {"message": f"hi {n}"})
                                          for n in range(12)))

    statuses = asyncio.run(burst())
    assert sorted(statuses) == [200] * 4 + [429] * 8
    assert count_rows(a.settings.database, "run") == 4


def test_a_delete_racing_a_message_either_wins_or_loses_cleanly(two_instances):
    a, b = two_instances

    async def rounds() -> list[tuple[int, int]]:
        async with httpx.AsyncClient(headers=auth("alice"), timeout=30) as client:
            outcomes = []
            for n in range(6):
                created = await client.post(f"{a.url}/api/alice/chat", json={"message": "hello"})
                conversation = created.json()["conversation_id"]
                message, deleted = await asyncio.gather(
                    start_stream(client, a.url, {"message": "list my tasks", "conversation_id": conversation}),
                    client.delete(f"{b.url}/api/alice/conversations/{conversation}"),
                )
                outcomes.append((message, deleted.status_code))
                left = await rows(a.settings.database, "conversation", "id = $1", conversation_key(a, conversation))
                # The delete won: nothing of the conversation is left; it lost: the reply is kept.
                assert left == (0 if deleted.status_code == 204 else 1)
                for _ in range(200):
                    if await rows(a.settings.database, "run", "status = 'running'") == 0:
                        break
                    await asyncio.sleep(0.05)
            return outcomes

    outcomes = asyncio.run(rounds())
    assert set(outcomes) <= {(404, 204), (200, 409)}, outcomes


def conversation_key(server: ServerProcess, conversation_id: str):
    import uuid

    return conversation_id if server.settings.database.startswith("sqlite") else uuid.UUID(conversation_id)
