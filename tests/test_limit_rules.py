"""Limits: every rule the server enforces, checked directly on the domain object."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.errors import InvalidInput, LimitExceeded
from domain.limits import Limits

NOW = datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC)


# -- messages -----------------------------------------------------------------------------------


@pytest.mark.parametrize("message", ["", " ", "   ", "\n", "\t\r\n  ", "\u3000\u00a0"])
def test_empty_or_whitespace_only_message_is_refused(message):
    with pytest.raises(InvalidInput) as refused:
        Limits().check_message(message)
    assert refused.value.message == "The message is empty."
    assert refused.value.field == "message"
    assert refused.value.code == "invalid_input"
    assert refused.value.allow_retry is False


def test_ordinary_message_is_accepted_and_returned_unchanged():
    assert Limits().check_message("add buy milk") == "add buy milk"


def test_message_with_surrounding_whitespace_is_accepted():
    assert Limits().check_message("  hi\n").strip() == "hi"


def test_message_of_exactly_max_bytes_is_accepted():
    limits = Limits(max_message_bytes=10)
    assert limits.check_message("a" * 10) == "a" * 10
    assert limits.check_message("é" * 5) == "é" * 5  # 10 bytes in UTF-8


def test_message_one_byte_over_the_limit_is_refused():
    with pytest.raises(InvalidInput) as refused:
        Limits(max_message_bytes=10).check_message("a" * 11)
    assert refused.value.field == "message"
    assert refused.value.code == "invalid_input"
    assert "10 bytes" in refused.value.message


def test_multibyte_message_under_the_char_count_but_over_the_byte_count_is_refused():
    message = "é" * 6  # 6 characters, 12 bytes
    assert len(message) < 10
    with pytest.raises(InvalidInput) as refused:
        Limits(max_message_bytes=10).check_message(message)
    assert refused.value.field == "message"
    assert refused.value.code == "invalid_input"


def test_default_limit_counts_utf8_bytes_not_characters():
    limits = Limits()
    emoji = "😀"  # 4 bytes
    fits = emoji * (limits.max_message_bytes // 4)
    assert limits.check_message(fits) == fits
    too_long = fits + "é"  # far fewer characters than max_message_bytes, 2 bytes too many
    assert len(too_long) < limits.max_message_bytes
    with pytest.raises(InvalidInput):
        limits.check_message(too_long)


def test_empty_check_comes_before_the_length_check():
    with pytest.raises(InvalidInput) as refused:
        Limits(max_message_bytes=3).check_message(" " * 50)
    assert refused.value.message == "The message is empty."


# -- frames -------------------------------------------------------------------------------------


def test_frame_of_exactly_max_bytes_is_accepted():
    limits = Limits(max_frame_bytes=1000)
    limits.check_frame(1000)
    limits.check_frame(0)


def test_frame_over_max_bytes_is_refused_with_limit_exceeded():
    with pytest.raises(LimitExceeded) as refused:
        Limits(max_frame_bytes=1000).check_frame(1001)
    assert refused.value.code == "limit_exceeded"
    assert "1000 bytes" in refused.value.message


def test_default_frame_limit_is_64_kib():
    Limits().check_frame(64 * 1024)
    with pytest.raises(LimitExceeded):
        Limits().check_frame(64 * 1024 + 1)


# -- runs ---------------------------------------------------------------------------------------


def test_runs_under_both_limits_are_allowed():
    limits = Limits(active_runs_per_user=4, messages_per_minute=30)
    limits.check_runs(active=3, recent=29, oldest_recent=NOW - timedelta(seconds=5), now=NOW)
    limits.check_runs(active=0, recent=0, oldest_recent=None, now=NOW)


@pytest.mark.parametrize("active", [4, 5, 100])
def test_too_many_active_runs_is_refused_with_retry_after_two_seconds(active):
    with pytest.raises(LimitExceeded) as refused:
        Limits(active_runs_per_user=4).check_runs(active=active, recent=0, oldest_recent=None, now=NOW)
    assert refused.value.code == "limit_exceeded"
    assert refused.value.allow_retry is True
    assert refused.value.retry_after_s == 2
    assert "(the limit is 4)" in refused.value.message


def test_active_limit_wins_when_both_limits_are_reached():
    limits = Limits(active_runs_per_user=1, messages_per_minute=2)
    with pytest.raises(LimitExceeded) as refused:
        limits.check_runs(active=1, recent=2, oldest_recent=NOW - timedelta(seconds=1), now=NOW)
    assert refused.value.retry_after_s == 2
    assert "running" in refused.value.message


@pytest.mark.parametrize(("oldest_age", "retry_after_s"), [
    (timedelta(seconds=45), 15),
    (timedelta(seconds=10.5), 50),  # 49.5 s rounds up
    (timedelta(seconds=0), 60),
    (timedelta(seconds=59, milliseconds=900), 1),  # 0.1 s rounds up to 1
    (timedelta(seconds=60), 1),  # leaves the window now: still at least 1
    (timedelta(seconds=75), 1),  # already outside the window: never 0 or negative
])
def test_too_many_recent_messages_says_when_the_oldest_leaves_the_minute(oldest_age, retry_after_s):
    limits = Limits(messages_per_minute=3)
    with pytest.raises(LimitExceeded) as refused:
        limits.check_runs(active=0, recent=3, oldest_recent=NOW - oldest_age, now=NOW)
    assert refused.value.code == "limit_exceeded"
    assert refused.value.retry_after_s == retry_after_s
    assert "3 messages a minute" in refused.value.message


def test_too_many_recent_messages_without_a_known_oldest_waits_a_full_minute():
    with pytest.raises(LimitExceeded) as refused:
        Limits(messages_per_minute=3).check_runs(active=0, recent=5, oldest_recent=None, now=NOW)
    assert refused.value.retry_after_s == 60


def test_recent_count_one_below_the_per_minute_limit_is_allowed():
    Limits(messages_per_minute=3).check_runs(active=0, recent=2, oldest_recent=NOW, now=NOW)


# -- page sizes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("asked", "size"), [(None, 50), (0, 1), (-5, 1), (1, 1), (73, 73), (200, 200),
                                             (201, 200), (10**9, 200)])
def test_conversations_page_size_defaults_and_clamps(asked, size):
    assert Limits().conversations_page_size(asked) == size


@pytest.mark.parametrize(("asked", "size"), [(None, 20), (0, 1), (-1, 1), (7, 7), (100, 100),
                                             (101, 100), (10**9, 100)])
def test_items_page_size_defaults_and_clamps(asked, size):
    assert Limits().items_page_size(asked) == size


def test_page_sizes_follow_configured_values():
    limits = Limits(conversations_page=5, max_conversations_page=8, items_page=3, max_items_page=4)
    assert limits.conversations_page_size(None) == 5
    assert limits.conversations_page_size(50) == 8
    assert limits.items_page_size(None) == 3
    assert limits.items_page_size(50) == 4
