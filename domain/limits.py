"""Every limit the server enforces, in one place, each check raising a coded error.

The values come from the settings (``app/settings.py`` names the variables); the checks run
in the domain, so every transport refuses the same input the same way.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import msgspec

from domain.errors import InvalidInput, LimitExceeded

PER_MINUTE = timedelta(minutes=1)


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    max_message_bytes: int = 16 * 1024
    max_frame_bytes: int = 64 * 1024  # one WebSocket frame
    active_runs_per_user: int = 4
    messages_per_minute: int = 30
    max_turns: int = 10
    max_run_duration_s: float = 300.0
    conversations_page: int = 50  # a list's default size
    max_conversations_page: int = 200
    items_page: int = 20  # ChatKit's default page, as the reference server's
    max_items_page: int = 100

    # -- what a user sends ------------------------------------------------------------------

    def check_message(self, message: str) -> str:
        if not message.strip():
            raise InvalidInput("The message is empty.", field="message")
        if len(message.encode()) > self.max_message_bytes:
            raise InvalidInput(f"The message is longer than {self.max_message_bytes} bytes.", field="message")
        return message

    def check_frame(self, size: int) -> None:
        if size > self.max_frame_bytes:
            raise LimitExceeded(f"Frames are limited to {self.max_frame_bytes} bytes.")

    # -- how much a user runs ---------------------------------------------------------------

    def check_runs(self, active: int, recent: int, oldest_recent: datetime | None, now: datetime) -> None:
        """``active`` running replies, ``recent`` started in the last minute, the oldest of
        which started at ``oldest_recent``; counted by the store, in the same transaction."""
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
