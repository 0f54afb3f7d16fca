"""The provider fast path gives the user exactly what the stock ``openai`` decoding gives.

Recorded provider streams (``tests/provider_streams/``: OpenAI, vLLM, Ollama, llama.cpp,
DeepSeek, an OpenRouter-style proxy; Chat Completions and Responses) are served by the local
fake provider, and each is answered twice by the real server: with ``PROVIDER_FAST_PATH=0``
(the client's stock decoding) and with the fast path. The chat events must be the same: text,
tool calls, tool results, usage, errors and their codes. Below that, each recording's events
and typed chunks are compared one by one, and the ``openai`` internals the fast path hooks
are pinned.
"""

from __future__ import annotations

import asyncio
import gzip
import inspect
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any, get_args, get_type_hints

import msgspec
import pytest
from agents.models import chatcmpl_stream_handler
from litestar.testing import TestClient
from openai import AsyncOpenAI
from openai._utils import PropertyInfo
from openai._models import construct_type
from openai._streaming import AsyncStream, ServerSentEvent, SSEDecoder
from openai.types.chat import ChatCompletionChunk
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from openai.types.responses import ResponseStreamEvent
from pydantic import BaseModel
from typing_extensions import Required, TypedDict

from app.main import create_app
from domain.aiohttp_transport import AiohttpTransport
from domain.openai_request_body import _CHAT_COMPLETIONS, _RESPONSES, _with_plain_body, movable
from domain.models import ModelConfig, build_model, close_model
from domain.openai_stream_decoding import (
    _OUTPUT_ITEMS,
    _TOOLS,
    PROBED_BY_THE_SDK,
    FastDecodingAsyncOpenAI,
    LineFeedSSEDecoder,
    RawJSON,
    fast_decoder,
    _carries_unions,
    responses_event_types,
)
from tests.conftest import auth
from tests.fake_openai import FakeOpenAI, Received, Reply, _recorded_frames
from tests.sse import parse_frames

STREAMS = Path(__file__).parent / "provider_streams"
RECORDINGS = sorted(path.stem for path in STREAMS.glob("*.sse"))
KEY = "sk-test-fast-path"

# What each recording must show the user (on both paths), so that a recording that stopped
# exercising its case would fail here rather than pass by comparing two empty replies.
EXPECTED = {
    "chat_deepseek_reasoning": {"text": "Hello! How can I help with your list?"},
    "chat_error_mid_stream": {"text": "Adding that ", "error": "model_error"},
    "chat_llamacpp_usage_last": {"text": "Sure, added it.", "usage": {"input_tokens": 210, "output_tokens": 4}},
    "chat_ollama_missing_fields": {"text": "Your list is empty."},
    "chat_openai_parallel_tool_calls": {"calls": ["walk the dog", "water the plants"]},
    # The SDK raises ModelRefusalError for a refusal; the server reports it as it does today.
    "chat_openai_refusal": {"error": "internal_error"},
    "chat_openai_text": {"text": "You have no tasks yet.", "usage": {"input_tokens": 321, "output_tokens": 6}},
    "chat_openrouter_crlf_comments": {"text": "Done - one task."},
    "chat_vllm_tool_call": {"calls": ["buy oat milk"]},
    "responses_compatible_missing_fields": {"text": "Sure, done."},
    "responses_error_mid_stream": {"text": "Adding that ", "error": "model_error"},
    "responses_openai_parallel_tool_calls": {"calls": ["walk the dog", "water the plants"]},
    "responses_openai_reasoning": {"text": "Nothing on it yet."},
    "responses_openai_refusal": {"error": "internal_error"},
    "responses_openai_text": {"text": "You have two tasks.", "usage": {"input_tokens": 330, "output_tokens": 12}},
    "responses_openai_tool_call": {"calls": ["buy oat milk"]},
}

# Chunks the fast path hands to the stock code, by recording: what it cannot read (a
# finish_reason outside the API's list, an event type the ``openai`` package does not know).
FALLBACKS = {
    "chat_ollama_missing_fields": 1,  # finish_reason "eos"
    "responses_compatible_missing_fields": 1,  # "response.vendor_progress"
}


def recording(name: str) -> bytes:
    return (STREAMS / f"{name}.sse").read_bytes()


def api_of(name: str) -> str:
    return "responses" if name.startswith("responses_") else "chat_completions"


# -- the user sees the same reply ------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


_VOLATILE = {"run_id", "conversation_id", "message_id", "id", "created_at", "updated_at"}


def normalized(value: Any) -> Any:
    """An event with what differs between two runs of the same reply (ids, times) blanked."""
    if isinstance(value, dict):
        return {k: "*" if k in _VOLATILE else normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalized(v) for v in value]
    return value


def volatile_blanked(body: bytes) -> bytes:
    """A request body with the tool results' task ids and times blanked (the two paths share a
    database and run at other times)."""
    body = re.sub(rb'(\\"(?:created_at|updated_at)\\": ?\\")[^"\\]*', rb"\1*", body)
    return re.sub(rb'(\\"id\\": ?)\d+', rb"\1*", body)


def reply_events(settings, fake: FakeOpenAI, name: str, fast_path: bool) -> tuple[list[dict], list[Received]]:
    """The chat events the user sees, and the requests the provider got."""
    fake.requests.clear()
    fake.script(Reply.replay(recording(name)))
    if "calls" in EXPECTED[name]:
        fake.script(Reply.say("All ", "set."))  # the model's turn after the tool results
    settings = msgspec.structs.replace(
        settings, openai_api_key=KEY, openai_base_url=fake.base_url, chat_model="fake-model",
        openai_api=api_of(name), provider_fast_path=fast_path,
    )
    user = "fast" if fast_path else "stock"  # each path starts from an empty list: the same task numbers
    with TestClient(create_app(settings), timeout=30) as client:
        response = client.post(f"/api/{user}/chat/stream", json={"message": "what is on my list?"}, headers=auth(user))
    assert response.status_code == 200, response.text
    return parse_frames(response.content), list(fake.requests)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("name", RECORDINGS)
def test_a_recorded_provider_stream_gives_the_same_chat_events_on_both_paths(settings, fake, name):
    stock, stock_requests = reply_events(settings, fake, name, fast_path=False)
    fast, fast_requests = reply_events(settings, fake, name, fast_path=True)

    assert normalized(fast) == normalized(stock)
    # The provider is asked the same: the same headers (another HTTP client sends them) and the
    # same JSON text (the conversation and tools are sent without the client's type walk).
    assert len(fast_requests) == len(stock_requests) >= 1
    for fast_request, stock_request in zip(fast_requests, stock_requests, strict=True):
        # (the length follows the tool results' times, which differ)
        assert fast_request.headers.keys() == stock_request.headers.keys()
        assert {**fast_request.headers, "content-length": ""} == {**stock_request.headers, "content-length": ""}
        assert volatile_blanked(fast_request.raw) == volatile_blanked(stock_request.raw)
    expected = EXPECTED[name]
    types = [event["type"] for event in fast]
    first_turn = fast[: types.index("tool_result")] if "tool_result" in types else fast
    assert "".join(e["content"] for e in first_turn if e["type"] == "text") == expected.get("text", "")
    assert [e["arguments"]["title"] for e in fast if e["type"] == "tool_call"] == expected.get("calls", [])
    assert [e["result"]["added"]["title"] for e in fast if e["type"] == "tool_result"] == expected.get("calls", [])
    assert [e["code"] for e in fast if e["type"] == "error"] == ([expected["error"]] if "error" in expected else [])
    assert fast[-1]["status"] == ("failed" if "error" in expected else "completed")
    if "usage" in expected:
        assert fast[-1]["usage"] == expected["usage"]


# -- event by event, chunk by chunk ---------------------------------------------------------------


async def _chunks(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def events_of(decoder: Any, pieces: list[bytes]) -> list[tuple]:
    async def collect() -> list[tuple]:
        return [(e.event, e.data, e.id, e.retry) async for e in decoder.aiter_bytes(_chunks(pieces))]

    return asyncio.run(collect())


@pytest.mark.parametrize("name", RECORDINGS)
def test_the_sse_decoder_yields_the_stock_events_however_the_bytes_are_cut(name):
    body = recording(name)
    frames = [frame for _, frame in _recorded_frames(body)]
    expected = events_of(SSEDecoder(), [body])
    assert len(expected) > 3
    assert events_of(LineFeedSSEDecoder(), frames) == expected
    for size in (1, 2, 7, 64, 1000):
        assert events_of(LineFeedSSEDecoder(), [body[i : i + size] for i in range(0, len(body), size)]) == expected


@pytest.mark.parametrize("body", [
    b"data: a\n\nid: 7\ndata: b\n\ndata: c\n\n",  # an id: the stock decoder from then on
    b"retry: 100\ndata: a\n\n",
    b"data: a\ndata: b\n\nevent: only-an-event\n\n\n\n\ndata:no-space\n\ndata: tail without blank line",
    b"data: a\n\n: a comment\n\ndata: b\r\n\r\n",
    b"data: \xc3\xa9t\xc3\xa9\n\nfield-without-colon\n\ndata: z\n\n",
])
def test_unusual_framing_is_decoded_as_the_stock_decoder_does(body):
    expected = events_of(SSEDecoder(), [body])
    for size in (1, 3, len(body)):
        assert events_of(LineFeedSSEDecoder(), [body[i : i + size] for i in range(0, len(body), size)]) == expected


def assert_same_object(fast: Any, stock: Any, where: str = "chunk") -> None:
    """The same types, values, set fields and extra fields, all the way down. A chat delta may
    also hold the fast path's ``None`` answers to the SDK's probes, which pydantic never shows."""
    assert type(fast) is type(stock), where
    if isinstance(stock, BaseModel):
        assert fast.model_fields_set == stock.model_fields_set, where
        assert fast.__pydantic_extra__ == stock.__pydantic_extra__, where
        answered = fast.__dict__.keys() - stock.__dict__.keys()
        if isinstance(stock, ChoiceDelta):
            # (none on a chunk the fast decoder handed to the stock code)
            assert answered in (set(), set(PROBED_BY_THE_SDK) - set(stock.__pydantic_extra__ or {})), where
            assert all(fast.__dict__[name] is None for name in answered), where
            assert (fast == stock, repr(fast), fast.model_dump_json()) == (True, repr(stock), stock.model_dump_json())
        else:
            assert not answered, where
        for key in stock.__dict__:
            assert_same_object(fast.__dict__[key], stock.__dict__[key], f"{where}.{key}")
    elif isinstance(stock, list | tuple):
        assert len(fast) == len(stock), where
        for index, (a, b) in enumerate(zip(fast, stock, strict=True)):
            assert_same_object(a, b, f"{where}[{index}]")
    elif isinstance(stock, dict):
        assert fast.keys() == stock.keys(), where
        for key in stock:
            assert_same_object(fast[key], stock[key], f"{where}[{key!r}]")
    else:
        assert fast == stock, where


@pytest.mark.parametrize("name", RECORDINGS)
def test_every_chunk_decodes_to_the_stock_object_or_falls_back(name):
    cast_to = ResponseStreamEvent if api_of(name) == "responses" else ChatCompletionChunk
    stock_client = AsyncOpenAI(api_key=KEY, base_url="http://127.0.0.1:9/v1")
    fast_client = FastDecodingAsyncOpenAI(api_key=KEY, base_url="http://127.0.0.1:9/v1")
    decode = fast_decoder(cast_to)
    fallbacks = decoded = 0

    async def events() -> list[ServerSentEvent]:
        frames = [frame for _, frame in _recorded_frames(recording(name))]
        return [sse async for sse in LineFeedSSEDecoder().aiter_bytes(_chunks(frames))]

    for sse in asyncio.run(events()):
        if sse.data.startswith("[DONE]"):
            continue
        if json.loads(sse.data).get("error"):  # the stream raises APIError instead: tested end to end
            assert sse.json().get("error")
            continue
        stock = stock_client._process_response_data(data=json.loads(sse.data), cast_to=cast_to, response=None)
        # What the stream hands over: the event's text (RawJSON), or a dict from the stock SSE decoder.
        for data in (sse.json(), json.loads(sse.data)):
            assert_same_object(fast_client._process_response_data(data=data, cast_to=cast_to, response=None), stock)
        try:
            assert_same_object(decode(sse.json()), stock)
            assert_same_object(decode(json.loads(sse.data)), stock)
            decoded += 1
        except Exception:  # noqa: BLE001 - counted: the fast decoder refused this chunk
            fallbacks += 1
    assert fallbacks == FALLBACKS.get(name, 0)
    assert decoded >= 3


def test_raw_json_reads_as_the_parsed_object():
    text = '{"id": "c1", "choices": [], "n": 1}'
    raw = RawJSON(text)
    assert raw.get("error") is None and raw._parsed is None  # answered without parsing
    assert dict(raw) == json.loads(text) and raw["n"] == 1 and len(raw) == 3
    assert RawJSON('{"error": {"message": "boom"}}').get("error") == {"message": "boom"}
    assert RawJSON('{"\\u0065rror": {"message": "spelled with an escape"}}').get("error") == {
        "message": "spelled with an escape"
    }
    with pytest.raises(json.JSONDecodeError):
        RawJSON('{"error": ').get("error")


# -- the openai internals the fast path relies on ------------------------------------------------


def test_the_openai_internals_the_fast_path_hooks_are_where_it_expects_them():
    """If this fails after an ``openai`` upgrade, domain/openai_stream_decoding.py needs a look."""
    # The stream calls the client's _process_response_data per chunk, and takes its SSE decoder
    # from _make_sse_decoder.
    stream_source = "".join(
        inspect.getsource(method) for method in (AsyncStream.__init__, AsyncStream._iter_events, AsyncStream.__stream__)
    )
    assert "self._client._process_response_data" in stream_source
    assert "client._make_sse_decoder()" in stream_source
    assert "self._decoder.aiter_bytes(" in stream_source
    assert list(inspect.signature(AsyncOpenAI._process_response_data).parameters) == [
        "self", "data", "cast_to", "response",
    ]
    assert "_make_sse_decoder" in vars(FastDecodingAsyncOpenAI)
    event = ServerSentEvent(event="e", data="d")
    assert (event.event, event.data, event.id, event.retry) == ("e", "d", None, None)
    # The stream types the agents SDK asks for are the ones decoded fast.
    from openai.resources.chat.completions import completions
    from openai.resources.responses import responses

    assert "stream_cls=AsyncStream[ChatCompletionChunk]" in inspect.getsource(completions)
    assert "stream_cls=AsyncStream[ResponseStreamEvent]" in inspect.getsource(responses)
    # Chat chunks are constructed (no validation) and Responses events validated against their
    # union first: the two decoders mirror exactly that.
    assert "return type_.construct(**value)" in inspect.getsource(construct_type)
    assert "return validate_type(type_=original_type or type_, value=value)" in inspect.getsource(construct_type)
    # The provider extensions the SDK's chat stream handler probes on a delta, beyond its fields,
    # are the ones the fast path answers, and each probe reads None as absent (the conformance
    # suite checks the events).
    handler = inspect.getsource(chatcmpl_stream_handler)
    probed = set(re.findall(r'(?:hasattr|getattr)\(delta, "(\w+)"', handler)) - set(ChoiceDelta.model_fields)
    assert probed == set(PROBED_BY_THE_SDK)
    for name in PROBED_BY_THE_SDK:
        for probe in re.findall(rf'[^\n]*(?:hasattr|getattr)\(delta, "{name}"[^\n]*', handler):
            assert re.search(rf'hasattr\(delta, "{name}"\) and delta\.{name}\b|getattr\(delta, "{name}", None\)'
                             rf'|if hasattr\(delta, "{name}"\):$', probe.strip()), probe
    # The output items and tools a Responses event carries are found by their "type" too.
    assert len(_OUTPUT_ITEMS) > 20 and len(_TOOLS) > 10
    carriers = {kind for kind, cls in responses_event_types().items() if _carries_unions(cls)}
    assert {"response.created", "response.output_item.added", "response.output_item.done", "response.completed"} <= carriers
    # Every member of the Responses event union is reachable by its "type".
    union = get_args(get_args(ResponseStreamEvent)[0])
    # Each member has a "type" of its own, so the member it names is the only one that can match.
    assert len(union) > 40 and len(responses_event_types()) == len(union)
    assert set(responses_event_types().values()) == set(union)


@pytest.mark.parametrize("fast_path", [True, False])
def test_provider_fast_path_chooses_the_client(fast_path):
    model, _, _ = build_model(ModelConfig(base_url="http://127.0.0.1:9/v1", fast_path=fast_path))
    assert (type(model._client) is FastDecodingAsyncOpenAI) is fast_path
    assert isinstance(model._client, AsyncOpenAI)
    # The fast path reads the provider's HTTP stream with aiohttp.
    assert isinstance(model._client._client._transport, AiohttpTransport) is fast_path


# -- the request body ----------------------------------------------------------------------------


class _Card(TypedDict, total=False):
    card_id: Required[Annotated[str, PropertyInfo(alias="cardID")]]


class _Params(TypedDict, total=False):
    cards: list[str | _Card]  # an alias deep down: the walk renames the key
    names: list[str]


def test_only_parameters_whose_types_have_no_alias_or_format_are_sent_unwalked():
    """If this fails after an ``openai`` upgrade, domain/openai_request_body.py needs a look."""
    # Both request types have none: everything but what ``create`` reads itself may be moved.
    assert movable(_RESPONSES) == set(get_type_hints(_RESPONSES)) - {"model", "stream"}
    assert movable(_CHAT_COMPLETIONS) == set(get_type_hints(_CHAT_COMPLETIONS)) - {"model", "stream", "response_format"}
    assert movable(_Params) == {"names"}


def test_a_value_that_is_not_plain_json_is_walked_and_the_callers_extra_body_wins():
    messages = [{"role": "user", "content": "hi"}]
    params = {"model": "m", "stream": True, "messages": messages, "tools": ({"type": "function"},),
              "stream_options": {"include_usage": True}, "seed": 1}
    assert _with_plain_body(params, _CHAT_COMPLETIONS) == {  # the tuple is the walk's; a number is cheap
        **params, "messages": [], "stream_options": {},
        "extra_body": {"messages": messages, "stream_options": {"include_usage": True}},
    }
    own = {"messages": [{"role": "user", "content": "mine"}], "seed": 2}
    assert _with_plain_body({**params, "tools": [], "extra_body": own}, _CHAT_COMPLETIONS)["extra_body"] == {
        "tools": [], "stream_options": {"include_usage": True}, **own,
    }
    model_value = {**params, "messages": [ChatCompletionChunk.model_construct()], "tools": []}
    assert _with_plain_body(model_value, _CHAT_COMPLETIONS)["extra_body"] == {
        "tools": [], "stream_options": {"include_usage": True},
    }


# -- the HTTP transport ----------------------------------------------------------------------------


async def _not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    await writer.drain()
    writer.close()


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.close()


async def _gzipped_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}]}
    body = gzip.compress(b"data: " + json.dumps(chunk).encode() + b"\n\ndata: [DONE]\n\n")
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: gzip\r\n"
                 b"content-length: %d\r\n\r\n" % len(body) + body)
    await writer.drain()
    writer.close()


@pytest.mark.parametrize("server", [_not_http, _hang_up, _gzipped_stream])
def test_a_misbehaving_provider_gets_the_same_answer_on_both_http_transports(server):
    async def ask(fast_path: bool) -> tuple[str, str] | list[str]:
        listener = await asyncio.start_server(server, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        model, _, _ = build_model(ModelConfig(api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1", fast_path=fast_path))
        try:
            stream = await model._client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
            return [chunk.choices[0].delta.content async for chunk in stream]
        except Exception as exc:  # noqa: BLE001 - the error is what is compared
            return type(exc).__name__, type(exc.__cause__).__name__
        finally:
            await close_model(model)
            listener.close()

    stock, fast = asyncio.run(ask(False)), asyncio.run(ask(True))
    assert fast == stock
    assert stock == (["Hello"] if server is _gzipped_stream else ("APIConnectionError", "RemoteProtocolError"))


# -- Responses events that carry items ---------------------------------------------------------


def _response_event(output: list[dict], tools: list[dict]) -> dict:
    response = json.loads(recording("responses_openai_text").decode().split("data: ", 1)[1].split("\n", 1)[0])["response"]
    return {"type": "response.completed", "sequence_number": 9, "response": {**response, "output": output, "tools": tools}}


_FUNCTION_TOOL = {"type": "function", "name": "add_task", "description": "Add a task.", "strict": True,
                  "parameters": {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}}
_CALL = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "add_task", "arguments": "{}",
         "status": "completed"}
_MESSAGE = {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": "Done.", "annotations": []}]}


@pytest.mark.parametrize("event", [
    _response_event([{"type": "reasoning", "id": "rs_1", "summary": []}, _CALL, _MESSAGE],
                    [_FUNCTION_TOOL, {"type": "web_search"}]),
    _response_event([_MESSAGE, {"type": "vendor_item", "id": "v_1"}], [{"type": "vendor_tool"}]),  # unknown types
    {"type": "response.output_item.done", "sequence_number": 3, "output_index": 0,
     "item": {**_CALL, "call_id": None}},  # an item its member refuses
    {"type": "response.output_item.added", "sequence_number": 2, "output_index": 0, "item": _CALL},
], ids=["tools-and-items", "unknown-types", "refused-item", "item-added"])
def test_the_items_and_tools_a_responses_event_carries_decode_to_the_stock_objects(event):
    text = json.dumps(event)
    stock = AsyncOpenAI(api_key=KEY, base_url="http://127.0.0.1:9/v1")._process_response_data(
        data=json.loads(text), cast_to=ResponseStreamEvent, response=None)
    decode = fast_decoder(ResponseStreamEvent)
    assert_same_object(decode(RawJSON(text)), stock)
    assert_same_object(decode(json.loads(text)), stock)
