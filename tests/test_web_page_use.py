"""Issue 32, the page as a day of real use finds it: each test drives Chromium against the real
app (see tests/test_web_page.py for the fixtures) and checks what a user sees."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import msgspec
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import LiveServer, auth, start_live_server
from tests.test_web_page import (  # noqa: F401 (fixtures)
    ARTIFACTS,
    TIMEOUT_MS,
    browser,
    chat_via_rest,
    database_url,
    page,
    run_axe,
    send,
    server,
    sign_in,
    stored,
)
from tests.test_ai_sdk import require_node_clients


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
