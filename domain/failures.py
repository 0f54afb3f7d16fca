"""Why a run failed, as a stable code and a message that is safe to show (no keys, no traces)."""

from __future__ import annotations

import asyncio

import httpx
import openai
from agents.exceptions import MaxTurnsExceeded

from domain.errors import ChatError


def classify(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, ChatError):
        return exc.code, exc.message
    if isinstance(exc, MaxTurnsExceeded):
        return "max_turns", "The assistant took too many steps for this request and was stopped."
    if isinstance(exc, (openai.APITimeoutError, asyncio.TimeoutError, httpx.TimeoutException)):
        return "model_timeout", "The model took too long to answer. Please try again."
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return "model_auth", "The server's model credentials were rejected by the model provider."
    if isinstance(exc, openai.RateLimitError):
        return "model_rate_limited", "The model provider is rate-limiting requests. Please try again shortly."
    if isinstance(exc, (openai.APIConnectionError, openai.InternalServerError, httpx.TransportError)):
        return "model_unavailable", "The model provider could not be reached. Please try again."
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500:
            return "model_unavailable", "The model provider could not be reached. Please try again."
        return "model_error", f"The model provider refused the request (HTTP {exc.status_code})."
    return "internal_error", "Something went wrong while writing the reply."
