"""``POST /api/{user_id}/conversations/{id}/fork``: a new conversation copied from one, up to a message."""

from __future__ import annotations

from functools import partial
from typing import Annotated

import msgspec
from litestar import post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from piccolo.engine.base import Engine

from domain import fork
from domain.errors import NotFound
from domain.fork import ForkedConversation
from domain.runs import RunManager
from transports.http_errors import errors


class ForkRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    message_id: Annotated[str | None, msgspec.Meta(
        description="Copy up to and including this message of the conversation; left out: all of it."
    )] = None


@post("/conversations/{conversation_id:str}/fork", status_code=201, tags=["conversations"],
      summary="Fork a conversation: a new one holding its messages up to one of them",
      description=(
          "Copies the conversation's messages (tool calls and what the model was told included), up to "
          "and including `message_id`, into a new conversation titled like it with ` (fork)`, and answers "
          "it; the original is unchanged, and sending a message to the new one goes on from there. 404 "
          "for another user's conversation, or a message that is not one of it. The body is optional."
      ),
      responses=errors(NotFound, "too_large"))
async def fork_conversation(
    user: NamedDependency[str], db: NamedDependency[Engine], runs: NamedDependency[RunManager],
    conversation_id: FromPath[str], data: JSONBody[ForkRequest | None] = None,
) -> ForkedConversation:
    message_id = data.message_id if data is not None else None
    return await fork.fork(db, user, conversation_id, message_id, partial(runs.feed.tell, user))
