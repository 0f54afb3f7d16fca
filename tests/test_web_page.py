"""The chat page at ``/``, driven in Debian's Chromium through Playwright, against uvicorn on
127.0.0.1. The offline model writes slowly here (a token every 40 ms), so Stop and reload land
in the middle of a reply; "hello" gets a long one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import LiveServer, auth, fetch_rows, start_live_server, token_for

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
TIMEOUT_MS = 15_000


@pytest.fixture
def database_url(tmp_path) -> str:
    """SQLite only: the page talks HTTP, and the engines are compared by the other tests."""
    return f"sqlite:///{tmp_path / 'chat.sqlite3'}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail(f"REQUIRE_BROWSER is set but {CHROMIUM} is missing")
        pytest.skip(f"the page tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture
def server(settings) -> Iterator[LiveServer]:
    live = start_live_server(msgspec.structs.replace(settings, offline_token_delay_ms=40))
    yield live
    live.stop()


@pytest.fixture
def page(browser, server) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    yield page
    context.close()
    assert script_errors == []


def sign_in(page: Page, server: LiveServer, user: str = "alice") -> None:
    page.goto(f"{server.url}/#token={token_for(user)}")
    expect(page.locator("#who")).to_have_text(user)
    expect(page.locator("body")).to_have_attribute("data-loaded", "true")


def choose_transport(page: Page, transport: str) -> None:
    page.locator(f"input[name=transport][value={transport}] + span").click()
    if transport == "ws":
        expect(page.locator("#connection")).to_have_text("connected")


def send(page: Page, message: str) -> None:
    page.locator("#input").fill(message)
    page.locator("#input").press("Enter")


def stored(server: LiveServer, sql: str) -> list[tuple]:
    return fetch_rows(server.settings.database, sql)


def test_the_page_streams_a_reply_shows_the_tool_card_and_the_new_task(page, server):
    sign_in(page, server)
    assert "token" not in page.url  # the fragment is read, then removed from the address bar
    assert page.evaluate("localStorage.getItem('chat.token')")  # shared with the user's new tabs

    send(page, "add buy milk")
    reply = page.locator(".msg.assistant").last
    expect(reply).to_have_class("msg assistant streaming")  # seen while it is being written
    # The call in words, one line; its details (in words too, no ids or timestamps) on demand.
    card = reply.locator(".tool")
    expect(card.locator(".tool-summary")).to_have_text("Added task “buy milk”")
    expect(card.locator(".tool-details")).to_be_hidden()
    card.locator(".tool-summary").click()
    expect(card.locator(".tool-name")).to_have_text("add_task")
    expect(card.locator(".tool-args dt")).to_have_text(["Task"])  # the empty description is left out
    expect(card.locator(".tool-args dd")).to_have_text(["buy milk"])
    expect(card.locator(".tool-result")).to_have_text("○ buy milk")
    expect(page.locator("#tasks li .title")).to_have_text(["buy milk"])
    expect(reply).to_have_attribute("data-status", "completed")
    expect(reply.locator(".bubble")).to_have_text("Added “buy milk” to your list (task #1).")
    expect(page.locator("#conversations li.active .title")).to_have_text("add buy milk")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat_page.png"), full_page=True)

    page.locator("#new-chat").click()
    expect(page.locator(".msg")).to_have_count(0)
    page.locator("#conversations li .title").first.click()
    expect(page.locator(".msg.assistant .tool .tool-summary")).to_have_text("Added task “buy milk”")


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_stop_mid_reply_stops_the_run_and_shows_the_message_as_stopped(page, server, transport):
    sign_in(page, server)
    choose_transport(page, transport)

    send(page, "hello")
    reply = page.locator(".msg.assistant").last
    expect(reply.locator(".bubble")).to_contain_text("Hello! I'm your todo assistant")
    page.locator("#stop").click()

    expect(reply).to_have_attribute("data-status", "cancelled")
    expect(reply.locator(".badge")).to_have_text("Stopped")
    expect(page.locator("#send")).to_be_visible()
    shown = reply.locator(".bubble").evaluate("bubble => bubble.source")  # the markdown it rendered
    assert stored(server, "SELECT status FROM run") == [("cancelled",)]
    [(status, content)] = stored(server, "SELECT status, content FROM message WHERE role = 'assistant'")
    assert status == "cancelled"
    assert content.strip() == shown.strip() and "delete one" not in content  # cut short, as shown

    page.reload()  # a stopped reply stays stopped
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-status", "cancelled")


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_a_reload_mid_reply_reattaches_and_shows_the_rest(page, server, transport):
    sign_in(page, server)
    choose_transport(page, transport)

    send(page, "hello")
    expect(page.locator(".msg.assistant .bubble")).to_contain_text("todo assistant")
    page.reload()

    reply = page.locator(".msg.assistant").last
    expect(reply).to_have_class("msg assistant streaming")  # re-attached while it still runs
    expect(reply).to_have_attribute("data-status", "completed")
    [(content,)] = stored(server, "SELECT content FROM message WHERE role = 'assistant'")
    assert "delete one" in content
    # Nothing lost, nothing twice: the markdown rendered is the stored reply, its list a list.
    assert reply.locator(".bubble").evaluate("bubble => bubble.source") == content
    expect(reply.locator(".bubble ul li")).to_have_count(5)
    assert stored(server, "SELECT status FROM run") == [("completed",)]
    assert page.evaluate("sessionStorage.getItem('chat.reply')") is None


def test_an_expired_token_shows_a_banner_and_a_pasted_token_signs_in(page, server):
    page.goto(f"{server.url}/#token={token_for('alice', ttl_s=-60)}")
    expect(page.locator("#banner")).to_contain_text("expired")
    expect(page.locator("#sign-in")).to_be_visible()

    page.locator("#token-input").fill(token_for("bob"))
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#who")).to_have_text("bob")
    expect(page.locator("#banner")).to_be_hidden()


def test_a_refused_message_shows_the_server_s_reason(page, server):
    sign_in(page, server)
    send(page, "x" * (server.settings.max_message_bytes + 1))
    expect(page.locator("#banner")).to_be_visible()
    expect(page.locator(".msg")).to_have_count(0)  # nothing was stored, so nothing is shown
    assert httpx.get(f"{server.url}/api/alice/conversations", headers=auth("alice")).json() == []


def restart(live: LiveServer) -> LiveServer:
    """The same app on the same port again, as after a server restart."""
    return start_live_server(live.settings, port=int(live.url.rsplit(":", 1)[1]))


def test_the_websocket_reconnects_with_backoff_when_the_server_comes_back(page, server):
    sign_in(page, server)
    choose_transport(page, "ws")
    server.stop()
    expect(page.locator("#banner")).to_contain_text("reconnecting")
    expect(page.locator("#connection")).not_to_have_text("connected")

    again = restart(server)
    try:
        expect(page.locator("#connection")).to_have_text("connected")
        expect(page.locator("#banner")).to_be_hidden()
        send(page, "add call mom")
        expect(page.locator("#tasks li .title")).to_have_text(["call mom"])
    finally:
        again.stop()


def test_a_conversation_is_deleted_after_a_second_click(page, server):
    httpx.post(f"{server.url}/api/alice/chat", json={"message": "add buy milk"}, headers=auth("alice"), timeout=30)
    sign_in(page, server)
    entry = page.locator("#conversations li")
    expect(entry).to_have_count(1)
    entry.locator(".title").click()
    expect(page.locator(".msg.assistant")).to_have_count(1)

    entry.locator(".delete").click()
    expect(entry.locator(".delete")).to_have_text("Delete?")
    entry.locator(".delete").click()
    expect(entry).to_have_count(0)
    expect(page.locator(".msg")).to_have_count(0)
    assert httpx.get(f"{server.url}/api/alice/conversations", headers=auth("alice")).json() == []


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_an_approval_card_survives_a_reload_and_its_buttons_decide(browser, settings, transport):
    live = start_live_server(msgspec.structs.replace(settings, offline_token_delay_ms=5, tool_approval="delete_task"))
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    try:
        sign_in(page, live)
        choose_transport(page, transport)
        send(page, "add buy milk")
        expect(page.locator("#tasks li .title")).to_have_text(["buy milk"])
        send(page, "delete buy milk")
        card = page.locator(".approval")
        expect(card.locator(".approval-question")).to_have_text("Delete the task “buy milk”?")
        expect(page.locator("#send")).to_be_visible()  # the reply waits: the composer is free

        page.reload()  # the question is still there, with its buttons
        expect(page.locator("body")).to_have_attribute("data-loaded", "true")
        card = page.locator(".approval")
        expect(card.get_by_role("button")).to_have_text(["Approve", "Reject"])
        card.get_by_role("button", name="Approve").focus()  # keyboard reachable
        page.keyboard.press("Enter")
        expect(card.locator(".approval-decision")).to_have_text("Approved")
        expect(page.locator(".msg.assistant").last.locator(".bubble")).to_contain_text("Deleted “buy milk”")
        expect(page.locator("#tasks li")).to_have_count(0)

        page.reload()  # decided: the card says so, without buttons
        expect(page.locator(".approval .approval-decision")).to_have_text("Approved")
        expect(page.locator(".approval button")).to_have_count(0)
    finally:
        context.close()
        live.stop()
    assert script_errors == []


def test_a_reply_started_in_one_tab_streams_in_the_other_and_both_stay_current(browser, server):
    tabs = []
    for _ in range(2):
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        tab = context.new_page()
        tab.set_default_timeout(TIMEOUT_MS)
        tabs.append(tab)
    one, other = tabs
    try:
        sign_in(one, server)
        send(one, "add buy milk")
        expect(one.locator(".msg.assistant").last).to_have_attribute("data-status", "completed")
        sign_in(other, server)
        expect(other.locator("#tasks li .title")).to_have_text(["buy milk"])
        other.locator("#conversations li .title").first.click()
        expect(other.locator(".msg.assistant")).to_have_count(1)

        send(one, "hello")  # a long reply: the other tab shows it while it is written
        live = other.locator(".msg.assistant").nth(1)
        expect(live).to_have_class("msg assistant streaming")
        expect(live.locator(".bubble")).to_contain_text("todo assistant")
        expect(live).to_have_attribute("data-status", "completed")
        assert live.locator(".bubble").inner_text() == one.locator(".msg.assistant").last.locator(".bubble").inner_text()
        assert "add a task" in live.locator(".bubble").inner_text()

        send(one, "add call mom")  # the task list and the conversation list follow too
        expect(other.locator("#tasks li .title")).to_have_text(["buy milk", "call mom"])
        one.locator("#new-chat").click()
        send(one, "list my tasks")
        expect(other.locator("#conversations li")).to_have_count(2)
    finally:
        for tab in tabs:
            tab.context.close()
