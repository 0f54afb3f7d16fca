"""Fuzzing in CI: schemathesis over every REST route, and random frames at the WebSocket and
at ``POST /chatkit``. Bounded and derandomized, so every run tries the same cases in well
under a minute; ``FUZZ_EXAMPLES`` raises the count for a longer hunt.

- REST: the app's own OpenAPI schema, loaded in-process over ASGI. Each generated request
  goes out with a valid token for the path's user, another user's token, an expired or forged
  token, garbage or none. Zero 5xx, and every response matches its documented status code,
  content type and body schema.
- WebSocket and ChatKit: random JSON values, random bytes, huge strings and the right frame
  types with wrong fields. Zero crashes, the socket answers ``ping`` after every bad frame,
  the server keeps answering, and a rejected frame or body writes no row.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from hypothesis.errors import Unsatisfiable
from litestar.testing import TestClient
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status as EngineStatus
from schemathesis.engine import events as engine_events
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi

from app.main import create_app
from app.settings import Settings
from domain.events import Event
from tests.conftest import auth, fetch_rows, token_for
from transports import ag_ui, ai_sdk

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
TABLES = ("conversation", "message", "task", "run", "run_event")


def fuzz_settings(examples: int = EXAMPLES) -> hypothesis_settings:
    return hypothesis_settings(
        max_examples=examples, derandomize=True, deadline=None, database=None, print_blob=True,
        suppress_health_check=list(HealthCheck),
    )


_COUNT_ALL = "SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {table})" for table in TABLES)


def rows(config: Settings) -> dict[str, int]:
    """Every table's row count, in one query: a connection per table slowed PostgreSQL runs 3x."""
    return dict(zip(TABLES, fetch_rows(config.database, _COUNT_ALL)[0], strict=True))


# --- REST: schemathesis over the OpenAPI schema ------------------------------------------

FORGED = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLW9mLW5vYm9keQ"
AUTH_MODES = ("own", "own", "own", "own", "own", "other_user", "expired", "forged", "garbage", "none", "generated")


def authorization(mode: str, user: str) -> dict[str, str] | None:
    """Headers for one auth mode; None keeps whatever schemathesis generated."""
    return {
        "own": {"Authorization": f"Bearer {token_for(user)}"},
        "other_user": {"Authorization": f"Bearer {token_for(user + '-not')}"},
        "expired": {"Authorization": f"Bearer {token_for(user, ttl_s=-60)}"},
        "forged": {"Authorization": f"Bearer {FORGED}"},
        "garbage": {"Authorization": "Bearer \x7f not a token"},
        "none": {},
        "generated": None,
    }[mode]


@pytest.fixture
def api_schema(settings) -> Iterator[Any]:
    app = create_app(settings)
    # Starts the app's lifespan on schemathesis' own event loop thread; stopped below.
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", app)
    # Unknown query parameters are ignored, as HTTP APIs do; they are not a schema violation.
    schema.config.generation.update(allow_extra_parameters=False)
    # The user's feed never ends, and an in-process client reads a body to its end; its bad
    # input is tested on a live server (tests/test_live_everywhere.py).
    yield schema.exclude(path="/api/{user_id}/events")
    asgi.shutdown_lifespans()


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, ignored_auth]


def rejection_expected(case: Any, auth: str) -> bool:
    """Whether a negative case still reaches the app invalid, so anything but a 4xx is a bug.

    Not when its only invalid parts are the Authorization header (replaced by the auth mode)
    or a scalar query parameter sent as an array: Litestar reads the last of repeated values,
    as most frameworks do, and that one may well be valid."""
    if case.meta is None or not case.meta.generation.mode.is_negative:
        return False
    mutations = getattr(case.meta.phase.data, "mutations", None)
    if not mutations:
        return True
    return any(
        not (m.parameter_location is ParameterLocation.HEADER and (m.parameter or "").lower() == "authorization"
             and auth != "generated")
        and not (m.parameter_location is ParameterLocation.QUERY and m.keywords == ("type",)
                 and m.new_value == "array")
        for m in mutations
    )


def is_event_stream(response: Any) -> bool:
    content_type = next(iter(response.headers.get("content-type", [])), "")
    return response.status_code == 200 and content_type.startswith("text/event-stream")


def assert_events_decode(body: bytes, path: str) -> None:
    data = [line.removeprefix(b"data: ") for line in body.splitlines() if line.startswith(b"data: ")]
    assert data, body[:500]
    for payload in data:
        if path == "/chatkit":  # each a ChatKit event; tests/test_chatkit.py checks them in depth
            assert isinstance(msgspec.json.decode(payload).get("type"), str), payload
        elif path.endswith("/ag-ui"):  # AG-UI events; tests/test_ag_ui.py has the client check them
            msgspec.json.decode(payload, type=ag_ui.Event)
        elif "/ai-sdk/" in path:  # UI message chunks, then the literal [DONE]
            if payload != b"[DONE]":
                msgspec.json.decode(payload, type=ai_sdk.Chunk)
        else:
            msgspec.json.decode(payload, type=Event)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_rest_routes_survive_schemathesis(api_schema, mode):
    failures: dict[str, str] = {}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]
    for operation in operations:

        @fuzz_settings()
        @given(case=operation.as_strategy(generation_mode=mode), auth=st.sampled_from(AUTH_MODES))
        def fuzz(case, auth: str) -> None:
            if auth == "own" and "user_id" in (case.path_parameters or {}):
                case.path_parameters["user_id"] = "alice"  # reach past auth, into the handler
            user = (case.path_parameters or {}).get("user_id", "alice")
            headers = authorization(auth, str(user))
            if headers is not None:
                case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
            checks = CHECKS + ([negative_data_rejection] if rejection_expected(case, auth) else [])
            response = case.call(headers=headers, timeout=30)
            if is_event_stream(response):
                # schemathesis reads an SSE route's schema as the schema of each parsed event
                # ({data, event, id}); ours is the schema of each event's data. So the body is
                # checked here instead: every data line decodes as a documented event.
                assert_events_decode(response.content, operation.path)
                case.validate_response(response, checks=[c for c in checks if c is not response_schema_conformance],
                                       headers=headers)
            else:
                case.validate_response(response, checks=checks, headers=headers)

        try:
            fuzz()
        except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
            assert mode is GenerationMode.NEGATIVE, operation.label
        except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failure, then fail once
            failures[operation.label] = f"{type(exc).__name__}: {exc}"
    assert not failures, "\n\n".join(f"{label}:\n{failure}" for label, failure in failures.items())


# --- The OpenAPI document is the contract: schemathesis' own run on a live server -----------

CONTRACT_EXAMPLES = int(os.environ.get("FUZZ_CONTRACT_EXAMPLES", "20"))
CONTRACT_CHECKS = [
    "not_a_server_error", "status_code_conformance", "content_type_conformance", "response_headers_conformance",
    "response_schema_conformance", "positive_data_acceptance", "negative_data_rejection", "missing_required_header",
    "unsupported_method", "allow_header_conformance", "ignored_auth",
]


def contract_config(token: str) -> SchemathesisConfig:
    """What ``st run --checks all`` does, seeded: every phase (examples, coverage, fuzzing,
    stateful) and every check that judges the document against the server."""
    return SchemathesisConfig.from_dict({
        "seed": 20260101,
        "headers": {"Authorization": f"Bearer {token}"},
        "parameters": {"path.user_id": "alice"},  # the token's user: past auth, into the handlers
        "generation": {"max-examples": CONTRACT_EXAMPLES, "deterministic": True, "database": "none"},
        "checks": {name: {"enabled": True} for name in CONTRACT_CHECKS},
        "request-timeout": 10,
        "max-stream-events": 20,
        "workers": 1,
        # The feed never ends and says nothing until something changes: a short read of it.
        "operations": [{"include-path": "/api/{user_id}/events", "request-timeout": 0.3}],
    })


def contract_failures(url: str, token: str) -> list[str]:
    schema = schemathesis.openapi.from_url(f"{url}/schema/openapi.json", config=contract_config(token))
    found: list[str] = []
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, engine_events.ScenarioFinished | engine_events.FuzzScenarioFinished):
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    if check.status != EngineStatus.FAILURE or check.failure_info is None:
                        continue
                    interaction = event.recorder.interactions.get(case_id)
                    request = interaction.request if interaction else None
                    response = interaction.response if interaction else None
                    found.append(
                        f"{event.recorder.label}: {check.name}: {check.failure_info.failure.title}\n"
                        f"  {request.method if request else ''} {request.uri if request else ''} "
                        f"{(request.body or b'')[:300] if request else b''!r}\n"
                        f"  -> {response.status_code if response else ''} {(response.content or b'')[:300] if response else b''!r}"
                    )
        elif isinstance(event, engine_events.NonFatalError):
            found.append(f"{event.label}: error: {event.value!r}")
        elif isinstance(event, engine_events.FatalError):
            found.append(f"fatal: {event.exception!r}")
        elif isinstance(event, engine_events.EngineFinished):
            found += [f"after the run: {failure.title}: {failure.message}" for failure in event.failures]
    return sorted(set(found))


def test_the_openapi_document_and_the_server_agree(live_server):
    """Issue 33: 22 places where the document and the server disagreed (inputs the document
    allows and the server refused, ``Allow`` lists, SSE events the document did not describe).
    Zero server errors and zero mismatches, every check, on a fixed seed."""
    failures = contract_failures(live_server.url, token_for("alice", ttl_s=3600))
    assert not failures, f"{len(failures)} disagreements:\n" + "\n".join(failures)


# --- WebSocket and ChatKit: random frames -------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
WS_TYPES = ["chat", "cancel", "resume", "ping", "auth", "pong", "error", "Chat", ""]
ws_typed = st.fixed_dictionaries(
    {"type": st.sampled_from(WS_TYPES)},
    optional={"message": json_values, "conversation_id": json_values, "run_id": json_values,
              "after": json_values, "token": json_values},
)
huge_strings = st.integers(min_value=40_000, max_value=400_000).map(lambda n: "x" * n)


def _wire(value: Any) -> str:
    return json.dumps(value)


ws_frames = st.one_of(
    json_values.map(_wire),
    ws_typed.map(_wire),
    st.binary(max_size=200),
    st.text(max_size=200),
    huge_strings,
    huge_strings.map(lambda s: _wire({"type": "chat", "message": s})),
)


def read_until_pong(ws) -> list[dict[str, Any]]:
    frames = []
    while (frame := ws.receive_json()) != {"type": "pong"}:
        frames.append(frame)
    return frames


def wait_for_done(ws, run_ids: set[str]) -> None:
    while run_ids:
        frame = ws.receive_json()
        if frame.get("type") == "done":
            run_ids.discard(frame["run_id"])


def test_random_frames_never_break_the_websocket(settings):
    with TestClient(create_app(settings), timeout=30) as client, \
            client.websocket_connect(f"/api/alice/ws?token={token_for('alice')}") as ws:
        baseline = rows(settings)

        @fuzz_settings(EXAMPLES * 10)
        @given(frame=ws_frames)
        def fuzz(frame: str | bytes) -> None:
            nonlocal baseline
            if isinstance(frame, bytes):
                ws.send_bytes(frame)
            else:
                ws.send_text(frame)
            ws.send_json({"type": "ping"})
            replies = read_until_pong(ws)  # the socket still serves after the frame
            if not replies:  # the frame was itself a valid ping: that was its pong, now ours
                replies = read_until_pong(ws)
                assert replies == [], replies
                return
            started = {f["run_id"] for f in replies if f.get("type") == "start"}
            if started:  # a random frame that happens to be a valid chat message: let it finish
                done = {f["run_id"] for f in replies if f.get("type") == "done"}
                wait_for_done(ws, started - done)
                baseline = rows(settings)
                return
            assert replies and all(f["type"] == "error" for f in replies), replies
            assert rows(settings) == baseline

        fuzz()
        assert client.get("/health").status_code == 200


CHATKIT_TYPES = [
    "threads.create", "threads.add_user_message", "threads.retry_after_item", "threads.get_by_id",
    "threads.list", "items.list", "threads.update", "threads.delete", "items.feedback",
    "threads.custom_action", "attachments.create", "input.transcribe", "threads.nope", "",
]
chatkit_typed = st.fixed_dictionaries(
    {"type": st.sampled_from(CHATKIT_TYPES)},
    optional={"params": json_values | st.dictionaries(
        st.sampled_from(["thread_id", "input", "item_id", "limit", "order", "after", "title", "kind", "item_ids"]),
        json_values, max_size=4,
    ), "metadata": json_values},
)
_USER_INPUT = {"content": [{"type": "input_text", "text": "add buy milk"}], "attachments": [],
               "inference_options": {}}
CHATKIT_REQUESTS = [  # valid requests; the fuzzer breaks one part of one of them at a time
    {"type": "threads.create", "params": {"input": _USER_INPUT}},
    {"type": "threads.add_user_message", "params": {"thread_id": "thr_1", "input": _USER_INPUT}},
    {"type": "threads.retry_after_item", "params": {"thread_id": "thr_1", "item_id": "itm_1"}},
    {"type": "threads.get_by_id", "params": {"thread_id": "thr_1"}},
    {"type": "threads.list", "params": {"limit": 5, "order": "asc", "after": None}},
    {"type": "items.list", "params": {"thread_id": "thr_1", "limit": 5}},
    {"type": "threads.update", "params": {"thread_id": "thr_1", "title": "groceries"}},
    {"type": "threads.delete", "params": {"thread_id": "thr_1"}},
    {"type": "items.feedback", "params": {"thread_id": "thr_1", "item_ids": ["itm_1"], "kind": "positive"}},
]


def _paths(value: Any, path: tuple = ()) -> list[tuple]:
    """Every place in a JSON value: the root, each key, each list index, recursively."""
    found = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*path, index))
    return found


def _replaced(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    copy = json.loads(json.dumps(value))
    node = copy
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = new
    return copy


def _broken(request: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    # Often a string for a string: a request that still decodes and reaches the handler.
    values = st.one_of(st.text(max_size=60), json_values)
    return st.tuples(st.sampled_from(_paths(request)[1:]), values).map(lambda pv: _replaced(request, *pv))


broken_requests = st.sampled_from(CHATKIT_REQUESTS).flatmap(_broken).map(lambda v: _wire(v).encode())
chatkit_bodies = st.one_of(
    json_values.map(lambda v: _wire(v).encode()),
    chatkit_typed.map(lambda v: _wire(v).encode()),
    broken_requests, broken_requests, broken_requests,  # weighted: these get deepest into the handler
    st.binary(max_size=300),
    st.integers(min_value=200_000, max_value=600_000).map(lambda n: b'{"type":"threads.create","x":"' + b"x" * n),
)


def test_random_bodies_never_break_chatkit(settings):
    headers = {"Authorization": f"Bearer {token_for('alice')}", "Content-Type": "application/json"}
    with TestClient(create_app(settings), timeout=30) as client:
        baseline = rows(settings)

        @fuzz_settings(EXAMPLES * 10)
        @given(body=chatkit_bodies)
        def fuzz(body: bytes) -> None:
            nonlocal baseline
            response = client.post("/chatkit", content=body, headers=headers)
            assert response.status_code < 500, (response.status_code, response.text[:500])
            if response.status_code >= 400:
                assert msgspec.json.decode(response.content)["status_code"] == response.status_code
                assert rows(settings) == baseline
            else:
                baseline = rows(settings)
            assert client.get("/health").status_code == 200  # the server keeps serving

        fuzz()


def test_task_ids_beyond_the_database_integer_are_404(client):
    """Found by schemathesis: a task id past PostgreSQL's 32-bit Serial (or SQLite's 64 bits)
    reached the driver, which raised: a 500 instead of a 404."""
    for task_id in (0, 2**31, 2**63, 2**65):
        response = client.get(f"/api/alice/tasks/{task_id}", headers=auth("alice"))
        assert response.status_code == 404, (task_id, response.text)
