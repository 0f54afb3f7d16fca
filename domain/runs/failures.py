"""Why a run failed, as a stable code and a message that is safe to show (no keys, no traces).

The ``openai`` client wraps transport failures in its own exceptions (``APIConnectionError``,
``APITimeoutError``), even mid-stream; the raw ``httpx2`` ones are only a fallback. Check
timeouts first: ``APITimeoutError`` is an ``APIConnectionError``.
"""

from __future__ import annotations

import sys

import httpx2
import openai
from agents.exceptions import MaxTurnsExceeded, ModelBehaviorError, ModelTimeoutError

from domain.errors import ChatError

UNAVAILABLE = "The model provider could not be reached. Please try again."
UNUSABLE = "The model provider returned an unusable reply. Please try again."

# The code that reads the provider's reply: the client's SSE decoding and chunk types, the fast
# path's decoders, the SDK's models turning chunks into events. What fails in there on a chunk
# that is not JSON, or not the shape its type says (a ``JSONDecodeError``, an ``AttributeError``
# on a list where a chunk belongs), is the provider's unusable reply, not a bug here.
_READING_THE_REPLY = ("openai.", "agents.models.", "domain.openai_stream_decoding")


def classify(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, ChatError):
        return exc.code, exc.message
    if isinstance(exc, MaxTurnsExceeded):
        return "max_turns", "The assistant took too many steps for this request and was stopped."
    if isinstance(exc, (openai.APITimeoutError, ModelTimeoutError, TimeoutError, httpx2.TimeoutException)):
        return "model_timeout", "The model took too long to answer. Please try again."
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return "model_auth", "The server's model credentials were rejected by the model provider."
    if isinstance(exc, openai.RateLimitError):
        return "model_rate_limited", "The model provider is rate-limiting requests. Please try again shortly."
    if isinstance(exc, (openai.APIConnectionError, openai.InternalServerError, httpx2.TransportError)):
        return "model_unavailable", UNAVAILABLE
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500:
            return "model_unavailable", UNAVAILABLE
        return "model_error", f"The model provider refused the request (HTTP {exc.status_code})."
    if isinstance(exc, (openai.APIError, ModelBehaviorError)) or raised_reading_the_reply(exc):
        # An error event inside the stream, or a reply the SDK (or this server) could not use.
        return "model_error", UNUSABLE
    return "internal_error", "Something went wrong while writing the reply."


def raised_reading_the_reply(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside the code that reads the provider's reply: its innermost
    frame outside the standard library (``json`` raises for ``openai``) is in that code. Only
    the innermost: every model's stream, this server's offline one too, passes through the
    SDK's ``agents.models`` on its way out."""
    raised_in, frames = "", exc.__traceback__
    while frames is not None:
        module = frames.tb_frame.f_globals.get("__name__", "")
        if module.partition(".")[0] not in sys.stdlib_module_names:
            raised_in = module
        frames = frames.tb_next
    return raised_in.startswith(_READING_THE_REPLY)
