"""A reader's cost is bounded: a stalled client is dropped, a user's open streams are counted."""

from __future__ import annotations

import time

import httpx
import msgspec

from tests.conftest import auth, start_live_server


def test_a_user_following_too_many_runs_at_once_gets_429(settings):
    limited = msgspec.structs.replace(settings, max_followers_per_user=2, offline_token_delay_ms=100)
    live = start_live_server(limited)
    body = {"message": "add " + " ".join(f"w{n}" for n in range(12)), "on_disconnect": "continue"}
    try:
        with httpx.Client(base_url=live.url, headers=auth("alice"), timeout=30) as http:
            with http.stream("POST", "/api/alice/chat/stream", json=body) as one, \
                    http.stream("POST", "/api/alice/chat/stream", json=body) as two:
                assert one.status_code == two.status_code == 200
                third = http.post("/api/alice/chat/stream", json=body)
                assert third.status_code == 429 and third.json()["extra"] == {"code": "limit_exceeded"}
                assert int(third.headers["retry-after"]) > 0
                assert http.post("/api/bob/chat", json={"message": "hi"}, headers=auth("bob")).status_code == 200
            # Closing them frees their places.
            for _ in range(100):
                if (again := http.post("/api/alice/chat", json={"message": "hi"})).status_code != 429:
                    break
                time.sleep(0.05)
            assert again.status_code == 200
    finally:
        live.stop()


def test_a_stream_whose_client_takes_no_bytes_ends_after_the_send_timeout():
    """The transport's send blocks (the client's window is shut): after the timeout the stream
    ends as if the client had left, and what it followed is released."""
    import asyncio

    from transports.event_stream import EventStream

    async def scenario() -> tuple[float, list[str], int]:
        closed: list[str] = []
        sent = 0

        async def frames():
            while True:
                yield b"data: {}\n\n"
                await asyncio.sleep(0)

        async def on_close() -> None:
            closed.append("closed")

        async def receive():
            await asyncio.Event().wait()  # the client never hangs up

        async def send(message):
            nonlocal sent
            sent += 1
            if sent > 3:
                await asyncio.Event().wait()  # its buffers are full

        stream = EventStream(frames(), on_close=on_close, send_timeout_s=0.2)
        began = asyncio.get_running_loop().time()
        await asyncio.wait_for(stream({"type": "http"}, receive, send), 5)
        return asyncio.get_running_loop().time() - began, closed, sent

    took, closed, sent = asyncio.run(scenario())
    assert closed == ["closed"] and sent == 4
    assert 0.2 <= took < 2
