"""A model request's body sent as it is, without the ``openai`` client's walk over its types.

Before each request the client passes its parameters through ``async_maybe_transform``, which
walks the value beside the parameter type, trying every member of every union (the Responses
input union has ~25): ≈ 1.3 ms of CPU for the Todo agent's Responses request, 0.6 ms for Chat
Completions, the same on every turn. The walk renames aliased keys, formats dates and files,
dumps pydantic models and drops omitted values; the request types of the two APIs have no alias
or format anywhere, so for a value made only of JSON (dicts, lists, strings, numbers, booleans,
null) it returns an equal value.

So the fast client's ``responses`` and ``chat.completions`` hand such values (the lists and
objects among the parameters: the conversation, the tools, options) to ``create`` as
``extra_body`` (public: "additional parameters", merged into the JSON body unwalked), and
everything else as given. The body sent is the same JSON text; ``tests/test_provider_fast_path.py``
compares the bodies both paths send.

Whether a type has an alias or format is read from ``openai``'s ``PropertyInfo`` annotations,
an internal: if that reading finds one, or cannot be made, nothing is moved.
"""

from __future__ import annotations

import functools
import logging
import typing
from typing import Annotated, Any, get_args, get_origin

import typing_extensions
from openai._utils import PropertyInfo, is_typeddict
from openai._utils._transform import get_type_hints
from openai.resources.chat import AsyncChat, AsyncCompletions
from openai.resources.responses import AsyncResponses
from openai.types.chat import completion_create_params
from openai.types.responses import response_create_params

log = logging.getLogger(__name__)

_RESPONSES = response_create_params.ResponseCreateParamsStreaming
_CHAT_COMPLETIONS = completion_create_params.CompletionCreateParamsStreaming
# Read by ``create`` itself, not only sent: kept where they are.
_KEPT = frozenset({"model", "stream", "response_format"})

_JSON_SCALARS = (str, int, float, bool, type(None))
_WRAPPERS = {Annotated, typing.Required, typing.NotRequired, typing_extensions.Required, typing_extensions.NotRequired}


def _is_plain_json(value: object) -> bool:
    kind = type(value)
    if kind is dict:
        return all(type(key) is str and _is_plain_json(item) for key, item in value.items())
    if kind is list:
        return all(_is_plain_json(item) for item in value)
    return kind in _JSON_SCALARS


@functools.cache
def movable(params_type: type) -> frozenset[str]:
    """The parameters whose type has no alias or format anywhere below it."""
    try:
        hints = get_type_hints(params_type, include_extras=True)
        return frozenset(name for name, hint in hints.items() if not _has_property_info(hint, set())) - _KEPT
    except Exception:  # noqa: BLE001 - an openai that reads its types differently: move nothing
        log.warning("request parameters of %s are sent the stock way", params_type.__name__, exc_info=True)
        return frozenset()


def _has_property_info(annotation: Any, seen: set[int]) -> bool:
    if id(annotation) in seen:
        return False
    seen.add(id(annotation))
    inner = annotation
    while (origin := get_origin(inner)) in _WRAPPERS:  # Required[Annotated[X, PropertyInfo(...)]]…
        for meta in getattr(inner, "__metadata__", ()):
            if isinstance(meta, PropertyInfo) and (meta.alias is not None or meta.format is not None):
                return True
        inner = inner.__origin__ if origin is Annotated else get_args(inner)[0]
    if is_typeddict(inner):
        return any(_has_property_info(hint, seen) for hint in get_type_hints(inner, include_extras=True).values())
    return any(_has_property_info(arg, seen) for arg in get_args(inner))


def _with_plain_body(params: dict[str, Any], params_type: type) -> dict[str, Any]:
    names = movable(params_type)
    moved = {name: value for name, value in params.items()
             if name in names and type(value) in (list, dict) and _is_plain_json(value)}
    if not moved:
        return params
    # Each moved parameter stays, as an empty list or object, for ``create``'s required-argument
    # check and so that the body keeps its keys in their order: ``extra_body`` replaces the
    # value, and the caller's own ``extra_body`` still wins over the parameters, as in the stock
    # client.
    placeholders = {name: type(value)() for name, value in moved.items()}
    return {**params, **placeholders, "extra_body": {**moved, **(params.get("extra_body") or {})}}


class PlainBodyResponses(AsyncResponses):
    async def create(self, **params: Any) -> Any:
        if params.get("stream") is True:
            params = _with_plain_body(params, _RESPONSES)
        return await super().create(**params)


class PlainBodyCompletions(AsyncCompletions):
    async def create(self, **params: Any) -> Any:
        if params.get("stream") is True:
            params = _with_plain_body(params, _CHAT_COMPLETIONS)
        return await super().create(**params)


class PlainBodyChat(AsyncChat):
    @functools.cached_property
    def completions(self) -> AsyncCompletions:
        return PlainBodyCompletions(self._client)
