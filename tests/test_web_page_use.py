"""Issue 32, the page as a day of real use finds it: each test drives Chromium against the real
app (see tests/test_web_page.py for the fixtures) and checks what a user sees."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import LiveServer, start_live_server
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
