"""``GET /api/{user_id}/search``: full-text search over the user's own conversations."""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.params import QueryParameter
from piccolo.engine.base import Engine

from domain import search as searching
from domain.search import MAX_PAGE, MAX_QUERY_CHARS, SearchPage
from transports.route_specs import AUTH_ERRORS


@get("/search", summary="Search the user's conversations: titles and messages, best match first",
     tags=["conversations"],
     description=(
         "Every word of `q` must match (case and accents ignored; a word of two letters or more also "
         "matches longer words it begins); text in double quotes is a phrase. Other characters only "
         "separate words. A query without a word answers no results; one longer than "
         f"{MAX_QUERY_CHARS} characters is a 400 `query_too_long`. Each result is a message "
         "(`message_id`) or, when none of a conversation's messages matched, its title "
         "(`message_id` null), with a snippet whose `snippet_parts` mark the matched words. "
         "Pages: pass `next_cursor` back as `cursor` (400 `invalid_cursor` for another)."
     ),
     raises=[*AUTH_ERRORS, ValidationException])
async def search_conversations(
    user: NamedDependency[str],
    db: NamedDependency[Engine],
    q: Annotated[str, QueryParameter(description="What to look for.")] = "",
    limit: Annotated[int | None, QueryParameter(description=f"Results per page, 1 to {MAX_PAGE} (20).")] = None,
    cursor: Annotated[str | None, QueryParameter(description="The `next_cursor` of the page before.")] = None,
) -> SearchPage:
    return await searching.search(db, user, q, limit, cursor)
