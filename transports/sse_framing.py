"""Server-Sent Events framing, for every transport that streams over SSE.

Frames are exactly ``data: <json>\\n\\n`` (naive clients split on blank lines), built from
bytes encoded once; Litestar's own SSE writer adds CRLFs and fields we do not want.
"""

from __future__ import annotations

from collections.abc import Iterable

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
PING = b": ping\n\n"  # the keep-alive an idle stream sends: a comment, no event


def data_frames(batch: Iterable[bytes]) -> bytes:
    return b"".join(b"data: " + event + b"\n\n" for event in batch)


def id_data_frames(batch: list[bytes], first_seq: int) -> bytes:
    return b"".join(
        b"id: %d\ndata: " % (first_seq + n) + event + b"\n\n" for n, event in enumerate(batch)
    )
