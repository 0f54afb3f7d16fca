"""Token usage per user per UTC day: what ``GET /usage`` reads. The run store adds to it as
each run finishes (``domain/runs/store.py``); the quota reads it at each start."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import msgspec

from domain.limits import usage_day, usage_days
from domain.tables import DailyUsage


class DayUsage(msgspec.Struct, frozen=True):
    day: date
    input_tokens: int = 0
    output_tokens: int = 0
    runs: int = 0  # replies that finished that day


class UsageReport(msgspec.Struct, frozen=True, rename={"first": "from", "last": "to"}):
    """Every day from ``from`` to ``to`` (UTC, both included), days without use as zeros."""

    first: date
    last: date
    input_tokens: int
    output_tokens: int
    days: list[DayUsage]
    tokens_per_day: int | None  # the quota; null: none
    tokens_left_today: int | None  # what today's quota leaves; null: no quota


async def usage(user_id: str, first: date | None, last: date | None, tokens_per_day: int | None,
                at: datetime) -> UsageReport:
    """``to`` is today unless given, ``from`` is ``to`` unless given; a range longer than the
    limit is cut to its last days, and ``from`` after ``to`` covers no day."""
    today = usage_day(at)
    last = last or today
    first, last = usage_days(first or last, last)
    rows = await DailyUsage.select(
        DailyUsage.day, DailyUsage.input_tokens, DailyUsage.output_tokens, DailyUsage.runs
    ).where(DailyUsage.user_id == user_id, DailyUsage.day >= first, DailyUsage.day <= last)
    found = {row["day"]: msgspec.convert(row, DayUsage) for row in rows}
    days = [found.get(day, DayUsage(day)) for day in (first + timedelta(n) for n in range((last - first).days + 1))]
    left = None
    if tokens_per_day is not None:
        used = await DailyUsage.select(DailyUsage.input_tokens, DailyUsage.output_tokens).where(
            DailyUsage.user_id == user_id, DailyUsage.day == today
        ).first()
        left = max(0, tokens_per_day - (used["input_tokens"] + used["output_tokens"] if used else 0))
    return UsageReport(
        first=first, last=last, input_tokens=sum(d.input_tokens for d in days),
        output_tokens=sum(d.output_tokens for d in days), days=days, tokens_per_day=tokens_per_day,
        tokens_left_today=left,
    )
