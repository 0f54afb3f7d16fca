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
