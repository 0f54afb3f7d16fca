"""Garbage collector settings for a serving process."""

from __future__ import annotations

import gc

# Every streamed event allocates SDK, pydantic and asyncio objects: with the default 700 a
# young collection ran every few events, and the older generations kept re-scanning the few
# hundred thousand objects that importing Litestar, pydantic and the SDK leaves behind.
# Measured at 250 paced replies: TTFT p50 0.86 -> 0.66 s, gap p99 50 -> 39 ms.
YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Call once the process has imported and built what it keeps until it exits."""
    gc.collect()
    gc.freeze()  # what exists now lives as long as the process: never scan it again
    gc.set_threshold(YOUNG_THRESHOLD, 20, 20)
