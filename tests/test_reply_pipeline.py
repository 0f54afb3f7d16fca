"""The one reply pipeline: the batch loop every SSE transport streams through, the one
``<run>:<call>`` id, and the one wording of a reply cut short, in every translator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest

from domain import events as chat
from domain.approvals import run_call_id, split_run_call_id
from domain.runs import cut_short_message
from transports.ag_ui import EventTranslator
from transports.ai_sdk import DONE_FRAME, ChunkTranslator, ui_framing
from transports.chatkit import ReplyTranslator
from transports.reply_stream import reply_frames
from transports.sse import PLAIN, ResumeFraming

START = chat.Start(run_id="x", seq=1, conversation_id="c", message_id="m", agent="Todo")
TEXT = chat.Text(run_id="x", seq=2, content="hi")
DONE = chat.Done(run_id="x", seq=3, status="completed")


class Runs:
    def __init__(self) -> None:
        self.counts: list[tuple[str, int]] = []
        self.observer = self

    def streamed(self, protocol: str, n: int) -> None:
        self.counts.append((protocol, n))


async def _batches(*batches: list[bytes]) -> AsyncIterator[list[bytes]]:
    for batch in batches:
        yield batch


def framed(framing, *batches: list[bytes]) -> tuple[list[bytes], list[tuple[str, int]]]:
    runs = Runs()

    async def collect() -> list[bytes]:
        return [chunk async for chunk in reply_frames(runs, _batches(*batches), framing)]  # type: ignore[arg-type]

    return asyncio.run(collect()), runs.counts


ENCODED = [msgspec.json.encode(START), msgspec.json.encode(TEXT)]


def test_plain_sse_frames_the_encoded_bytes_as_they_are_and_pings_an_idle_batch():
    out, counts = framed(PLAIN, ENCODED, [], [msgspec.json.encode(DONE)])
    assert out == [b"data: " + ENCODED[0] + b"\n\ndata: " + ENCODED[1] + b"\n\n", b": ping\n\n",
                   b"data: " + msgspec.json.encode(DONE) + b"\n\n"]
    assert counts == [("sse", 2), ("sse", 1)]  # the ping counts no event


def test_a_resume_numbers_each_frame_by_its_sequence():
    out, _ = framed(ResumeFraming(5), ENCODED, [], [msgspec.json.encode(DONE)])
    assert out == [b"id: 5\ndata: " + ENCODED[0] + b"\n\nid: 6\ndata: " + ENCODED[1] + b"\n\n", b": ping\n\n",
                   b"id: 7\ndata: " + msgspec.json.encode(DONE) + b"\n\n"]


def test_a_translated_stream_ends_with_its_framing_end():
    out, counts = framed(ui_framing(ChunkTranslator()), ENCODED, [msgspec.json.encode(DONE)])
    assert out[-1] == DONE_FRAME
    assert out[0].startswith(b'data: {"type":"start"') and b'"text-delta"' in out[0]
    assert counts == [("ai_sdk", 2), ("ai_sdk", 1)]


def test_the_run_call_id_is_made_and_read_in_one_place():
    assert split_run_call_id(run_call_id("run-1", "call-2")) == ("run-1", "call-2")
    for bad in ("", "run-1", "run-1:", ":call-2"):
        assert split_run_call_id(bad) is None


@pytest.mark.parametrize("status", ["failed", "interrupted"])
def test_every_translator_says_a_cut_short_reply_in_the_domains_words(status):
    words = cut_short_message(status)
    assert words
    done = chat.Done(run_id="x", seq=3, status=status)
    said = []
    for translator in (EventTranslator("t", "r"), ChunkTranslator(), ReplyTranslator("c", "m")):
        translator.translate(START)
        said.append(msgspec.json.encode(translator.translate(done)).decode())
    ag_ui, ai_sdk, chatkit = said
    assert words in ag_ui and words in chatkit
    if status == "interrupted":  # a failure reaches the AI SDK as the ``error`` event before ``done``
        assert words in ai_sdk
