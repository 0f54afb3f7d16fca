"""The JSON bodies of ``POST /chat``, ``POST /chat/stream`` and a run's approvals.

Only its shape is checked here; what a message may hold is the domain's rule
(``domain/limits.py``), the same on every transport.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from litestar.openapi.spec import Schema

from domain.limits import MAX_CLIENT_ID_CHARS
from transports.route_specs import NOT_BLANK, TEXT

OnDisconnect = Literal["cancel", "continue"]


class ChatRequest(msgspec.Struct, frozen=True):
    # What the domain accepts (``RunManager.start``), for the document: a message that is not
    # blank, or ``again`` (a regenerate) with an empty one.
    __schema_extra__ = {"any_of": [
        Schema(properties={"message": Schema(**NOT_BLANK)}),
        Schema(required=["again"], properties={"again": Schema(type="string"), "message": Schema(const="")}),
    ]}

    message: Annotated[str, msgspec.Meta(
        description="What the user said: not blank (empty with `again`).", extra_json_schema={"extra": TEXT})]
    conversation_id: Annotated[
        str | None, msgspec.Meta(description="Continue this conversation; omit to start a new one.")
    ] = None
    on_disconnect: Annotated[
        OnDisconnect,
        msgspec.Meta(description="What a dropped stream means: `cancel` (Stop, the default) or `continue`."),
    ] = "cancel"
    # The bounds sit on the str, not on the optional around it: Litestar's document reads them
    # only there.
    client_message_id: Annotated[str, msgspec.Meta(
        min_length=1, max_length=MAX_CLIENT_ID_CHARS, extra_json_schema={"extra": TEXT},
        description=(
            "Your id for this send (unique per user). Sending it again, after a dropped connection, "
            "answers the reply it started instead of starting another."
        ),
    )] | None = None
    again: Annotated[
        str | None,
        msgspec.Meta(description=(
            "Answer this earlier user message of the conversation anew (regenerate), dropping what followed "
            "it; with a non-empty `message`, that message's text is replaced first (edit and resend)."
        )),
    ] = None


class ApprovalDecision(msgspec.Struct, frozen=True):
    call_id: Annotated[str, msgspec.Meta(description="The `call_id` of the `approval_request` event.")]
    approve: Annotated[bool, msgspec.Meta(description="`true`: the tool runs; `false`: it does not, the model is told.")]
    reason: Annotated[
        str | None, msgspec.Meta(description="Why (told to the model on a rejection).")
    ] = None
    on_disconnect: Annotated[
        OnDisconnect,
        msgspec.Meta(description="What a dropped stream of the continuation means: `cancel` (Stop) or `continue`."),
    ] = "cancel"
