"""Every limit the server enforces, in one place, each check raising a coded error.

The values come from the settings (``app/settings.py`` names the variables); the checks run
in the domain, so every transport refuses the same input the same way.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta

import msgspec

from domain import text
from domain.errors import InvalidInput, LimitExceeded, QuotaExceeded

PER_MINUTE = timedelta(minutes=1)
# Column sizes (domain/tables.py): checked here, so SQLite, which would keep longer values,
# refuses exactly what PostgreSQL refuses.
MAX_USER_ID_CHARS = 128
MAX_CONVERSATION_TITLE_CHARS = 200
MAX_TASK_TITLE_CHARS = 500
MAX_CLIENT_ID_CHARS = 64  # ids a client chooses: a send's, a chat's
MAX_SEQ = 2**31 - 1  # run_event.seq is a 32-bit integer on PostgreSQL
MAX_USAGE_DAYS = 366  # one GET /usage reads at most a year of days


def usage_day(at: datetime) -> date:
    """The day a token is counted on: days are UTC, the same for every user and instance."""
    return at.astimezone(UTC).date()


def next_day(at: datetime) -> datetime:
    """The next UTC midnight after ``at``: when a day's quota starts afresh."""
    return datetime.combine(usage_day(at) + timedelta(days=1), time(), tzinfo=UTC)


def usage_days(first: date, last: date) -> tuple[date, date]:
    """The days a usage report covers: at most the last ``MAX_USAGE_DAYS`` up to ``last`` (the
    report's ``from`` says where it starts); none when ``first`` is after ``last``. Any two
    dates get an answer, as the OpenAPI document promises: it cannot state a rule across two
    parameters."""
    if (last - first).days >= MAX_USAGE_DAYS:
        first = last - timedelta(days=MAX_USAGE_DAYS - 1)
    return first, last


def check_text(value: str, field: str, what: str, max_chars: int | None = None) -> str:
    """``value`` as both engines store it alike, or ``InvalidInput`` naming ``field``."""
    if problem := text.problem(value):
        raise InvalidInput(f"{what} {problem}.", field=field)
    if max_chars is not None and len(value) > max_chars:
        raise InvalidInput(f"{what} is longer than {max_chars} characters.", field=field)
    return value


def check_user_id(user_id: str) -> str:
    if not user_id or not user_id.isprintable():
        raise InvalidInput("A user id is printable text, at least one character.", field="user_id")
    return check_text(user_id, "user_id", "The user id", MAX_USER_ID_CHARS)


def check_conversation_title(title: str) -> str:
    """A title a person can see: a blank one would leave the conversation unnamed in every list."""
    if not title.strip():
        raise InvalidInput("A conversation needs a title (not blank).", field="title")
    return check_text(title, "title", "The title", MAX_CONVERSATION_TITLE_CHARS)


def check_task_title(title: str) -> str:
    return check_text(title, "title", "The task title", MAX_TASK_TITLE_CHARS)


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    max_message_bytes: int = 16 * 1024
    max_frame_bytes: int = 64 * 1024  # one WebSocket frame
    active_runs_per_user: int = 4
    messages_per_minute: int = 30
    max_turns: int = 10
    max_run_duration_s: float = 300.0
    followers_per_user: int = 32  # open streams and socket subscriptions, each holding a reader
    send_timeout_s: float = 30.0  # a client that takes no bytes for this long is dropped
    conversations_page: int = 50  # a list's default size
    max_conversations_page: int = 200
    tokens_per_day: int | None = None  # input + output tokens of one user per UTC day; None: no quota
    items_page: int = 20  # ChatKit's default page, as the reference server's
    max_items_page: int = 100

    # -- what a user sends ------------------------------------------------------------------

    def check_message(self, message: str) -> str:
        if not message.strip():
            raise InvalidInput("The message is empty.", field="message")
        check_text(message, "message", "The message")
        if len(message.encode()) > self.max_message_bytes:
            raise InvalidInput(f"The message is longer than {self.max_message_bytes} bytes.", field="message")
        return message

    def check_frame(self, size: int) -> None:
        if size > self.max_frame_bytes:
            raise LimitExceeded(f"Frames are limited to {self.max_frame_bytes} bytes.")

    # -- how much a user runs ---------------------------------------------------------------

    def check_runs(self, active: int, recent: int, oldest_recent: datetime | None, now: datetime,
                   tokens_today: int = 0) -> None:
        """``active`` running replies, ``recent`` started in the last minute, the oldest of
        which started at ``oldest_recent``, ``tokens_today`` used by finished replies today;
        counted by the store, in the same transaction."""
        if self.tokens_per_day is not None and tokens_today >= self.tokens_per_day:
            # Checked first: no wait shorter than the day's end would help.
            raise QuotaExceeded(
                f"You have used your {self.tokens_per_day} tokens for today; "
                "new messages are accepted again after midnight UTC.",
                retry_after_s=max(1, math.ceil((next_day(now) - now).total_seconds())),
            )
        if active >= self.active_runs_per_user:
            raise LimitExceeded(
                f"You already have {active} replies running (the limit is {self.active_runs_per_user}); "
                "wait for one to finish or cancel it.", retry_after_s=2,
            )
        if recent >= self.messages_per_minute:
            wait = (oldest_recent or now) + PER_MINUTE - now
            raise LimitExceeded(
                f"You can send {self.messages_per_minute} messages a minute; try again shortly.",
                retry_after_s=max(1, math.ceil(wait.total_seconds())),
            )

    # -- how much a page holds --------------------------------------------------------------

    def conversations_page_size(self, asked: int | None) -> int:
        return self.conversations_page if asked is None else max(1, min(asked, self.max_conversations_page))

    def items_page_size(self, asked: int | None) -> int:
        return self.items_page if asked is None else max(1, min(asked, self.max_items_page))
