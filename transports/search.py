"""``GET /api/{user_id}/search``: full-text search over the user's own conversations."""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from piccolo.engine.base import Engine

from domain import search as searching
from domain.search import MAX_PAGE, MAX_QUERY_CHARS, MAX_WORDS, RANKED, InvalidCursor, QueryTooLong, SearchPage
from transports.http_errors import errors


@get("/search", summary="Search the user's conversations: titles and messages, best match first",
     tags=["conversations"],
     description=(
         "Every word of `q` must match (case and accents ignored; a word of two letters or more also "
         f"matches the words it begins); text in double quotes is a phrase; the first {MAX_WORDS} words count. "
         "Other characters only separate words. A query without a word answers no results; one longer "
         f"than {MAX_QUERY_CHARS} characters is a 400 `query_too_long`. Each result is a message to open "
         "the conversation at (a title matches as its conversation's first message), with a snippet whose "
         f"`snippet_parts` mark the matched words. When more than {RANKED} messages match, the newest "
         f"{RANKED} are ranked. Pages: pass `next_cursor` back as `cursor` (400 `invalid_cursor` for another)."
     ),
     responses=errors(QueryTooLong, InvalidCursor))
async def search_conversations(
    user: NamedDependency[str],
    db: NamedDependency[Engine],
    # The bounds are the domain's (coded errors), stated here for the document only.
    q: Annotated[str, QueryParameter(description="What to look for.",
                                     schema_extra={"maxLength": MAX_QUERY_CHARS})] = "",
    limit: Annotated[int | None, QueryParameter(
        description=f"Results per page: 20, or this many between 1 and {MAX_PAGE} (a number outside is brought "
        "inside)."
    )] = None,
    cursor: Annotated[str | None, QueryParameter(description="The `next_cursor` of the page before.",
                                                 schema_extra={"pattern": "^[0-9]{0,9}$"})] = None,
) -> SearchPage:
    return await searching.search(db, user, q, limit, cursor)
