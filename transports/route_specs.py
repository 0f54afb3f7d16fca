"""What the routes declare for the OpenAPI document beyond their types: the errors they answer
(from the one table, ``transports/http_errors.py``), their event streams, and the bounds the
domain checks on text. Nothing here is raised or enforced."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Schema
from litestar.plugins import OpenAPISchemaPlugin
from litestar.typing import FieldDefinition

from domain.errors import (
    AlreadyDecided,
    LimitExceeded,
    NotFound,
    QuotaExceeded,
    RunActive,
    RunFinished,
    ShuttingDown,
)
from domain.events import Event

# Errors a route that starts a reply can answer, besides every API route's (http_errors.API).
CHAT_ERRORS = (NotFound, RunActive, RunFinished, AlreadyDecided, "too_large", LimitExceeded, QuotaExceeded,
               ShuttingDown)
# Errors a route that follows a reply can answer: no such run, too many open streams, stopping.
FOLLOW_ERRORS = (NotFound, LimitExceeded, ShuttingDown)

# The domain's rules on text (``domain/limits.py``: no NUL, which PostgreSQL cannot store;
# not blank), stated for the document as JSON Schema ``pattern``s. Blank is what Python's
# ``str.strip`` removes, spelled out: ``\\s`` differs between regex engines (Rust's, which
# validators use, leaves out U+001C to U+001F).
_SPACES = "".join(f"\\u{code:04x}" for code in range(0x10000) if chr(code).isspace())
TEXT = {"pattern": "^[^\\u0000]*$"}
NOT_BLANK = {"pattern": f"^[^\\u0000]*[^{_SPACES}\\u0000][^\\u0000]*$"}


# -- event streams ------------------------------------------------------------------------

class EventFrame:
    """One server-sent event of a stream whose ``data`` is JSON of ``event`` (subclass with
    ``event_stream()``). Documented as OpenAPI 3.2 describes an event stream's items: the event
    (``data``, ``id``, ``event``, ``retry``), its ``data`` a JSON document of the given schema
    (``contentMediaType`` + ``contentSchema``), so a validator checks each event's payload."""

    event: ClassVar[Any]
    done_marker: ClassVar[str | None] = None


def event_stream(event: Any, *, name: str, done_marker: str | None = None) -> type[EventFrame]:
    """The frame type of a stream of ``event`` JSON (``done_marker``: a literal last ``data``)."""
    return type(name, (EventFrame,), {"event": event, "done_marker": done_marker})


class EventFrameSchemaPlugin(OpenAPISchemaPlugin):
    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        return field_definition.is_subclass_of(EventFrame)

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        frame: type[EventFrame] = field_definition.annotation
        payload = schema_creator.for_field_definition(FieldDefinition.from_annotation(frame.event))
        data = Schema(type="string", content_media_type="application/json", content_schema=payload)
        if frame.done_marker is not None:
            data = Schema(any_of=[data, Schema(type="string", const=frame.done_marker)])
        return Schema(
            type="object", required=["data"],
            properties={"data": data, "id": Schema(type="string"), "event": Schema(type="string"),
                        "retry": Schema(type="integer", minimum=0)},
            description=f"One server-sent event; its `data` is a `{getattr(frame.event, '__name__', 'JSON')}` as JSON.",
        )


class StrictStructSchemaPlugin(OpenAPISchemaPlugin):
    """Litestar's msgspec Struct schema, plus what it leaves out: ``additionalProperties:
    false`` for a Struct that refuses unknown fields, and a Struct's own schema keywords
    (``__schema_extra__``, for rules across fields that no single field can state)."""

    def __init__(self) -> None:
        # Litestar's own plugin, from a private module (litestar<3 pins it; tests/test_openapi.py
        # fails should it move or change what it returns).
        from litestar._openapi.schema_generation.plugins import StructSchemaPlugin

        self._struct = StructSchemaPlugin()

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        return self._struct.is_plugin_supported_field(field_definition)

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        schema = self._struct.to_openapi_schema(field_definition, schema_creator)
        struct = field_definition.type_
        if struct.__struct_config__.forbid_unknown_fields:
            schema.additional_properties = False
        for key, value in getattr(struct, "__schema_extra__", {}).items():
            setattr(schema, key, value)
        return schema


OPENAPI_PLUGINS = [EventFrameSchemaPlugin(), StrictStructSchemaPlugin()]

PlainFrame = event_stream(Event, name="ChatEventFrame")
SSE_RESPONSE = {
    200: ResponseSpec(
        data_container=PlainFrame,
        media_type="text/event-stream",
        generate_examples=False,
        description=(
            "A stream of `data: <event JSON>\\n\\n` frames, one chat event each (this schema), "
            "from `start` to exactly one `done`, with `: ping` comments while idle."
        ),
    )
}
RESUME_RESPONSE = {
    200: ResponseSpec(
        data_container=PlainFrame,
        media_type="text/event-stream",
        generate_examples=False,
        description="Frames `id: <seq>\\ndata: <event JSON>\\n\\n` after the given seq, then live until `done`.",
    )
}


class Waiting(msgspec.Struct, frozen=True):
    """A decision recorded while other calls of the run still wait for theirs."""

    waiting_for: list[str]


APPROVAL_RESPONSE = {
    **SSE_RESPONSE,
    202: ResponseSpec(data_container=Waiting, description="Recorded; the continuation starts once these calls are decided."),
}
