"""The built-in offline model: a real ``agents`` Model, so the real Runner drives it,
the real tools run, and text streams as Responses API events, without any network."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from agents import Model, ModelResponse, ModelSettings, ModelTracing, Tool, Usage
from agents.items import TResponseInputItem, TResponseStreamEvent
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseFunctionToolCall,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseTextDeltaEvent,
    ResponseUsage,
)

from domain import offline_intents

MODEL_NAME = "offline-todo"
_PIECE = re.compile(r"\S+\s*|\s+")


def _field(item: Any, key: str) -> Any:
    return item.get(key) if isinstance(item, dict) else getattr(item, key, None)


def _user_text(item: Any) -> str:
    content = _field(item, "content")
    if isinstance(content, str):
        return content
    return "".join(_field(part, "text") or "" for part in content or [])


class _Turn:
    """What the model decided to say for one request: a tool call or text."""

    def __init__(self, items: list[TResponseInputItem], tools: Sequence[Tool] = ()):
        self.call: offline_intents.ToolIntent | None = None
        self.text = ""
        calls = {_field(i, "call_id"): i for i in items if _field(i, "type") == "function_call"}
        last = items[-1] if items else None
        if last is not None and _field(last, "type") == "function_call_output":
            call = calls.get(_field(last, "call_id"))
            name = _field(call, "name") if call else ""
            arguments = json.loads(_field(call, "arguments") or "{}") if call else {}
            self.text = offline_intents.reply(name, arguments, str(_field(last, "output")))
            return
        user = next((i for i in reversed(items) if _field(i, "role") == "user"), None)
        decided = offline_intents.parse(_user_text(user) if user else "", self._last_list(items, calls),
                                        [tool.name for tool in tools])
        if isinstance(decided, str):
            self.text = decided
        else:
            self.call = decided

    @staticmethod
    def _last_list(items: list[TResponseInputItem], calls: dict) -> list[dict] | None:
        for item in reversed(items):
            if _field(item, "type") != "function_call_output":
                continue
            call = calls.get(_field(item, "call_id"))
            if call is not None and _field(call, "name") == "list_tasks":
                try:
                    return json.loads(str(_field(item, "output")))["tasks"]
                except (ValueError, KeyError, TypeError):
                    return None
        return None


class OfflineModel(Model):
    """Stateless between calls: one instance serves every concurrent run."""

    def __init__(self, token_delay_s: float = 0.02):
        self.token_delay_s = token_delay_s

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: Any,
        handoffs: list[Any],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        prompt: Any | None = None,
    ) -> ModelResponse:
        items = _as_items(input)
        turn = _Turn(items, tools)
        output = [_function_call(turn.call)] if turn.call else [_message(f"msg_{uuid.uuid4().hex}", turn.text)]
        usage = _usage(items, turn)
        return ModelResponse(
            output=output,
            usage=Usage(requests=1, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                        total_tokens=usage.total_tokens),
            response_id=None,
        )

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: Any,
        handoffs: list[Any],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        prompt: Any | None = None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        items = _as_items(input)
        turn = _Turn(items, tools)
        response = _response([], _usage(items, turn))
        seq = iter(range(1_000_000))
        yield ResponseCreatedEvent(type="response.created", response=response, sequence_number=next(seq))
        if turn.call is not None:
            item = _function_call(turn.call)
            yield ResponseOutputItemAddedEvent(
                type="response.output_item.added", item=item, output_index=0, sequence_number=next(seq)
            )
            yield ResponseFunctionCallArgumentsDoneEvent(
                type="response.function_call_arguments.done", item_id=item.id or "", output_index=0,
                arguments=item.arguments, name=item.name, sequence_number=next(seq),
            )
        else:
            item_id = f"msg_{uuid.uuid4().hex}"
            empty = ResponseOutputText(type="output_text", text="", annotations=[], logprobs=[])
            yield ResponseOutputItemAddedEvent(
                type="response.output_item.added", item=_message(item_id, "", "in_progress"), output_index=0,
                sequence_number=next(seq),
            )
            yield ResponseContentPartAddedEvent(
                type="response.content_part.added", item_id=item_id, output_index=0, content_index=0,
                part=empty, sequence_number=next(seq),
            )
            # Pieces are due on the model's own clock, as a provider's tokens arrive whatever
            # the server is doing: a loaded loop that wakes late gets the overdue ones at once
            # instead of slowing the model down.
            loop = asyncio.get_running_loop()
            due = loop.time()
            for n, piece in enumerate(_PIECE.findall(turn.text)):
                if n and self.token_delay_s > 0:
                    due += self.token_delay_s
                    await asyncio.sleep(max(0.0, due - loop.time()))
                yield ResponseTextDeltaEvent(
                    type="response.output_text.delta", item_id=item_id, output_index=0, content_index=0,
                    delta=piece, logprobs=[], sequence_number=next(seq),
                )
            item = _message(item_id, turn.text)
            yield ResponseContentPartDoneEvent(
                type="response.content_part.done", item_id=item_id, output_index=0, content_index=0,
                part=item.content[0], sequence_number=next(seq),
            )
        yield ResponseOutputItemDoneEvent(
            type="response.output_item.done", item=item, output_index=0, sequence_number=next(seq)
        )
        response.output = [item]
        yield ResponseCompletedEvent(type="response.completed", response=response, sequence_number=next(seq))


def _as_items(input: str | list[TResponseInputItem]) -> list[TResponseInputItem]:
    return [{"role": "user", "content": input}] if isinstance(input, str) else list(input)


def _function_call(intent: offline_intents.ToolIntent) -> ResponseFunctionToolCall:
    arguments = {k: v for k, v in intent.arguments.items() if v is not None}
    return ResponseFunctionToolCall(
        type="function_call", id=f"fc_{uuid.uuid4().hex}", call_id=f"call_{uuid.uuid4().hex}",
        name=intent.name, arguments=json.dumps(arguments), status="completed",
    )


def _message(item_id: str, text: str, status: str = "completed") -> ResponseOutputMessage:
    return ResponseOutputMessage(
        type="message", id=item_id, role="assistant", status=status,
        content=[ResponseOutputText(type="output_text", text=text, annotations=[], logprobs=[])],
    )


def _usage(items: list[TResponseInputItem], turn: _Turn) -> ResponseUsage:
    # A rough four-characters-a-token estimate: enough for usage accounting to be exercised.
    input_tokens = sum(len(json.dumps(i, default=str)) for i in items) // 4
    output_tokens = max(1, len(turn.text) // 4) if turn.call is None else 10
    return ResponseUsage.model_validate({
        "input_tokens": input_tokens, "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0},
    })


def _response(output: list, usage: ResponseUsage) -> Response:
    return Response(
        id=f"resp_{uuid.uuid4().hex}", created_at=0, model=MODEL_NAME, object="response", output=output,
        tool_choice="auto", tools=[], top_p=None, parallel_tool_calls=False, usage=usage,
    )
