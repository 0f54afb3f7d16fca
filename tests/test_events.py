"""Chat events: the one encoding every transport frames and the store saves.

The store joins a run's payloads with "\\n" and splits them back, and ``is_done`` looks only
at the first bytes; these tests pin both down without a server.
"""

from __future__ import annotations

import json

import msgspec
import pytest

from domain import events
from domain.events import Done, Error, Start, Text, ToolCall, ToolResult, Usage

ONE_OF_EACH = [
    Start(run_id="r1", seq=1, conversation_id="c1", message_id="m1", agent="todo"),
    Text(run_id="r1", seq=2, content="Hello, wörld ✓"),
    ToolCall(run_id="r1", seq=3, call_id="call_1", name="add_task",
             arguments={"title": "buy milk", "description": None, "tags": ["a", "b"], "n": 2}),
    ToolResult(run_id="r1", seq=4, call_id="call_1", name="add_task",
               result={"added": {"id": 7, "title": "buy milk", "completed": False}}),
    Error(run_id="r1", seq=5, code="model_error", message="The model did not answer."),
    Done(run_id="r1", seq=6, status="completed"),
    Done(run_id="r1", seq=6, status="failed", usage=Usage(input_tokens=12, output_tokens=34)),
]
KINDS = ["start", "text", "tool_call", "tool_result", "error", "done", "done"]


def _id(event) -> str:
    return f"{type(event).__name__}-{'usage' if getattr(event, 'usage', None) else 'plain'}"


@pytest.mark.parametrize("event", ONE_OF_EACH, ids=_id)
def test_every_event_kind_round_trips_through_encode_and_decode(event):
    payload = events.encode(event)
    decoded = events.decode(payload)
    assert type(decoded) is type(event)
    assert decoded == event
    assert events.encode(decoded) == payload, "re-encoding must give the same bytes"


@pytest.mark.parametrize("event", ONE_OF_EACH, ids=_id)
def test_decode_accepts_text_as_well_as_bytes(event):
    payload = events.encode(event)
    assert events.decode(payload.decode()) == event


@pytest.mark.parametrize(("event", "kind"), list(zip(ONE_OF_EACH, KINDS)), ids=[_id(e) for e in ONE_OF_EACH])
def test_encoded_event_carries_type_run_id_and_seq(event, kind):
    data = json.loads(events.encode(event))
    assert data["type"] == kind
    assert data["run_id"] == event.run_id
    assert data["seq"] == event.seq


@pytest.mark.parametrize("event", ONE_OF_EACH, ids=_id)
def test_type_is_the_first_key_of_every_encoded_event(event):
    # is_done and cheap consumers rely on the tag coming first.
    assert events.encode(event).startswith(b'{"type":"')


@pytest.mark.parametrize("event", ONE_OF_EACH, ids=_id)
def test_encoded_event_is_compact_utf8_json(event):
    payload = events.encode(event)
    compact = json.dumps(json.loads(payload), separators=(",", ":"), ensure_ascii=False).encode()
    assert payload == compact


def test_text_event_encodes_to_exactly_these_bytes():
    assert events.encode(Text(run_id="r9", seq=3, content="hi")) == (
        b'{"type":"text","content":"hi","run_id":"r9","seq":3}'
    )


def test_done_without_usage_has_no_usage_key():
    payload = events.encode(Done(run_id="r1", seq=9, status="cancelled"))
    assert json.loads(payload) == {"type": "done", "run_id": "r1", "seq": 9, "status": "cancelled"}
    assert b"usage" not in payload


def test_done_with_usage_carries_both_token_counts():
    payload = events.encode(Done(run_id="r1", seq=9, status="completed", usage=Usage(input_tokens=5, output_tokens=0)))
    assert json.loads(payload)["usage"] == {"input_tokens": 5, "output_tokens": 0}


def test_decoded_done_without_usage_has_usage_none():
    done = events.decode(b'{"type":"done","run_id":"r1","seq":2,"status":"completed"}')
    assert isinstance(done, Done)
    assert done.usage is None


def test_tool_call_keeps_none_valued_arguments():
    # omit_defaults drops fields left at their default, never entries inside the arguments.
    payload = events.encode(ToolCall(run_id="r", seq=1, call_id="c", name="add_task",
                                     arguments={"title": "x", "description": None}))
    assert json.loads(payload)["arguments"] == {"title": "x", "description": None}


def test_decode_rejects_an_unknown_event_type():
    with pytest.raises(msgspec.ValidationError):
        events.decode(b'{"type":"telemetry","run_id":"r1","seq":1}')


def test_decode_rejects_a_done_with_an_unknown_status():
    with pytest.raises(msgspec.ValidationError):
        events.decode(b'{"type":"done","run_id":"r1","seq":1,"status":"running"}')


def test_decode_rejects_an_event_missing_its_seq():
    with pytest.raises(msgspec.ValidationError):
        events.decode(b'{"type":"text","run_id":"r1","content":"hi"}')


# -- is_done ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["completed", "cancelled", "failed", "interrupted"])
def test_is_done_is_true_for_every_done_payload(status):
    assert events.is_done(events.encode(Done(run_id="r1", seq=4, status=status)))
    assert events.is_done(events.encode(Done(run_id="r1", seq=4, status=status, usage=Usage(1, 2))))


@pytest.mark.parametrize("event", [
    Text(run_id="r1", seq=2, content="done"),
    Text(run_id="r1", seq=2, content='{"type":"done"}'),
    Text(run_id="done", seq=2, content='{"type":"done","run_id":"r1","seq":3,"status":"completed"}'),
    Error(run_id="r1", seq=2, code="done", message='{"type":"done"'),
    ToolResult(run_id="r1", seq=2, call_id="c", name="done", result={"type": "done"}),
    ToolCall(run_id="r1", seq=2, call_id="c", name="done", arguments={"type": "done"}),
    Start(run_id="r1", seq=1, conversation_id="done", message_id="done", agent="done"),
], ids=lambda e: type(e).__name__)
def test_is_done_is_false_for_other_events_even_when_they_mention_done(event):
    assert not events.is_done(events.encode(event))


def test_is_done_is_false_for_an_empty_payload():
    assert not events.is_done(b"")


# -- one line per payload ----------------------------------------------------------------------

MULTILINE = [
    Text(run_id="r1", seq=2, content="line one\nline two\r\nline three\n"),
    ToolCall(run_id="r1", seq=3, call_id="c\n1", name="add_task", arguments={"title\n": "a\nb", "list": ["x\ny"]}),
    ToolResult(run_id="r1", seq=4, call_id="c1", name="list_tasks", result="1. a\n2. b\n"),
    Error(run_id="r1", seq=5, code="tool_error", message="first\nsecond"),
    Start(run_id="r1", seq=1, conversation_id="c1", message_id="m1", agent="multi\nline"),
]


@pytest.mark.parametrize("event", MULTILINE, ids=lambda e: type(e).__name__)
def test_encoded_payload_never_contains_a_raw_newline(event):
    payload = events.encode(event)
    assert b"\n" not in payload
    assert b"\r" not in payload
    assert events.decode(payload) == event


def test_payloads_joined_with_newlines_split_back_into_the_same_events():
    run = [*MULTILINE, Done(run_id="r1", seq=6, status="completed")]
    joined = b"\n".join(events.encode(event) for event in run)
    lines = joined.split(b"\n")
    assert len(lines) == len(run)
    assert [events.decode(line) for line in lines] == run
    assert events.is_done(lines[-1])
    assert not any(events.is_done(line) for line in lines[:-1])
