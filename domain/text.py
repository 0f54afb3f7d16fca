"""Text that both engines store alike.

PostgreSQL refuses a NUL in text and lone UTF-16 surrogates cannot be encoded as UTF-8 at all;
SQLite would keep either. What a user sends with them is refused (``Limits``); what a model or
a tool produces is cleaned once, here, so saving a reply can never fail on its content.
"""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"


def problem(text: str) -> str | None:
    """Why ``text`` cannot be stored as it is, or None."""
    if "\x00" in text:
        return "contains a NUL character"
    if not _encodable(text):
        return "is not valid Unicode (a lone surrogate)"
    return None


def clean(text: str) -> str:
    """``text`` with every NUL and lone surrogate replaced by U+FFFD; itself when it is fine
    (the common case costs one scan for NUL and one encode)."""
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
    if _encodable(text):
        return text
    return "".join(REPLACEMENT if "\ud800" <= c <= "\udfff" else c for c in text)


def clean_value(value: Any) -> Any:
    """A JSON value (a tool's arguments or result) with every string in it cleaned."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {clean(str(k)): clean_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_value(v) for v in value]
    return value


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
