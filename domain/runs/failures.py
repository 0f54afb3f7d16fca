"""Why a run failed, as a stable code and a message that is safe to show (no keys, no traces).

The ``openai`` client wraps transport failures in its own exceptions (``APIConnectionError``,
``APITimeoutError``), even mid-stream; the raw ``httpx2`` ones are only a fallback. Check
timeouts first: ``APITimeoutError`` is an ``APIConnectionError``.
"""

from __future__ import annotations

import httpx2
import openai
from agents.exceptions import MaxTurnsExceeded, ModelBehaviorError, ModelTimeoutError

from domain.errors import ChatError

UNAVAILABLE = "The model provider could not be reached. Please try again."


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
    if isinstance(exc, (openai.APIError, ModelBehaviorError)):
        # An error event inside the stream, or a reply the SDK could not use.
        return "model_error", "The model provider returned an unusable reply. Please try again."
    return "internal_error", "Something went wrong while writing the reply."
