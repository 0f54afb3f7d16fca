"""Cheaper decoding of the ``openai`` client's streamed chunks: the same typed objects, built faster.

The stock client parses every Server-Sent Event of a stream with ``json.loads`` and turns it
into its type with ``openai._models.construct_type``, a Python walk over the type's annotations:
≈ 100-160 µs per Chat Completions chunk here, most of a provider reply's CPU. For the two stream
types the agents SDK reads, this module builds the same objects with pydantic's compiled
validator, straight from the event's JSON text:

- ``ChatCompletionChunk`` (stock: ``construct``, no coercion) by *strict* validation, which
  coerces nothing either: it yields the stock object or fails;
- a Responses ``ResponseStreamEvent`` (stock: lax validation against the ~50-member union, then
  ``construct`` of the member its ``type`` names) by lax validation against that member alone
  (the output items and tools it carries, each against the member its ``type`` names), then the
  same ``construct``.

A chunk the fast decoder cannot read (a provider's ``finish_reason: "eos"``, a ``null`` where a
string belongs, an event type ``openai`` does not know…) is built by the stock code, for that
chunk only: the reply never fails for it. The SSE framing is split by a lean decoder for
``event:`` / ``data:`` / comment lines (LF or CRLF) and handed to the stock decoder at the first
``id:``, ``retry:`` or lone CR. A chat delta also answers the agents SDK's per-chunk probes for
provider extensions it lacks (``PROBED_BY_THE_SDK``) with ``None``, out of pydantic's sight.

The client built here (``make_client``) also reads the HTTP stream over aiohttp
(``domain/aiohttp_transport.py``) and sends the conversation without the client's type walk
(``domain/openai_request_body.py``).

These are internals of ``openai`` (the client's ``_process_response_data`` and
``_make_sse_decoder`` hooks, ``ServerSentEvent``, ``construct_type``), used here and nowhere
else; ``tests/test_provider_fast_path.py`` pins them, so an ``openai`` release that moves them
fails loudly there. ``PROVIDER_FAST_PATH=0`` builds the stock client instead.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import httpx2
import msgspec
from openai import DEFAULT_CONNECTION_LIMITS, AsyncOpenAI, DefaultAsyncHttpxClient
from openai._models import construct_type
from openai._streaming import ServerSentEvent, SSEDecoder
from openai.resources.chat import AsyncChat
from openai.resources.responses import AsyncResponses
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, ValidationError

from domain.aiohttp_transport import AiohttpTransport
from domain.openai_request_body import PlainBodyChat, PlainBodyResponses

log = logging.getLogger(__name__)

# A chunk from its JSON text (RawJSON) or parsed object (dict, from the stock SSE decoder).
Decode = Callable[["RawJSON | dict"], Any]


def _chat_chunk_decoder() -> Decode:
    # The stock client builds a chunk with ``construct`` (no coercion); strict validation
    # coerces nothing either, so what it accepts comes out the same. The validator is looked up
    # at each call: ``openai``'s models build theirs at first use (until then the class holds a
    # stand-in that rebuilds on every call).
    def decode(data: RawJSON | dict) -> Any:
        validator = ChatCompletionChunk.__pydantic_validator__
        if type(data) is RawJSON:
            chunk = validator.validate_json(data.text, strict=True)
        else:
            chunk = validator.validate_python(data, strict=True)
        _as_constructed(chunk)
        for choice in chunk.choices:
            _answer_probes(choice.delta)
        return chunk

    return decode


# Provider extensions the agents SDK's Chat Completions stream handler looks for on every
# chunk's delta (``hasattr`` / ``getattr(…, None)``), each read as "absent" when it is ``None``.
# A name the provider did not send is a miss, and a miss on a pydantic model goes through its
# ``__getattr__`` and an ``AttributeError``: ≈ 2 µs each, 8 of a chunk's ≈ 30 µs. So the fast
# path answers them: ``None`` in the delta's ``__dict__``, where pydantic does not look (not a
# field, not an extra: not in ``model_dump``, ``==``, ``repr`` or ``model_fields_set``). The pinning
# test checks this list against the handler's source; the conformance suite, that the events
# are the stock ones.
PROBED_BY_THE_SDK = ("thinking_blocks", "reasoning_content", "reasoning", "annotations")


def _answer_probes(delta: BaseModel) -> None:
    sent = delta.__pydantic_extra__ or {}
    attributes = delta.__dict__
    for name in PROBED_BY_THE_SDK:
        if name not in sent:
            attributes[name] = None


def _as_constructed(model: BaseModel) -> None:
    """Make a validated model's ``model_fields_set`` what ``construct_type`` gives.

    ``construct_type`` constructs a model reached by a plain model or list-of-models field
    (the chunk, its choices, their deltas), leaving a provider's extra keys (``reasoning_content``,
    ``stop_reason``…) out of the set fields; one under a union (``Optional[CompletionUsage]``)
    it validates, as here, extras included. So: unset the extras down the constructed fields only.
    """
    extra = model.__pydantic_extra__
    if extra:
        model.__pydantic_fields_set__.difference_update(extra)
    for name, is_list in _constructed_fields(type(model)):
        value = model.__dict__[name]
        if is_list and type(value) is list:
            for item in value:
                if isinstance(item, BaseModel):
                    _as_constructed(item)
        elif isinstance(value, BaseModel):
            _as_constructed(value)


@functools.cache
def _constructed_fields(cls: type[BaseModel]) -> tuple[tuple[str, bool], ...]:
    """The fields of ``cls`` that ``construct_type`` fills by constructing: (name, is a list)."""
    found = []
    for name, field in cls.model_fields.items():
        annotation = field.annotation
        if get_origin(annotation) is list and (args := get_args(annotation)):
            annotation, is_list = args[0], True
        else:
            is_list = False
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.append((name, is_list))
    return tuple(found)


def responses_event_types() -> dict[str, type[BaseModel]]:
    """Every member of the ``ResponseStreamEvent`` union, by the value of its ``type`` field."""
    union = get_args(ResponseStreamEvent)[0]  # Annotated[Union[...], PropertyInfo(discriminator="type")]
    by_type: dict[str, type[BaseModel]] = {}
    for member in get_args(union):
        annotation = member.model_fields["type"].annotation
        if get_origin(annotation) is Literal:
            for value in get_args(annotation):
                by_type[value] = member
    return by_type


class _Kind(msgspec.Struct):
    type: str


def _responses_event_decoder() -> Decode:
    # The stock client validates an event against the whole union (lax), trying its ~50 members
    # (≈ 80 µs), and when that fails constructs the member its "type" names. Only that member can
    # match (each has its own "type" literal: the pinning test checks), so validating against it
    # alone gives the same object, and constructing it when that fails too is the stock fallback.
    # The same holds one level down, for the output items and tools an event carries (see
    # ``_with_members``).
    members = responses_event_types()
    read_kind = msgspec.json.Decoder(_Kind).decode
    carriers = {kind for kind, cls in members.items() if _carries_unions(cls)}

    def decode(data: RawJSON | dict) -> Any:
        raw = type(data) is RawJSON
        kind = read_kind(data.text).type if raw else data["type"]
        validator = members[kind].__pydantic_validator__  # looked up each time: see _chat_chunk_decoder
        try:
            if kind in carriers:
                with contextlib.suppress(ValidationError):  # then as a whole, below
                    return validator.validate_python(_with_members(data.parsed() if raw else data))
            if raw:
                return validator.validate_json(data.text)
            return validator.validate_python(data)
        except ValidationError:
            return construct_type(type_=members[kind], value=data.parsed() if raw else data)

    return decode


def members_by_type(annotation: Any) -> dict[str, type[BaseModel]] | None:
    """The models of a union (or a list of one) by their ``type`` literal, if each has its own."""
    while get_origin(annotation) in (list, Annotated):
        annotation = get_args(annotation)[0]
    if get_origin(annotation) is not Union:
        return None
    by_type: dict[str, type[BaseModel]] = {}
    for member in get_args(annotation):
        field = member.model_fields.get("type") if isinstance(member, type) and issubclass(member, BaseModel) else None
        if field is None or not field.is_required() or get_origin(field.annotation) is not Literal:
            return None
        for value in get_args(field.annotation):
            if by_type.setdefault(value, member) is not member:
                return None
    return by_type


# The unions a Responses event carries that pydantic validates by trying their ~25 members in
# turn (≈ 40-60 µs an item, most of a reply's decoding): an event's output ``item``, and a
# response's ``output`` items and ``tools``.
_OUTPUT_ITEMS = members_by_type(Response.model_fields["output"].annotation) or {}
_TOOLS = members_by_type(Response.model_fields["tools"].annotation) or {}


def _carries_unions(cls: type[BaseModel]) -> bool:
    fields = cls.model_fields
    return ("item" in fields and members_by_type(fields["item"].annotation) == _OUTPUT_ITEMS) or (
        "response" in fields and fields["response"].annotation is Response)


def _with_members(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event with those items validated against the member their ``type`` names, which the
    union then takes as they are. An item of no known type is left to the union; one its member
    refuses raises, and the event is validated whole."""
    event = dict(event)
    if type(item := event.get("item")) is dict:
        event["item"] = _member(item, _OUTPUT_ITEMS)
    if type(response := event.get("response")) is dict:
        event["response"] = response = dict(response)
        for name, by_type in (("output", _OUTPUT_ITEMS), ("tools", _TOOLS)):
            if type(values := response.get(name)) is list:
                response[name] = [_member(value, by_type) for value in values]
    return event


def _member(value: Any, by_type: dict[str, type[BaseModel]]) -> Any:
    if type(value) is dict and (member := by_type.get(value.get("type"))) is not None:
        return member.__pydantic_validator__.validate_python(value)
    return value


# Keyed by identity: ``ResponseStreamEvent`` is an ``Annotated`` union, slow to hash.
_DECODERS: dict[int, Decode] = {
    id(ChatCompletionChunk): _chat_chunk_decoder(),
    id(ResponseStreamEvent): _responses_event_decoder(),
}


def fast_decoder(cast_to: Any) -> Decode | None:
    """The fast decoder of a stream's chunk type, if it has one. It raises on what it cannot read."""
    return _DECODERS.get(id(cast_to))


class FastDecodingAsyncOpenAI(AsyncOpenAI):
    """``AsyncOpenAI`` whose streamed chunks are decoded by the fast path, stock otherwise, and
    whose model requests are sent without the type walk (``domain/openai_request_body.py``)."""

    @functools.cached_property
    def responses(self) -> AsyncResponses:
        return PlainBodyResponses(self)

    @functools.cached_property
    def chat(self) -> AsyncChat:
        return PlainBodyChat(self)

    def _process_response_data(self, *, data: object, cast_to: Any, response: httpx2.Response) -> Any:
        decode = _DECODERS.get(id(cast_to))
        if decode is not None and type(data) in (RawJSON, dict) and not self._strict_response_validation:
            try:
                return decode(data)
            except Exception as exc:  # noqa: BLE001 - anything the fast path cannot read goes the stock way
                log.debug("chunk decoded the stock way: %s", exc)
        return super()._process_response_data(data=_parsed(data), cast_to=cast_to, response=response)

    def _make_sse_decoder(self) -> LineFeedSSEDecoder:
        return LineFeedSSEDecoder()


class LineFeedSSEDecoder:
    """Server-Sent Events of ``event:`` and ``data:`` lines (LF or CRLF), comments skipped.

    Yields what ``openai``'s ``SSEDecoder`` yields, as :class:`JSONEvent` values. At the first
    line it does not handle (an ``id:`` or ``retry:`` field, a lone CR, a field it does not
    know) it hands the rest of the stream, from the start of the pending event, to
    ``SSEDecoder``: both keep no state from one event to the next but ``id``, not seen before.
    """

    def iter_bytes(self, iterator: Iterator[bytes]) -> Iterator[ServerSentEvent]:
        # The async client never calls this; the stock decoder keeps the protocol complete.
        return SSEDecoder().iter_bytes(iterator)

    async def aiter_bytes(self, iterator: AsyncIterator[bytes]) -> AsyncIterator[ServerSentEvent]:
        buffer, cr = b"", b""
        async for chunk in iterator:
            if cr or b"\r" in chunk:
                chunk = cr + chunk
                cr = b"\r" if chunk.endswith(b"\r") else b""  # its LF may be in the next chunk
                chunk = chunk[: len(chunk) - len(cr)].replace(b"\r\n", b"\n")
                if b"\r" in chunk:  # a lone CR ends a line too: the stock decoder's business
                    async for sse in _stock_rest(buffer + chunk + cr, iterator):
                        yield sse
                    return
            buffer += chunk
            if b"\n\n" not in buffer:
                continue
            *blocks, buffer = buffer.split(b"\n\n")
            for index, block in enumerate(blocks):
                sse = _event(block)
                if sse is _UNHANDLED:
                    async for sse in _stock_rest(b"\n\n".join([*blocks[index:], buffer + cr]), iterator):
                        yield sse
                    return
                if sse is not None:
                    yield sse
        # The rest is an event without its blank line (a CR left over ends one more line): the
        # stock decoder decides what that is.
        if (buffer + cr).strip(b"\n"):
            async for sse in _stock_rest(buffer + cr, iterator):
                yield sse


class JSONEvent(ServerSentEvent):
    """An event whose ``json()`` parses only when something reads it (see :class:`RawJSON`)."""

    def json(self) -> Any:
        data = self.data
        if data.startswith("{"):
            return RawJSON(data)
        return json.loads(data)


class RawJSON(Mapping):
    """A JSON object's text, read as a mapping: parsed at the first read of a key.

    The stream reads one key of every chunk, ``"error"`` (a provider error mid-stream), then
    hands the chunk to ``_process_response_data``, which validates the text itself. The key is
    answered without parsing when the text cannot hold it: no ``"error"`` in it, and no string
    starting with an escape (which could spell it). Anything else parses the text, so the mapping
    reads as ``json.loads`` of it would (invalid JSON raises the same error, at its first read).
    """

    __slots__ = ("_parsed", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._parsed: dict | None = None

    def parsed(self) -> dict:
        if self._parsed is None:
            self._parsed = json.loads(self.text)
        return self._parsed

    def get(self, key: str, default: Any = None) -> Any:
        if key == "error" and '"error"' not in self.text and '"\\u' not in self.text:
            return default
        return self.parsed().get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.parsed()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.parsed())

    def __len__(self) -> int:
        return len(self.parsed())


def _parsed(data: object) -> object:
    """What the stock code expects: ``json.loads`` of the event, also inside the envelope
    ``{"data": …, "event": …}`` some streams (not the agents SDK's) are given."""
    if type(data) is RawJSON:
        return data.parsed()
    if type(data) is dict and type(data.get("data")) is RawJSON:
        return {**data, "data": data["data"].parsed()}
    return data


_UNHANDLED = ServerSentEvent()


def _value(line: bytes, name_length: int) -> str:
    value = line[name_length:]
    return (value[1:] if value.startswith(b" ") else value).decode()


def _event(block: bytes) -> ServerSentEvent | None:
    """One event's lines; ``_UNHANDLED`` for any line the stock decoder must read."""
    event = None
    data: list[str] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(_value(line, 5))
        elif line.startswith(b"event:"):
            event = _value(line, 6)
        elif line and not line.startswith(b":"):  # a comment line means nothing
            return _UNHANDLED
    if event is None and not data:
        return None
    return JSONEvent(event=event, data="\n".join(data))


async def _stock_rest(head: bytes, iterator: AsyncIterator[bytes]) -> AsyncIterator[ServerSentEvent]:
    async def chunks() -> AsyncIterator[bytes]:
        if head:
            yield head
        async for chunk in iterator:
            yield chunk

    async for sse in SSEDecoder().aiter_bytes(chunks()):
        yield sse


def make_client(fast_path: bool, **options: Any) -> AsyncOpenAI:
    """The stock client, or the fast path: this decoding over the aiohttp transport."""
    if not fast_path:
        return AsyncOpenAI(**options)
    # The client's own defaults (timeouts, connection limits, redirects), another transport.
    http_client = DefaultAsyncHttpxClient(transport=AiohttpTransport(limits=DEFAULT_CONNECTION_LIMITS))
    return FastDecodingAsyncOpenAI(http_client=http_client, **options)
