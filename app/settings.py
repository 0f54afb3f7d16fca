"""Settings from the environment (and a ``.env`` file), validated once at start-up."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from dotenv import dotenv_values

Positive = Annotated[int, msgspec.Meta(gt=0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]


class MCPServerSetting(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One entry of ``MCP_SERVERS``: a remote MCP server (Streamable HTTP) whose tools join the
    agent's, named to the model ``<name>__<tool>``."""

    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")]
    url: Annotated[str, msgspec.Meta(pattern=r"^https?://\S+$")]
    headers: dict[str, str] = msgspec.field(default_factory=dict)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every field is read from the environment variable of the same name in upper case."""

    data_dir: str = "data"
    database_url: str = ""  # default: sqlite:///<DATA_DIR>/chat.sqlite3
    # PostgreSQL: how long to wait for a server that does not answer before answering 503.
    database_connect_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0  # opening a connection
    database_acquire_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0  # a pool connection, opening included
    database_statement_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0  # each statement, COMMIT included
    database_health_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 3.0  # /health's SELECT 1
    jwt_secret: str | None = None
    # An identity provider's JWKS (EdDSA, RS256, ES256 tokens); works beside JWT_SECRET (HS256).
    jwt_jwks_url: str | None = None
    jwt_jwks_refresh_s: Annotated[float, msgspec.Meta(ge=0)] = 30.0  # min. gap between refetches on an unknown kid
    jwt_jwks_max_age_s: Annotated[float, msgspec.Meta(gt=0)] = 3600.0  # refetch keys at least this often
    jwt_issuer: str | None = None  # when set, every token's iss must equal it
    jwt_audience: str | None = None  # when set, every token's aud must contain it
    jwt_leeway_s: Annotated[float, msgspec.Meta(ge=0)] = 5.0  # clock skew allowed on exp, nbf, iat
    cors_origins: str = ""  # comma-separated browser origins allowed cross-origin; default: none (no CORS headers)
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    chat_model: str | None = None
    openai_api: Literal["responses", "chat_completions"] | None = None
    openai_agents_tracing: bool = False
    provider_fast_path: bool = True  # decode a provider's streamed chunks the fast way (0: the openai client's own)
    # Tools that wait for the user's yes: a comma list of tool names, "all" or "none".
    tool_approval: str = "delete_task"
    # Remote MCP servers whose tools join the agent's: a JSON list of {"name", "url", "headers"},
    # ${VAR} in a URL or header taken from the environment.
    mcp_servers: list[MCPServerSetting] = msgspec.field(default_factory=list)
    mcp_tools_refresh_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0  # a server's tool list is read again this often
    mcp_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0  # one request to an MCP server, a tool call included
    model_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    offline_token_delay_ms: NonNegative = 20.0
    redis_url: str | None = None
    # The broker (Redis, or PostgreSQL's NOTIFY): how long a publish, a connection or a ping
    # may take before the broker counts as away.
    broker_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    max_message_bytes: Positive = 16 * 1024
    max_body_bytes: Positive = 256 * 1024
    max_ws_frame_bytes: Positive = 64 * 1024
    max_turns: Positive = 10
    max_active_runs_per_user: Positive = 4
    messages_per_minute: Positive = 30
    tokens_per_day: Positive | None = None  # input + output tokens per user per UTC day; unset: no quota
    max_run_duration_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    run_lease_s: Annotated[float, msgspec.Meta(gt=0)] = 15.0
    sse_ping_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 15.0
    # A follower of a run on another instance is woken by that instance's notices; it also reads
    # the store this often, in case a notice was lost.
    follow_poll_s: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    # Stop asked on another instance is stored on the run's row too: the instance running it reads
    # those this often while no broker tells it (none, or away); with one, every FOLLOW_POLL_S.
    cancel_poll_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    max_followers_per_user: Positive = 32  # open streams and socket subscriptions of one user at once
    send_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0  # a client that reads nothing this long is dropped
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"  # json: one JSON object a line
    public_url: str = "http://127.0.0.1:8000"
    metrics_token: str | None = None  # when set, GET /metrics needs it as a bearer token
    # OpenTelemetry traces (OTLP/HTTP): off unless an endpoint is set. The SDK reads the other
    # OTEL_* variables (OTEL_EXPORTER_OTLP_HEADERS, OTEL_RESOURCE_ATTRIBUTES…) itself.
    otel_exporter_otlp_endpoint: str | None = None  # spans go to <endpoint>/v1/traces
    otel_exporter_otlp_traces_endpoint: str | None = None  # the full URL for spans, when set
    otel_service_name: str = "chat-server"
    otel_capture_content: bool = False  # 1: messages, tool arguments and results go into spans

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{Path(self.data_dir) / 'chat.sqlite3'}"

    @property
    def traces_endpoint(self) -> str | None:
        """Where OpenTelemetry spans go, as the SDK would read the variables; None: tracing is off."""
        if self.otel_exporter_otlp_traces_endpoint:
            return self.otel_exporter_otlp_traces_endpoint
        if self.otel_exporter_otlp_endpoint:
            return self.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
        return None

    @property
    def dev_mode(self) -> bool:
        return not self.jwt_secret and not self.jwt_jwks_url


class SettingsError(ValueError):
    pass


_FIELD = re.compile(r"`\$\.(\w+)([^`]*)`")
_VARIABLE = re.compile(r"\$\{(\w+)\}")


def _mcp_servers(text: str, environ: Mapping[str, str]) -> list:
    """``MCP_SERVERS`` read as JSON, with ``${VAR}`` in its strings taken from ``environ``; its
    shape is checked with the other settings."""
    try:
        servers = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise SettingsError(f"invalid value for MCP_SERVERS: not JSON ({exc})") from None

    def expand(value: object) -> object:
        if isinstance(value, str):
            def lookup(match: re.Match[str]) -> str:
                if match[1] not in environ:
                    raise SettingsError(f"invalid value for MCP_SERVERS: ${{{match[1]}}} is not set")
                return environ[match[1]]

            return _VARIABLE.sub(lookup, value)
        if isinstance(value, dict):
            return {key: expand(item) for key, item in value.items()}
        if isinstance(value, list):
            return [expand(item) for item in value]
        return value

    servers = expand(servers)
    if isinstance(servers, list):
        names = [server.get("name") for server in servers if isinstance(server, dict)]
        if twice := sorted({name for name in names if isinstance(name, str) and names.count(name) > 1}):
            raise SettingsError(f"invalid value for MCP_SERVERS: two servers are named {twice[0]!r}")
    return servers  # type: ignore[return-value]


def load_settings(environ: Mapping[str, str] | None = None, env_file: str | os.PathLike | None = ".env") -> Settings:
    """The environment wins over ``.env``; an invalid value names its variable."""
    values: dict[str, str] = {}
    if env_file and Path(env_file).is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    names = {name.upper(): name for name in Settings.__struct_fields__}
    raw: dict[str, object] = {names[key]: value for key, value in values.items() if key in names and value != ""}
    if "mcp_servers" in raw:
        raw["mcp_servers"] = _mcp_servers(str(raw["mcp_servers"]), values)
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        match = _FIELD.search(str(exc))
        variable = match[1].upper() if match else "?"
        reason = str(exc).split(" - at ")[0]
        within = f" (at {match[2].lstrip('.')})" if match and match[2] else ""  # inside MCP_SERVERS' JSON
        raise SettingsError(f"invalid value for {variable}: {reason}{within}") from None


ENV_VARS: tuple[str, ...] = tuple(name.upper() for name in Settings.__struct_fields__)
