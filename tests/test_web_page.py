"""The chat page at ``/``, driven in Debian's Chromium through Playwright, against uvicorn on
127.0.0.1. The offline model writes slowly here (a token every 40 ms), so Stop and reload land
in the middle of a reply; "hello" gets a long one."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import LiveServer, auth, fetch_rows, start_live_server, token_for
from tests.test_ai_sdk import require_node_clients

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


def paste_token(page: Page, user: str = "alice") -> None:
    """Sign in on the sign-in screen: the token pasted, Enter pressed."""
    page.locator("#token-input").fill(token_for(user))
    page.locator("#token-input").press("Enter")
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
    expect(reply.locator(".bubble ul li")).to_have_count(6)  # the help lists six things
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
        expect(page.locator(".msg.assistant").last).to_have_attribute("data-status", "completed")  # free to send
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


def test_the_header_shows_todays_tokens_and_updates_after_a_reply(page, server):
    sign_in(page, server)
    expect(page.locator("#usage")).to_have_text("Tokens today: 0")
    send(page, "add buy milk")
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-status", "completed")
    expect(page.locator("#usage")).to_have_text(re.compile(r"^Tokens today: [1-9]\d*$"))


# ---- the items, as a user sees them ---------------------------------------------------

AXE = Path(__file__).parent / "node" / "node_modules" / "axe-core" / "axe.min.js"


def chat_via_rest(server: LiveServer, message: str, conversation_id: str | None = None, user: str = "alice") -> dict:
    body = {"message": message, **({"conversation_id": conversation_id} if conversation_id else {})}
    return httpx.post(f"{server.url}/api/{user}/chat", json=body, headers=auth(user), timeout=30).json()


def bottom_in_view(locator) -> bool:
    """The element's last line is inside the message list's visible part (and the window)."""
    return locator.evaluate("""node => {
        const box = document.getElementById("messages").getBoundingClientRect();
        const r = node.getBoundingClientRect();
        return r.bottom <= box.bottom + 1 && r.bottom > box.top && r.bottom <= window.innerHeight;
    }""")


def test_the_last_line_of_a_reply_stays_in_view_after_tool_cards_and_after_a_resume(page, server):
    first = chat_via_rest(server, "add buy milk")
    for title in ["call mom", "pay the rent", "water the plants", "book the dentist", "fix the bike", "renew passport"]:
        chat_via_rest(server, f"add {title}", first["conversation_id"])
    page.set_viewport_size({"width": 1280, "height": 640})
    sign_in(page, server)
    page.locator("#conversations li .title").first.click()
    expect(page.locator(".msg.assistant")).to_have_count(7)

    send(page, "list my tasks")
    reply = page.locator(".msg.assistant").last
    expect(reply).to_have_attribute("data-status", "completed")
    expect(reply.locator(".bubble ol li")).to_have_count(7)
    assert bottom_in_view(reply.locator(".bubble"))

    send(page, "hello")
    expect(page.locator(".msg.assistant").last.locator(".bubble")).to_contain_text("todo assistant")
    page.reload()
    reply = page.locator(".msg.assistant").last
    expect(reply).to_have_attribute("data-status", "completed")
    assert bottom_in_view(reply.locator(".bubble"))

    # Scrolled up to read: the page does not pull the reader down while a reply streams.
    send(page, "hello")
    expect(page.locator(".msg.assistant").last.locator(".bubble")).to_contain_text("todo assistant")
    page.locator("#messages").hover()
    page.mouse.wheel(0, -5000)
    expect(page.locator("#messages")).to_have_js_property("scrollTop", 0)
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-status", "completed")
    assert page.locator("#messages").evaluate("box => box.scrollTop") == 0


def test_a_long_title_keeps_the_sidebar_in_its_column_and_its_buttons_reachable(page, server):
    chat_via_rest(server, "add " + "a-very-long-word-" * 12)
    sign_in(page, server)
    row = page.locator("#conversations li").first
    sidebar = page.locator(".sidebar").bounding_box()
    assert row.bounding_box()["width"] <= sidebar["width"]
    row.locator(".delete").focus()  # visible when the keyboard reaches it, not only on hover
    expect(row.locator(".delete")).to_have_css("opacity", "1")
    delete = row.locator(".delete").bounding_box()
    assert delete["x"] + delete["width"] <= sidebar["x"] + sidebar["width"]
    assert row.locator(".title").evaluate("t => getComputedStyle(t).textOverflow") == "ellipsis"


def test_at_phone_width_the_page_is_one_column_with_the_composer_in_reach(browser, server):
    chat_via_rest(server, "add " + "a-very-long-word-" * 12)
    context = browser.new_context(viewport={"width": 375, "height": 700}, has_touch=True, is_mobile=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(server.url)  # the sign-in screen fits too
        expect(page.locator("#sign-in")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        paste_token(page)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, width
        for control in ("#sign-out", "#input", "#send", "#show-chats", "#show-tasks"):
            box = page.locator(control).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 375 and box["y"] + box["height"] <= 700, control
        assert page.locator("#messages").bounding_box()["y"] < 150  # the chat comes first
        assert page.locator("#input").evaluate("i => i.scrollWidth <= i.clientWidth")  # placeholder not clipped

        send(page, "add buy milk")
        expect(page.locator(".msg.assistant").last).to_have_attribute("data-status", "completed")
        page.locator("#show-tasks").click()
        expect(page.locator("#tasks li .title").last).to_have_text("buy milk")
        expect(page.locator("#composer")).to_be_hidden()  # the panel is over the chat, never under it
        assert page.evaluate("document.documentElement.scrollWidth") <= 375  # a long task title wraps
        page.locator("#show-tasks").click()
        expect(page.locator("#composer")).to_be_visible()
        page.locator("#show-chats").click()
        assert page.evaluate("document.documentElement.scrollWidth") <= 375  # a long title is cut with …
        page.locator("#conversations li .title").last.click()  # choosing one closes the panel
        expect(page.locator("#composer")).to_be_visible()
        expect(page.locator(".msg.assistant")).to_have_count(1)
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "chat_page_phone.png"))
    finally:
        context.close()


def test_html_in_a_task_title_or_a_reply_is_shown_as_text_and_markdown_as_formatting(page, server):
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(page, server)
    attack = "<img src=x onerror=alert(1)>"
    send(page, f"add {attack}")
    reply = page.locator(".msg.assistant").last
    expect(reply).to_have_attribute("data-status", "completed")
    expect(page.locator("#tasks li .title")).to_have_text([attack])
    expect(reply.locator(".bubble")).to_contain_text(attack)
    expect(reply.locator(".tool-summary")).to_have_text(f"Added task “{attack}”")

    send(page, "add **bold** and <b>raw</b> and `code` and [a link](javascript:alert(2)) and <script>alert(3)</script>")
    reply = page.locator(".msg.assistant").last
    expect(reply).to_have_attribute("data-status", "completed")
    bubble = reply.locator(".bubble")
    expect(bubble.locator("strong")).to_have_text("bold")
    expect(bubble.locator("code")).to_have_text("code")
    expect(bubble).to_contain_text("<b>raw</b>")
    expect(bubble).to_contain_text("<script>alert(3)</script>")
    expect(bubble.locator("b, script")).to_have_count(0)
    expect(bubble.locator("a")).not_to_have_attribute("href", re.compile("javascript", re.IGNORECASE))

    # A filtered list keeps each task's number (the page's), its marks are text, not controls.
    send(page, "complete 1")
    expect(page.get_by_label(f"Done: {attack}")).to_be_checked()
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-status", "completed")
    send(page, "show pending tasks")
    listed = page.locator(".msg.assistant").last
    expect(listed).to_have_attribute("data-status", "completed")
    expect(listed.locator(".bubble ol li")).to_have_count(1)
    expect(listed.locator(".bubble ol li")).to_have_attribute("value", "2")
    expect(listed.locator(".bubble ol li")).to_contain_text("○ bold and <b>raw</b>")
    expect(listed.locator(".bubble input")).to_have_count(0)

    page.reload()  # redrawn from the stored conversation: the same text, still inert
    expect(page.locator("body")).to_have_attribute("data-loaded", "true")
    expect(page.locator(".msg.assistant").first.locator(".bubble")).to_contain_text(attack)
    expect(page.locator("#tasks li .title").first).to_have_text(attack)
    expect(page.locator("img, script:not([src])")).to_have_count(0)
    assert dialogs == []


def run_axe(page: Page) -> list[dict]:
    page.add_script_tag(path=str(AXE))
    violations = page.evaluate("async () => (await axe.run(document)).violations")
    return [{"id": v["id"], "impact": v["impact"], "nodes": [n["html"] for n in v["nodes"]][:3]}
            for v in violations if v["impact"] in ("serious", "critical")]


def test_axe_finds_no_serious_violation_on_the_main_screens(browser, server):
    require_node_clients()  # axe-core is pinned with them in tests/node
    chat_via_rest(server, "add buy milk")
    ARTIFACTS.mkdir(exist_ok=True)
    screens = [("light", {"width": 1280, "height": 800}), ("dark", {"width": 1280, "height": 800}),
               ("phone", {"width": 375, "height": 700})]
    for scheme, viewport in screens:
        context = browser.new_context(viewport=viewport, color_scheme="dark" if scheme == "dark" else "light")
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        try:
            page.goto(server.url)  # the sign-in screen
            expect(page.locator("#sign-in")).to_be_visible()
            assert run_axe(page) == [], scheme

            paste_token(page)
            page.locator("#show-chats").click() if scheme == "phone" else None
            page.locator("#conversations li .title").first.click()
            send(page, "list my tasks")
            expect(page.locator(".msg.assistant").last).to_have_attribute("data-status", "completed")
            page.locator(".tool-summary").first.click()  # a card open
            assert run_axe(page) == [], scheme
            if scheme == "dark":
                page.screenshot(path=str(ARTIFACTS / "chat_page_dark.png"))
            if scheme == "phone":
                page.locator("#show-tasks").click()
                assert run_axe(page) == [], scheme
        finally:
            context.close()


@pytest.mark.parametrize("key", ["Escape", "Stop button"])
def test_escape_or_stop_ends_the_reply_and_the_keyboard_stays_in_the_composer(page, server, key):
    sign_in(page, server)
    send(page, "hello")
    reply = page.locator(".msg.assistant").last
    expect(reply.locator(".bubble")).to_contain_text("todo assistant")
    if key == "Escape":
        page.keyboard.press("Escape")
    else:
        page.locator("#stop").click()
    expect(reply).to_have_attribute("data-status", "cancelled")
    expect(page.locator("#input")).to_be_focused()
    assert stored(server, "SELECT status FROM run") == [("cancelled",)]


def test_the_message_box_has_a_label_and_the_message_list_is_not_read_token_by_token(page, server):
    sign_in(page, server)
    expect(page.get_by_label("Message", exact=True)).to_have_id("input")
    assert page.locator("[aria-live]:not(#announce), [role=log]").count() == 0
    send(page, "add buy milk")
    expect(page.locator("#announce")).to_have_text("Added “buy milk” to your list (task #1).")


def test_something_shows_between_send_and_the_first_event(page, server):
    sign_in(page, server)
    page.route("**/chat/stream", lambda route: (page.wait_for_timeout(1500), route.continue_()))
    send(page, "add buy milk")
    expect(page.locator(".msg.assistant .thinking")).to_be_visible()
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-status", "completed")
    expect(page.locator(".thinking")).to_have_count(0)


def test_an_error_banner_goes_once_a_later_message_is_answered(page, server):
    sign_in(page, server)
    send(page, "x" * (server.settings.max_message_bytes + 1))
    expect(page.locator("#banner")).to_be_visible()
    page.locator("#input").fill("add buy milk")
    page.locator("#input").press("Enter")
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-status", "completed")
    expect(page.locator("#banner")).to_be_hidden()


def test_the_task_panel_completes_renames_and_deletes_in_place_and_follows_other_changes(page, server):
    sign_in(page, server)
    send(page, "add buy milk")
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-status", "completed")
    send(page, "add call mom")
    expect(page.locator("#tasks li .title")).to_have_text(["buy milk", "call mom"])
    # Numbered like the assistant's list, never by database id.
    expect(page.locator("#tasks li .number")).to_have_text(["1.", "2."])

    page.get_by_label("Done: buy milk").check()
    expect(page.locator("#tasks li").first).to_have_class(re.compile(r"\bdone\b"))
    expect(page.get_by_label("Done: buy milk")).to_be_focused()  # the keyboard stays on the box
    assert stored(server, "SELECT title, completed FROM task ORDER BY id") == [("buy milk", True), ("call mom", False)]

    page.get_by_role("button", name="Rename “call mom”").click()
    page.get_by_label("Task title").fill("call dad")
    page.get_by_label("Task title").press("Enter")
    expect(page.locator("#tasks li .title")).to_have_text(["buy milk", "call dad"])
    expect(page.get_by_role("button", name="Rename “call dad”")).to_be_focused()

    remove = page.get_by_role("button", name="Delete “buy milk”")
    remove.click()
    expect(remove).to_have_text("Delete?")
    remove.click()
    expect(page.locator("#tasks li .title")).to_have_text(["call dad"])
    expect(page.locator("#tasks li .number")).to_have_text(["1."])
    assert stored(server, "SELECT title FROM task") == [("call dad",)]

    # Changed elsewhere (another client over REST, or the assistant): the panel follows live.
    [(task_id,)] = stored(server, "SELECT id FROM task")
    httpx.patch(f"{server.url}/api/alice/tasks/{task_id}", json={"completed": True}, headers=auth("alice"))
    expect(page.get_by_label("Done: call dad")).to_be_checked()
    send(page, "reopen 1")
    expect(page.get_by_label("Done: call dad")).not_to_be_checked()


def test_a_conversation_is_renamed_in_place(page, server):
    chat_via_rest(server, "add buy milk")
    sign_in(page, server)
    page.get_by_role("button", name="Rename “add buy milk”").click()
    page.get_by_label("Conversation title").fill("Groceries")
    page.get_by_label("Conversation title").press("Enter")
    expect(page.locator("#conversations li .title")).to_have_text(["Groceries"])
    assert stored(server, "SELECT title FROM conversation") == [("Groceries",)]
    page.get_by_role("button", name="Rename “Groceries”").click()
    page.get_by_label("Conversation title").fill("never mind")
    page.get_by_label("Conversation title").press("Escape")
    expect(page.locator("#conversations li .title")).to_have_text(["Groceries"])


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_a_reply_is_regenerated_and_a_message_edited_and_resent(page, server, transport):
    sign_in(page, server)
    choose_transport(page, transport)
    send(page, "list my tasks")
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-status", "completed")
    expect(page.locator(".msg.user[data-id]")).to_have_count(1)  # its id learned from the stored conversation
    expect(page.locator(".msg .time")).to_have_count(2)  # every message says when

    page.get_by_role("button", name="Regenerate reply").click()
    expect(page.locator(".msg.assistant")).to_have_count(1)
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-status", "completed")
    expect(page.locator(".msg.assistant .bubble")).to_have_text("Your list is empty. Say \"add …\" to add a task.")
    assert len(stored(server, "SELECT id FROM run")) == 2
    assert len(stored(server, "SELECT id FROM message WHERE role = 'assistant'")) == 1

    page.get_by_role("button", name="Edit and resend").click()
    page.get_by_label("Edit message").fill("add buy milk")
    page.get_by_label("Edit message").press("Enter")
    expect(page.locator(".msg.user .bubble")).to_have_text(["add buy milk"])
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-status", "completed")
    expect(page.locator(".msg.assistant .bubble")).to_contain_text("Added “buy milk”")
    assert stored(server, "SELECT content FROM message WHERE role = 'user'") == [("add buy milk",)]
    expect(page.locator("#tasks li .title")).to_have_text(["buy milk"])

    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name="Copy reply").click()
    expect(page.get_by_role("button", name="Copy reply")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()").startswith("Added “buy milk”")


def test_switching_conversations_during_a_reply_leaves_it_running_and_coming_back_follows_it(page, server):
    chat_via_rest(server, "add buy milk")
    sign_in(page, server)
    send(page, "hello")  # a new conversation, a long reply
    expect(page.locator(".msg.assistant .bubble")).to_contain_text("todo assistant")
    page.locator("#conversations li", has_text="add buy milk").locator(".title").click()
    expect(page.locator(".msg.assistant .tool-summary")).to_have_text("Added task “buy milk”")
    expect(page.locator("#send")).to_be_visible()  # this conversation is free to talk in

    page.locator("#conversations li", has_text="hello").locator(".title").click()
    expect(page.locator(".msg.user .bubble")).to_have_text(["hello"])
    reply = page.locator(".msg.assistant").last
    expect(reply).to_have_class("msg assistant streaming")  # followed again, still being written
    expect(reply).to_have_attribute("data-status", "completed")
    [(content,)] = stored(server, "SELECT content FROM message WHERE role = 'assistant' AND content LIKE 'Hello%'")
    assert reply.locator(".bubble").evaluate("bubble => bubble.source") == content
    assert sorted(stored(server, "SELECT status FROM run")) == [("completed",), ("completed",)]


def test_a_new_tab_is_signed_in_and_enter_signs_in(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(server.url)
        page.locator("#token-input").fill(token_for("alice"))
        page.locator("#token-input").press("Enter")
        expect(page.locator("#who")).to_have_text("alice")
        other = context.new_page()
        other.goto(server.url)
        expect(other.locator("#who")).to_have_text("alice")
        other.locator("#sign-out").click()  # and signing out signs out every tab
        expect(page.locator("#sign-in")).to_be_visible()
    finally:
        context.close()


# ---- issue 32: what a day of real use trips over --------------------------------------------


def at_bottom(page: Page) -> bool:
    return page.locator("#messages").evaluate("b => b.scrollHeight - b.scrollTop - b.clientHeight < 4")


def test_scrolling_up_mid_reply_stays_up_and_jump_to_latest_returns(page, server):
    first = chat_via_rest(server, "add buy milk")
    for title in ["call mom", "pay the rent", "water the plants"]:
        chat_via_rest(server, f"add {title}", first["conversation_id"])
    page.set_viewport_size({"width": 1280, "height": 600})
    sign_in(page, server)
    page.locator("#conversations li .title").first.click()
    expect(page.locator(".msg.assistant")).to_have_count(4)
    jump = page.get_by_role("button", name="Jump to latest")
    expect(jump).to_be_hidden()

    send(page, "hello")
    reply = page.locator(".msg.assistant").last
    expect(reply.locator(".bubble")).to_contain_text("todo assistant")
    page.locator("#messages").hover()
    page.mouse.wheel(0, -120)  # one notch up, a slow read: no snapping back
    expect(jump).to_be_visible()
    expect(reply).to_have_attribute("data-status", "completed")
    assert not at_bottom(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat_page_jump_to_latest.png"))
    jump.click()
    expect(jump).to_be_hidden()
    assert at_bottom(page)

    send(page, "hello")  # PageUp from the keyboard stops following too
    reply = page.locator(".msg.assistant").last
    expect(reply.locator(".bubble")).to_contain_text("todo assistant")
    page.locator("#messages").focus()
    page.keyboard.press("PageUp")
    expect(jump).to_be_visible()
    expect(reply).to_have_attribute("data-status", "completed")
    assert not at_bottom(page)
    jump.click()
    assert at_bottom(page)


@pytest.fixture
def asking(browser, settings) -> Iterator[tuple[Page, LiveServer]]:
    """A page on a server that asks before deleting a task."""
    live = start_live_server(msgspec.structs.replace(settings, offline_token_delay_ms=5, tool_approval="delete_task"))
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    script_errors: list[str] = []
    tab.on("pageerror", lambda error: script_errors.append(str(error)))
    try:
        yield tab, live
    finally:
        context.close()
        live.stop()
    assert script_errors == []


def ask_to_delete(page: Page, server: LiveServer, title: str) -> None:
    chat_via_rest(server, f"add {title}")
    sign_in(page, server)
    send(page, f"delete {title}")
    expect(page.locator(".approval .approval-question")).to_have_text(f"Delete the task “{title}”?")
    expect(page.locator("#send")).to_be_visible()


def test_a_new_message_turns_a_waiting_approval_card_to_declined_at_once(asking):
    page, server = asking
    ask_to_delete(page, server, "call the bank")
    page.route("**/chat/stream", lambda route: (page.wait_for_timeout(1500), route.continue_()))
    send(page, "list my tasks")  # sent instead of deciding: the server declines the call
    card = page.locator(".approval")
    try:
        expect(card.get_by_role("button")).to_have_count(0, timeout=1000)  # at once, before the answer
    finally:
        page.unroute_all(behavior="wait")
    expect(card.locator(".approval-decision")).to_have_text("Declined: you sent a new message instead")
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-status", "completed")
    assert stored(server, "SELECT title FROM task") == [("call the bank",)]
    page.reload()
    expect(page.locator(".approval .approval-decision")).to_have_text("Declined: you sent a new message instead")
    expect(page.locator(".approval button")).to_have_count(0)


def test_after_reject_the_tool_line_says_it_was_declined_before_and_after_a_reload(asking):
    page, server = asking
    ask_to_delete(page, server, "call the bank")
    line = page.locator(".msg.assistant .tool .tool-summary")
    expect(line).to_have_text("Deleting “call the bank”…")
    page.locator(".approval").get_by_role("button", name="Reject").click()
    declined = "Declined: “call the bank” was not deleted"
    expect(line).to_have_text([declined])
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-status", "completed")
    expect(line).to_have_text([declined])
    expect(page.locator(".tool.declined")).to_have_count(1)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat_page_declined.png"))
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-loaded", "true")
    expect(page.locator(".msg.assistant .tool .tool-summary")).to_have_text([declined])
    expect(page.locator(".tool.declined")).to_have_count(1)
    expect(page.locator(".tool.failed")).to_have_count(0)
    assert stored(server, "SELECT title FROM task") == [("call the bank",)]


def test_a_second_tab_shows_the_question_of_a_reply_started_in_the_first(browser, server):
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
        other.locator("#conversations li .title").first.click()
        expect(other.locator(".msg.user .bubble")).to_have_text(["add buy milk"])

        send(one, "hello")
        live = other.locator(".msg.assistant").nth(1)
        expect(live).to_have_class("msg assistant streaming")
        expect(other.locator(".msg.user .bubble")).to_have_text(["add buy milk", "hello"])  # the question, first
        assert other.locator(".msg").nth(2).get_attribute("class").startswith("msg user")
        expect(live).to_have_attribute("data-status", "completed")
        ARTIFACTS.mkdir(exist_ok=True)
        other.screenshot(path=str(ARTIFACTS / "chat_page_second_tab.png"))
    finally:
        for tab in tabs:
            tab.context.close()


def test_screen_readers_hear_the_question_turns_the_open_conversation_and_axe_passes_with_a_declined_card(
        browser, settings):
    require_node_clients()  # axe-core is pinned with them in tests/node
    live = start_live_server(msgspec.structs.replace(settings, offline_token_delay_ms=5, tool_approval="delete_task"))
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        chat_via_rest(live, "hello")
        screens = [("light", {"width": 1280, "height": 800}), ("dark", {"width": 1280, "height": 800}),
                   ("phone", {"width": 375, "height": 700})]
        for index, (scheme, viewport) in enumerate(screens):
            context = browser.new_context(viewport=viewport, color_scheme="dark" if scheme == "dark" else "light")
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            try:
                if index == 0:
                    ask_to_delete(page, live, "call the bank")
                    # The question is said, not "The reply is done."
                    expect(page.locator("#announce")).to_contain_text("Delete the task “call the bank”?")
                    page.locator(".approval").get_by_role("button", name="Reject").click()
                    expect(page.locator(".msg.assistant").last).to_have_attribute("data-status", "completed")
                else:
                    sign_in(page, live)
                    if scheme == "phone":
                        page.locator("#show-chats").click()
                    page.locator("#conversations li", has_text="delete call the bank").locator(".title").click()
                expect(page.locator(".approval .approval-decision")).to_have_text("Declined")
                # Turns named for who spoke; the open conversation marked; one h1 naming it.
                expect(page.get_by_role("article", name="You said")).to_have_count(1)
                expect(page.get_by_role("article", name="Assistant said")).to_have_count(2)
                if scheme != "phone":
                    expect(page.locator("#conversations [aria-current=page]")).to_have_text("delete call the bank")
                    expect(page.get_by_role("heading", level=1)).to_have_text("delete call the bank")
                assert run_axe(page) == [], scheme
                page.screenshot(path=str(ARTIFACTS / f"chat_page_declined_{scheme}.png"))
            finally:
                context.close()
    finally:
        live.stop()


def test_a_skip_link_leads_to_the_composer_and_each_conversation_is_one_tab_stop(page, server):
    chat_via_rest(server, "add buy milk")
    chat_via_rest(server, "list my tasks")
    sign_in(page, server)
    page.locator("input[name=transport]:checked").focus()  # the first control of the header
    page.keyboard.press("Shift+Tab")  # the one before it: the skip link comes first
    skip = page.get_by_role("link", name="Skip to the message box")
    expect(skip).to_be_focused()
    expect(skip).to_be_visible()
    page.keyboard.press("Enter")
    expect(page.locator("#input")).to_be_focused()

    titles = page.locator("#conversations li .title")
    titles.first.focus()
    page.keyboard.press("Tab")
    expect(titles.nth(1)).to_be_focused()  # not the first row's ✎ and ✕
    page.keyboard.press("ArrowRight")
    expect(page.locator("#conversations li").nth(1).locator(".rename")).to_be_focused()
    page.keyboard.press("ArrowRight")
    expect(page.locator("#conversations li").nth(1).locator(".delete")).to_be_focused()
    page.keyboard.press("ArrowUp")
    expect(titles.first).to_be_focused()


def test_a_counter_shows_near_the_size_limit_and_a_refused_message_keeps_the_composer_s_size(page, server):
    limit = server.settings.max_message_bytes
    sign_in(page, server)
    counter = page.locator("#counter")
    page.locator("#input").fill("x" * (limit // 2))
    expect(counter).to_be_hidden()  # far from the limit: nothing to count
    page.locator("#input").fill("x" * (limit - 100))
    expect(counter).to_be_visible()
    expect(counter).to_have_text(f"{limit - 100:,} / {limit:,} bytes")
    too_long = "line of text\n" * (limit // 13 + 10)
    page.locator("#input").fill(too_long)
    expect(counter).to_have_class("counter over")
    height = page.locator("#input").evaluate("i => i.getBoundingClientRect().height")
    assert height > 100
    page.locator("#input").press("Enter")
    expect(page.locator("#banner")).to_contain_text(f"longer than {limit} bytes")
    expect(page.locator("#input")).to_have_value(too_long.strip())
    assert page.locator("#input").evaluate("i => i.getBoundingClientRect().height") >= height - 2  # not squashed
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat_page_too_long.png"))


def test_enter_during_a_reply_says_why_nothing_was_sent_and_keeps_the_text(page, server):
    sign_in(page, server)
    send(page, "hello")
    reply = page.locator(".msg.assistant").last
    expect(reply.locator(".bubble")).to_contain_text("todo assistant")
    send(page, "add buy milk")
    expect(page.locator("#banner")).to_contain_text("A reply is still being written")
    expect(page.locator("#input")).to_have_value("add buy milk")
    expect(reply).to_have_attribute("data-status", "completed")
    expect(page.locator("#banner")).to_be_hidden()  # over once the reply ends
    page.locator("#input").press("Enter")
    expect(page.locator(".msg.user .bubble")).to_have_text(["hello", "add buy milk"])


def test_an_approval_card_says_when_it_was_decided_not_when_the_page_was_drawn(asking):
    page, server = asking
    ask_to_delete(page, server, "call the bank")
    page.locator(".approval").get_by_role("button", name="Reject").click()
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-status", "completed")
    expect(page.locator(".approval .approval-time")).to_contain_text("Decided at")
    conversation_id = page.evaluate("JSON.parse(sessionStorage.getItem('chat.conversation'))")
    [approval] = httpx.get(f"{server.url}/api/alice/conversations/{conversation_id}", headers=auth("alice")).json()[
        "approvals"]
    iso = page.evaluate("at => new Date(at).toISOString()", approval["decided_at"])
    asked = page.evaluate("at => new Date(at).toISOString()", approval["created_at"])
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-loaded", "true")
    expect(page.locator(".approval .approval-time time")).to_have_attribute("datetime", iso)
    # The reply that only asked says when it asked.
    turn = page.locator(".msg.assistant", has=page.locator(".approval"))
    expect(turn.locator(".meta time")).to_have_attribute("datetime", asked)


def test_the_sixtieth_oldest_conversation_is_reachable_and_new_chat_stays_in_reach(browser, settings):
    live = start_live_server(msgspec.structs.replace(settings, offline_token_delay_ms=0, messages_per_minute=100))
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        for n in range(60):
            chat_via_rest(live, f"add chore {n:02}")
        sign_in(page, live)
        rows = page.locator("#conversations li")
        expect(rows).to_have_count(50)
        oldest = page.locator("#conversations li", has_text="add chore 00")
        expect(oldest).to_have_count(0)
        page.locator("#sidebar").evaluate("box => box.scrollTo(0, box.scrollHeight)")
        expect(rows).to_have_count(60)
        oldest.locator(".title").scroll_into_view_if_needed()
        new_chat = page.locator("#new-chat").bounding_box()
        sidebar = page.locator("#sidebar").bounding_box()
        assert sidebar["y"] <= new_chat["y"] <= sidebar["y"] + 20  # stuck at the top, in view
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "chat_page_sixty_conversations.png"))
        oldest.locator(".title").click()
        expect(page.locator(".msg.user .bubble")).to_have_text(["add chore 00"])
        expect(page.get_by_role("button", name="Show more conversations")).to_be_hidden()  # all 60 shown
    finally:
        context.close()
        live.stop()


def test_back_online_a_failed_send_s_banner_goes_and_sending_works_at_once(page, server):
    sign_in(page, server)
    page.context.set_offline(True)
    expect(page.locator("#banner")).to_contain_text("You are offline")
    send(page, "add buy milk")
    expect(page.locator("#banner")).to_contain_text("cannot be reached")
    expect(page.locator("#input")).to_have_value("add buy milk")  # given back to send again
    page.context.set_offline(False)
    expect(page.locator("#banner")).to_be_hidden(timeout=1000)  # within a second of `online`
    page.locator("#input").press("Enter")
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-status", "completed")
    expect(page.locator("#tasks li .title")).to_have_text(["buy milk"])
