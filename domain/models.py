"""Model providers: the built-in offline model, OpenAI, or any OpenAI-compatible server."""

from __future__ import annotations

import weakref
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec
from agents import (
    Model,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    set_tracing_disabled,
    set_tracing_export_api_key,
)
from openai import AsyncOpenAI

from domain.offline_model import MODEL_NAME as OFFLINE_MODEL_NAME
from domain.offline_model import OfflineModel
from domain.openai_stream_decoding import make_client

DEFAULT_OPENAI_MODEL = "gpt-4.1-mini"

# The client build_model made for each model, for close_model: the SDK's models keep theirs in
# a private attribute, and their public close() leaves it open.
_CLIENTS: weakref.WeakKeyDictionary[Model, AsyncOpenAI] = weakref.WeakKeyDictionary()


class ModelConfig(msgspec.Struct, frozen=True, kw_only=True):
    api_key: str | None = None
    base_url: str | None = None
    model: str | None = None
    api: Literal["responses", "chat_completions"] | None = None
    timeout_s: float = 60.0
    offline_token_delay_ms: float = 20.0
    # Decode the provider's streamed chunks with pydantic's compiled validator (see
    # domain/openai_stream_decoding.py); False: the openai client's stock decoding.
    fast_path: bool = True


class ModelProvider(msgspec.Struct, frozen=True, kw_only=True):
    """Which model answers, described without secrets (for logs and /health)."""

    name: Literal["offline", "openai", "openai-compatible"]
    model_name: str
    api: str
    base_url: str | None = None


def build_model(config: ModelConfig) -> tuple[Model, ModelSettings, ModelProvider]:
    """No key and no base URL: the offline model. Otherwise OpenAI or a compatible server;
    compatible servers speak Chat Completions unless told otherwise."""
    if not config.api_key and not config.base_url:
        provider = ModelProvider(name="offline", model_name=OFFLINE_MODEL_NAME, api="offline")
        return OfflineModel(config.offline_token_delay_ms / 1000), ModelSettings(), provider
    name = "openai-compatible" if config.base_url else "openai"
    api = config.api or ("chat_completions" if config.base_url else "responses")
    model_name = config.model or DEFAULT_OPENAI_MODEL
    # Retries would hide a failing provider behind long waits; the client sees an error
    # event at once and can retry itself.
    client = make_client(
        config.fast_path,
        api_key=config.api_key or "not-needed", base_url=config.base_url, timeout=config.timeout_s, max_retries=0,
    )
    provider = ModelProvider(name=name, model_name=model_name, api=api, base_url=public_url(config.base_url))
    if api == "chat_completions":
        model: Model = OpenAIChatCompletionsModel(model=model_name, openai_client=client)
        settings = ModelSettings(include_usage=True)
    else:
        model, settings = OpenAIResponsesModel(model=model_name, openai_client=client), ModelSettings()
    _CLIENTS[model] = client
    return model, settings, provider


def public_url(url: str | None) -> str | None:
    """A base URL fit for logs and /health: without ``user:password@``, query or fragment."""
    if not url:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def configure_tracing(enabled: bool, config: ModelConfig) -> None:
    """Tracing is off unless asked for: with it on, the SDK uploads every run to OpenAI.

    Runs also pass ``tracing_disabled``; switching it off process-wide as well keeps the
    SDK's exporter idle. Traces go to OpenAI, so only an OpenAI key (no custom base URL)
    is given to the exporter; a compatible server's key means nothing there.
    """
    set_tracing_disabled(not enabled)
    if enabled and config.api_key and not config.base_url:
        set_tracing_export_api_key(config.api_key)


async def close_model(model: Model) -> None:
    """Close the HTTP connections of the client :func:`build_model` made for ``model``, at shutdown.

    Left to the garbage collector, the client schedules its close on an event loop that has
    already stopped ("Event loop is closed").
    """
    client = _CLIENTS.pop(model, None)
    if client is not None:
        await client.close()
