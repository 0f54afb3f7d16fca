"""Live everywhere: a run followed on another instance as it is written (pushed notices, not a
poll), and each user's feed of conversation changes, on every instance."""

from __future__ import annotations

import asyncio
import json
import signal

import httpx
import msgspec
import pytest
import websockets

from tests.conftest import auth, token_for
from tests.test_scale_out import BROKERS, broker_env, shared_settings, two_instances, ws_url


@pytest.fixture
def settings(settings):
    """The agent deletes without asking here: approvals have their own tests (test_approvals.py)."""
    return msgspec.structs.replace(settings, tool_approval="none")

__all__ = ["shared_settings"]  # a fixture, used by name

# Followers read the database only every 10 minutes: what they get in time came by notice.
NO_POLL = {"FOLLOW_POLL_S": "600"}


@pytest.fixture(params=BROKERS)
def pushed_instances(request, shared_settings):
    yield from two_instances(shared_settings, **broker_env(request.param), **NO_POLL)


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


class FeedStream:
    """A feed read a few events at a time: one line iterator for the whole response."""

    def __init__(self, response: httpx.Response):
        assert response.status_code == 200, response.status_code
        self.lines = response.aiter_lines()


async def feed_events(feed: httpx.Response | FeedStream, count: int) -> list[dict]:
    """The next ``count`` feed events, each with the ``id:`` it came with."""
    if isinstance(feed, httpx.Response):
        feed = FeedStream(feed)
    got: list[dict] = []
    entry_id = None
    async for line in feed.lines:
        if line.startswith("id: "):
            entry_id = line.removeprefix("id: ")
        elif line.startswith("data: "):
            got.append({**json.loads(line.removeprefix("data: ")), "sse_id": entry_id})
            entry_id = None
            if len(got) == count:
                return got
    raise AssertionError(f"the feed ended after {got}")


def kinds(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def test_the_feed_on_another_instance_announces_a_run_started_there_and_only_to_its_user(pushed_instances):
    a, b = pushed_instances

    async def scenario():
        async with httpx.AsyncClient(base_url=b.url, timeout=30) as http_b, \
                http_b.stream("GET", "/api/alice/events", headers=auth("alice")) as alice_feed, \
                http_b.stream("GET", "/api/bob/events", headers=auth("bob")) as bob_feed:
            alice_feed, bob_feed = FeedStream(alice_feed), FeedStream(bob_feed)
            async with websockets.connect(ws_url(a)) as alice_on_a:
                await alice_on_a.send(json.dumps({"type": "chat", "message": "add buy milk"}))
                start = json.loads(await alice_on_a.recv())
                alice_sees = await asyncio.wait_for(feed_events(alice_feed, 2), 30)
                # Announced on B while it runs on A: attach there and follow it to its end.
                announced = alice_sees[1]["run_id"]
                async with http_b.stream("GET", f"/api/alice/runs/{announced}/events",
                                         headers=auth("alice")) as run:
                    followed = [event async for event in sse_events(run)]
                alice_sees += await asyncio.wait_for(feed_events(alice_feed, 2), 30)
            async with websockets.connect(ws_url(a, "bob")) as bob_on_a:
                await bob_on_a.send(json.dumps({"type": "chat", "message": "hello"}))
                bob_start = json.loads(await bob_on_a.recv())
                # Bob's feed, which heard nothing of Alice's, now starts with Bob's own change.
                bob_sees = await asyncio.wait_for(feed_events(bob_feed, 2), 30)
            return start, followed, alice_sees, bob_start, bob_sees

    start, followed, alice_sees, bob_start, bob_sees = asyncio.run(scenario())
    assert kinds(alice_sees) == ["conversation_created", "run_started", "task_added", "run_finished"]
    assert alice_sees[0] == {**alice_sees[0], "conversation_id": start["conversation_id"], "title": "add buy milk"}
    assert alice_sees[1] == {**alice_sees[1], "run_id": start["run_id"], "conversation_id": start["conversation_id"]}
    assert alice_sees[2] == {**alice_sees[2], "title": "buy milk", "completed": False}
    assert alice_sees[3] == {**alice_sees[3], "run_id": start["run_id"], "status": "completed"}
    assert all(e["sse_id"] == e["id"] for e in alice_sees) and len({e["id"] for e in alice_sees}) == 4
    assert followed[0]["seq"] == 1 and followed[-1] == {**followed[-1], "type": "done", "status": "completed"}
    assert kinds(bob_sees) == ["conversation_created", "run_started"]
    assert bob_sees[1]["run_id"] == bob_start["run_id"]


def test_the_feed_resumes_after_last_event_id_on_another_instance(pushed_instances):
    a, b = pushed_instances

    async def scenario():
        async with httpx.AsyncClient(timeout=30) as http:
            async with http.stream("GET", f"{a.url}/api/alice/events", headers=auth("alice")) as feed_a:
                async with websockets.connect(ws_url(a)) as on_a:
                    await on_a.send(json.dumps({"type": "chat", "message": "add buy milk"}))
                    seen = await asyncio.wait_for(feed_events(feed_a, 4), 30)
            # The client lost its stream after the first event: it reconnects to B.
            async with http.stream("GET", f"{b.url}/api/alice/events",
                                   headers={**auth("alice"), "Last-Event-ID": seen[0]["id"]}) as resumed:
                rest = await asyncio.wait_for(feed_events(resumed, 3), 30)
            async with http.stream("GET", f"{b.url}/api/alice/events",
                                   headers={**auth("alice"), "Last-Event-ID": "0000.1"}) as unknown:
                too_old = await asyncio.wait_for(feed_events(unknown, 1), 30)
            async with http.stream("GET", f"{b.url}/api/bob/events",
                                   headers={**auth("bob"), "Last-Event-ID": seen[0]["id"]}) as foreign:
                not_bobs = await asyncio.wait_for(feed_events(foreign, 1), 30)
            return seen, rest, too_old, not_bobs

    seen, rest, too_old, not_bobs = asyncio.run(scenario())
    assert kinds(seen) == ["conversation_created", "run_started", "task_added", "run_finished"]
    assert rest == seen[1:]
    assert too_old == [{"type": "reload", "id": seen[-1]["id"], "sse_id": seen[-1]["id"]}]
    # Bob is told to reload, and learns nothing of Alice's: no event, not even her last id.
    assert not_bobs == [{"type": "reload", "sse_id": None}]


def test_the_websocket_subscribe_frame_carries_the_feed(live_server):
    from tests.test_chatkit import request

    async def scenario():
        url = live_server.url.replace("http", "ws") + f"/api/alice/ws?token={token_for('alice')}"
        async with websockets.connect(url) as ws, httpx.AsyncClient(base_url=live_server.url,
                                                                      headers=auth("alice")) as http:
            await ws.send(json.dumps({"type": "subscribe", "after": "x" * 65}))
            refused = json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "subscribe"}))
            subscribed = json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "chat", "message": "add buy milk"}))
            frames = []
            while len([f for f in frames if f["type"] in FEED_KINDS]) < 4:
                frames.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
            conversation_id = frames[0]["conversation_id"]
            renamed = await http.post("/chatkit", json=request("threads.update", thread_id=conversation_id,
                                                              title="Groceries"))
            assert renamed.status_code == 200
            assert (await http.delete(f"/api/alice/conversations/{conversation_id}")).status_code == 204
            more = [json.loads(await asyncio.wait_for(ws.recv(), 30)) for _ in range(2)]
            return refused, subscribed, frames, more, conversation_id

    refused, subscribed, frames, more, conversation_id = asyncio.run(scenario())
    assert refused["type"] == "error" and refused["code"] == "invalid_frame"
    assert subscribed == {"type": "subscribed"}
    feed = [f for f in frames if f["type"] in FEED_KINDS]
    assert kinds(feed) == ["conversation_created", "run_started", "task_added", "run_finished"]
    # The run's own events came on the same socket, beside the feed.
    assert [f["type"] for f in frames if f["type"] not in FEED_KINDS][-1] == "done"
    assert more == [
        {"type": "conversation_renamed", "id": more[0]["id"], "conversation_id": conversation_id, "title": "Groceries"},
        {"type": "conversation_deleted", "id": more[1]["id"], "conversation_id": conversation_id},
    ]


FEED_KINDS = {"conversation_created", "conversation_renamed", "conversation_deleted", "run_started",
              "run_finished", "task_added", "task_changed", "task_removed", "reload"}


def test_feed_bad_input_and_other_users(client):
    too_long = client.get("/api/alice/events", headers={**auth("alice"), "Last-Event-ID": "x" * 65})
    assert too_long.status_code == 400
    assert client.get("/api/alice/events", headers=auth("bob")).status_code == 403
    assert client.get("/api/alice/events").status_code == 401


def test_the_feed_is_documented(client):
    schema = client.get("/schema/openapi.json").json()
    content = schema["paths"]["/api/{user_id}/events"]["get"]["responses"]["200"]["content"]["text/event-stream"]
    # Each item of the stream is an event whose `data` is a feed event's JSON (OpenAPI 3.2's reading).
    data = content["schema"]["properties"]["data"]
    refs = {ref["$ref"].rsplit("/", 1)[1] for ref in data["contentSchema"]["oneOf"]}
    assert refs == {"RunStarted", "RunEnded", "ConversationCreated", "ConversationRenamed", "ConversationDeleted",
                    "TaskAdded", "TaskChanged", "TaskRemoved", "Reload"}
    asyncapi = client.get("/schema/asyncapi.json").json()
    assert {"SubscribeFrame", "Subscribed", "RunStarted", "Reload"} <= asyncapi["components"]["schemas"].keys()
    assert "feedEvent" in asyncapi["components"]["messages"]


def test_a_run_whose_instance_died_is_announced_finished_and_its_followers_see_its_end(pushed_instances):
    a, b = pushed_instances

    async def scenario():
        async with httpx.AsyncClient(timeout=60, headers=auth("alice")) as http, \
                http.stream("GET", f"{b.url}/api/alice/events") as feed:
            feed = FeedStream(feed)
            async with websockets.connect(ws_url(a)) as on_a:
                await on_a.send(json.dumps({"type": "chat", "message": "hello"}))
                start = json.loads(await on_a.recv())
                announced = await asyncio.wait_for(feed_events(feed, 2), 30)
                async with http.stream("GET", f"{b.url}/api/alice/runs/{start['run_id']}/events") as run:
                    events = sse_events(run)
                    first = await anext(events)
                    a.process.send_signal(signal.SIGKILL)
                    # B's sweep closes the run once A's lease lapses; B's follower is woken by it.
                    rest = await asyncio.wait_for(collect(events), 30)
            ended = await asyncio.wait_for(feed_events(feed, 1), 30)
            return start, announced, [first, *rest], ended

    start, announced, followed, ended = asyncio.run(scenario())
    assert kinds(announced) == ["conversation_created", "run_started"]
    assert followed[-1] == {**followed[-1], "type": "done", "status": "interrupted"}
    assert [e["seq"] for e in followed] == list(range(1, len(followed) + 1))
    assert ended == [{**ended[0], "type": "run_finished", "run_id": start["run_id"], "status": "interrupted"}]


async def collect(events) -> list[dict]:
    return [event async for event in events]


def test_notices_fit_a_postgresql_notify_however_many_gathered():
    import uuid

    from domain.feed import Feed, FeedNotice, TaskAdded
    from domain.notices import MAX_MESSAGE_BYTES, Notices, NoticeMessage, RunCommitted

    sender, receiver = Feed(), Feed()
    notices = Notices(broker=object(), feed=sender)  # only its messages are read here
    runs = {str(uuid.uuid4()): n for n in range(1, 400)}
    for run_id, seq in runs.items():
        notices.committed(run_id, seq)
        notices.committed(run_id, seq - 1)  # an older notice never lowers the seq
    sender.relay = notices.tell
    for n in range(20):
        sender.tell("alice", TaskAdded(task_id=n, title="\x01" * 500, completed=False))  # escaped: 6 bytes a char
    messages = notices.messages()
    assert len(messages) > 1 and all(len(m) <= MAX_MESSAGE_BYTES for m in messages)
    decoded = [n for m in messages for n in msgspec.json.decode(m, type=NoticeMessage).notices]
    assert {n.run_id: n.seq for n in decoded if isinstance(n, RunCommitted)} == runs
    assert [n.id for n in decoded if isinstance(n, FeedNotice)] == [f"{sender.origin}.{n}" for n in range(1, 21)]
    assert notices.messages() == []

    hearing = Notices(broker=object(), feed=receiver)
    for m in messages:
        hearing.heard(m)
    resumed = asyncio.run(anext(receiver.subscribe("alice", f"{sender.origin}.18")))
    assert [entry_id for entry_id, _ in resumed] == [f"{sender.origin}.19", f"{sender.origin}.20"]
    not_bobs = asyncio.run(anext(receiver.subscribe("bob", f"{sender.origin}.18")))
    assert not_bobs == [("", b'{"type":"reload"}')]


def test_the_feed_tells_each_task_change_the_agent_makes(live_server):
    async def scenario():
        url = live_server.url.replace("http", "ws") + f"/api/alice/ws?token={token_for('alice')}"
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"type": "subscribe"}))
            assert json.loads(await ws.recv()) == {"type": "subscribed"}
            frames = []
            for message in ["add buy milk", "complete buy milk", "rename buy milk to buy oat milk",
                            "delete buy oat milk", "delete buy oat milk"]:
                await ws.send(json.dumps({"type": "chat", "message": message}))
                while (frame := json.loads(await asyncio.wait_for(ws.recv(), 30)))["type"] != "run_finished":
                    frames.append(frame)
            return [{k: v for k, v in f.items() if k != "id"} for f in frames if f["type"].startswith("task_")]

    task_events = asyncio.run(scenario())
    task_id = task_events[0]["task_id"]
    assert task_events == [  # the last delete found nothing: nothing changed, nothing told
        {"type": "task_added", "task_id": task_id, "title": "buy milk", "completed": False},
        {"type": "task_changed", "task_id": task_id, "title": "buy milk", "completed": True},
        {"type": "task_changed", "task_id": task_id, "title": "buy oat milk", "completed": True},
        {"type": "task_removed", "task_id": task_id},
    ]
