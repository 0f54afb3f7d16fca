"""Start or follow a reply: the one call a streaming transport makes for a send.

A send is a new message, a regenerate (``again``), the same client message id again (a
retried send: the reply it started, from its start), or a run's tool approvals answered (the
continuation; answers sent again follow the conversation's running reply). Whatever it was,
the transport gets a ``Subscription`` to read, and never handles ``AlreadyStarted`` itself.
"""

from __future__ import annotations

from domain.approvals import Decision
from domain.errors import AlreadyDecided, AlreadyStarted
from domain.runs.execution import ActiveRun
from domain.runs.manager import RunManager
from domain.runs.observer import Transport
from domain.runs.reading import OnLeave, Subscription


async def start_or_find(
    runs: RunManager, user_id: str, message: str, conversation_id: str | None = None, *,
    again: str | None = None, client_message_id: str | None = None, client_conversation_id: str | None = None,
    transport: Transport = "other",
) -> ActiveRun | str:
    """The run the send starts; for a retried send (its ``client_message_id`` started a run
    that runs elsewhere or has finished), that run's id."""
    try:
        return await runs.start(user_id, message, conversation_id, again=again, client_message_id=client_message_id,
                                client_conversation_id=client_conversation_id, transport=transport)
    except AlreadyStarted as sent:
        return sent.run_id


async def start_or_follow(
    runs: RunManager, user_id: str, message: str, conversation_id: str | None = None, *, on_leave: OnLeave,
    idle: bool = True, again: str | None = None, client_message_id: str | None = None,
    client_conversation_id: str | None = None, transport: Transport = "other",
) -> Subscription:
    """The send's reply, followed: the run it starts (leaving it is ``on_leave``), or, for a
    retried send, the run it started, from its start (leaving never stops that one)."""
    run = await start_or_find(runs, user_id, message, conversation_id, again=again,
                              client_message_id=client_message_id,
                              client_conversation_id=client_conversation_id, transport=transport)
    if isinstance(run, str):
        return await runs.follow(user_id, run, idle=idle)
    return runs.subscribe(run, on_leave=on_leave, idle=idle)


async def decide_all(runs: RunManager, user_id: str, run_id: str, decisions: list[Decision],
                     transport: Transport) -> ActiveRun | list[str]:
    """Each answer recorded: the continuation once the run's last call is decided, else the
    calls still waiting. An answer recorded before is passed over (a client's message keeps a
    call it answered in an earlier request answered); ``AlreadyDecided`` when every one was."""
    outcome: ActiveRun | list[str] | None = None
    refused: AlreadyDecided | None = None
    for decision in decisions:
        try:
            outcome = await runs.decide(user_id, run_id, decision, transport=transport)
        except AlreadyDecided as exc:
            refused = exc
    if outcome is None:
        raise refused or AlreadyDecided("These tool calls were already decided.")
    return outcome


async def continue_or_follow(
    runs: RunManager, user_id: str, run_id: str, decisions: list[Decision], client_conversation_id: str, *,
    on_leave: OnLeave, idle: bool = True, transport: Transport,
) -> Subscription | list[str]:
    """The continuation the answers start, followed; the call ids still waiting when other
    calls of the run are not decided yet. Answers sent again (a retried request) follow the
    conversation's running reply, if one runs; otherwise ``AlreadyDecided``."""
    try:
        decided = await decide_all(runs, user_id, run_id, decisions, transport)
    except AlreadyDecided:
        if (running := await running_reply(runs, user_id, client_conversation_id, idle=idle)) is None:
            raise
        return running
    if isinstance(decided, list):
        return decided
    return runs.subscribe(decided, on_leave=on_leave, idle=idle)


async def running_reply(runs: RunManager, user_id: str, client_conversation_id: str, *,
                        idle: bool = True) -> Subscription | None:
    """The reply running in the conversation the client knows by its own id, from its start,
    followed; None when none runs."""
    conversation = await runs.conversation_of_client(user_id, client_conversation_id)
    run_id = conversation and await runs.running_in(user_id, conversation)
    return await runs.follow(user_id, run_id, idle=idle) if run_id else None
