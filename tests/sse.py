"""Reading plain SSE bodies the way a naive client does: split on blank lines."""

from __future__ import annotations

import json
import re

_FRAME = re.compile(rb"data: (\{.*?\})\n\n|: ping\n\n", re.S)


def parse_frames(body: bytes) -> list[dict]:
    """Every frame must be exactly ``data: <json>\\n\\n`` (or a ``: ping`` comment)."""
    events, position = [], 0
    for match in _FRAME.finditer(body):
        assert match.start() == position, f"unexpected bytes at {position}: {body[position:match.start()]!r}"
        position = match.end()
        if match.group(1):
            events.append(json.loads(match.group(1)))
    assert position == len(body), f"trailing bytes: {body[position:]!r}"
    return events


def text_of(events: list[dict]) -> str:
    return "".join(e["content"] for e in events if e["type"] == "text")
