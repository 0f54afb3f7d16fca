"""Live everywhere: a run followed on another instance as it is written (pushed notices, not a
poll), and each user's feed of conversation changes, on every instance."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from tests.conftest import ServerProcess, auth
from tests.test_scale_out import BROKERS, broker_env, shared_settings, ws_url

__all__ = ["shared_settings"]  # a fixture, used by name

# Followers read the database only every 10 minutes: what they get in time came by notice.
NO_POLL = {"FOLLOW_POLL_S": "600"}


@pytest.fixture(params=BROKERS)
def pushed_instances(request, shared_settings):
    env = {**broker_env(request.param), **NO_POLL}
    a = ServerProcess(shared_settings, wait=False, **env)
    b = ServerProcess(shared_settings, wait=False, **env)
    a.wait_ready()
    b.wait_ready()
    yield a, b
    a.stop()
    b.stop()


async def sse_events(response: httpx.Response, until: str = "done"):
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            event = json.loads(line.removeprefix("data: "))
            yield event
            if event["type"] == until:
                return


def test_a_follower_on_another_instance_sees_each_event_in_order_as_it_is_written(pushed_instances):
    a, b = pushed_instances

    async def scenario():
        async with websockets.connect(ws_url(a)) as on_a, httpx.AsyncClient(
                base_url=b.url, headers=auth("alice"), timeout=30) as http_b:
            await on_a.send(json.dumps({"type": "chat", "message": "hello"}))
            start = json.loads(await on_a.recv())

            async def follow_on_b() -> list[dict]:
                async with http_b.stream("GET", f"/api/alice/runs/{start['run_id']}/events") as response:
                    return [event async for event in sse_events(response)]

            follower = asyncio.create_task(follow_on_b())
            seen_on_a = [start]
            while seen_on_a[-1]["type"] != "done":
                seen_on_a.append(json.loads(await asyncio.wait_for(on_a.recv(), 30)))
            # The run took seconds; a follower left to the 10-minute poll would still be waiting.
            return seen_on_a, await asyncio.wait_for(follower, 30)

    seen_on_a, seen_on_b = asyncio.run(scenario())
    assert seen_on_a[-1] == {**seen_on_a[-1], "type": "done", "status": "completed"}
    assert seen_on_b == seen_on_a
    assert [e["seq"] for e in seen_on_b] == list(range(1, len(seen_on_b) + 1))
