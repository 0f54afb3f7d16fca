"""``GET /metrics``: Prometheus text whose chat metrics follow what a user sees (a reply
streamed, one cancelled, one failed), guarded by ``METRICS_TOKEN`` when set, and the sum of
every worker's under ``serve --workers N``."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import msgspec
import pytest
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.settings import Settings
from tests.conftest import ServerProcess, auth, fresh_postgres, token_for
from tests.fake_openai import FakeOpenAI, Reply

Samples = dict[tuple[str, frozenset], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(client: TestClient | httpx.Client, **headers: str) -> Samples:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def sse_events(body: str) -> list[dict]:
    return [json.loads(line.removeprefix("data: ")) for line in body.splitlines() if line.startswith("data: ")]


def test_a_streamed_reply_is_counted_from_start_to_done(client):
    before = scrape(client)
    response = client.post("/api/alice/chat/stream", json={"message": "add buy milk"}, headers=auth("alice"))
    events = sse_events(response.text)
    done = events[-1]
    assert done["type"] == "done" and done["status"] == "completed"

    after = scrape(client)
    assert value(after, "chat_runs_started_total", transport="sse") == 1
    assert value(after, "chat_runs_finished_total", transport="sse", status="completed") == 1
    assert value(after, "chat_runs_active", transport="sse") == 0
    assert value(after, "chat_events_streamed_total", transport="sse") == len(events)
    assert value(after, "chat_time_to_first_event_seconds_count", transport="sse") == 1
    assert value(after, "chat_time_to_first_text_seconds_count", transport="sse") == 1
    assert value(after, "chat_tool_calls_total", tool="add_task", outcome="ok") == 1
    assert value(after, "chat_tokens_total", model="offline-todo", type="input") == done["usage"]["input_tokens"]
    assert value(after, "chat_tokens_total", model="offline-todo", type="output") == done["usage"]["output_tokens"]
    assert value(after, "chat_store_commit_seconds_count") >= 1
    assert value(after, "chat_model_errors_total", code="internal_error") == 0
    # Litestar's plugin, one series per route (not per user).
    route = {"app_name": "chat-server", "method": "POST", "path": "/api/{user_id}/chat/stream", "status_code": "200"}
    assert value(after, "chat_http_requests_total", **route) == value(before, "chat_http_requests_total", **route) + 1
    assert not any("alice" in str(labels) for _, labels in after)


def test_a_cancelled_reply_counts_its_cancel_latency(settings):
    slow = msgspec.structs.replace(settings, offline_token_delay_ms=30)
    with TestClient(create_app(slow), timeout=30) as client:
        with client.websocket_connect(f"/api/alice/ws?token={token_for('alice')}") as ws:
            ws.send_json({"type": "chat", "message": "hello"})
            received = [ws.receive_json(), ws.receive_json()]
            assert [e["type"] for e in received] == ["start", "text"]
            running = scrape(client)
            ws.send_json({"type": "cancel", "run_id": received[0]["run_id"]})
            while received[-1]["type"] != "done":
                received.append(ws.receive_json())
        assert received[-1]["status"] == "cancelled"
        after = scrape(client)
    assert value(running, "chat_runs_active", transport="websocket") == 1
    assert value(after, "chat_runs_active", transport="websocket") == 0
    assert value(after, "chat_runs_finished_total", transport="websocket", status="cancelled") == 1
    assert value(after, "chat_cancel_latency_seconds_count") == 1
    assert value(after, "chat_events_streamed_total", transport="websocket") == len(received)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


def test_a_failed_reply_counts_its_error_code(settings, fake):
    fake.script(Reply(status=429))
    failing = msgspec.structs.replace(settings, openai_api_key="sk-test-key", openai_base_url=fake.base_url,
                                      chat_model="fake-model")
    with TestClient(create_app(failing), timeout=30) as client:
        reply = client.post("/api/alice/chat", json={"message": "hello"}, headers=auth("alice")).json()
        assert reply["status"] == "failed" and reply["error"]["code"] == "model_rate_limited"
        after = scrape(client)
    assert value(after, "chat_model_errors_total", code="model_rate_limited") == 1
    assert value(after, "chat_runs_finished_total", transport="rest", status="failed") == 1
    assert value(after, "chat_time_to_first_text_seconds_count", transport="rest") == 0


def test_the_grafana_dashboard_reads_only_metrics_the_server_exposes(client):
    dashboard = json.loads((Path(__file__).parent.parent / "deploy" / "grafana-dashboard.json").read_text())
    used = {name for panel in dashboard["panels"] for target in panel.get("targets", [])
            for name in re.findall(r"\b(chat_[a-z_]+)\b", target["expr"])}
    client.get("/health")  # the plugin's series appear with the first request they count
    families = text_string_to_metric_families(client.get("/metrics").text)
    exposed = {f"{family.name}{suffix}" for family in families for suffix in ("", "_total", "_bucket")}
    exposed.add("chat_http_requests_error_total")  # the plugin's, from the first 5xx on
    assert len(used) >= 14 and used <= exposed, used - exposed


def test_metrics_token_is_required_when_set(settings):
    guarded = msgspec.structs.replace(settings, metrics_token="scrape-secret")
    with TestClient(create_app(guarded), timeout=30) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/metrics", headers=auth("alice")).status_code == 401  # a user's token is not it
        scrape(client, Authorization="Bearer scrape-secret")


def pids_writing(directory: Path, kind: str) -> set[str]:
    return {path.stem.rsplit("_", 1)[1] for path in directory.glob(f"{kind}_*.db")}


def test_every_worker_answers_with_the_sum_of_all_workers(tmp_path, postgres_server):
    shared = Settings(data_dir=str(tmp_path / "data"), database_url=fresh_postgres(postgres_server),
                      offline_token_delay_ms=20)
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_999999.db").write_bytes(b"")  # left by an earlier run: wiped at start
    server = ServerProcess(shared, workers=2, REDIS_URL="", PROMETHEUS_MULTIPROC_DIR=str(directory))
    try:
        assert not (directory / "counter_999999.db").exists()
        # Each worker writes its files from its start: wait until both serve.
        while len(pids_writing(directory, "histogram")) < 2:
            assert server.process.poll() is None
            time.sleep(0.05)

        def chat(n: int) -> str:  # a connection of its own each: the workers share them out
            reply = httpx.post(f"{server.url}/api/user{n}/chat", json={"message": f"add task {n}"},
                               headers=auth(f"user{n}"), timeout=30)
            return reply.json()["status"]

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(chat, range(16))) == ["completed"] * 16
        writers = pids_writing(directory, "counter")
        scrapes = [scrape(httpx.Client(base_url=server.url)) for _ in range(6)]
    finally:
        server.stop()
    assert len(writers) == 2, writers  # both workers ran replies
    for samples in scrapes:
        assert value(samples, "chat_runs_finished_total", transport="rest", status="completed") == 16
        assert value(samples, "chat_runs_active", transport="rest") == 0


def test_approvals_pending_counts_the_calls_waiting_for_a_decision(client):
    assert value(scrape(client), "chat_approvals_pending") == 0
    client.post("/api/alice/chat/stream", json={"message": "add buy milk"}, headers=auth("alice"))
    asked = sse_events(client.post("/api/alice/chat/stream", json={"message": "delete buy milk"},
                                   headers=auth("alice")).text)
    assert asked[-1]["status"] == "awaiting_approval"
    assert value(scrape(client), "chat_approvals_pending") == 1
    request = next(e for e in asked if e["type"] == "approval_request")
    client.post(f"/api/alice/runs/{asked[0]['run_id']}/approvals", headers=auth("alice"),
                json={"call_id": request["call_id"], "approve": False})
    assert value(scrape(client), "chat_approvals_pending") == 0
