"""Tool approval answers as the AI SDK and AG-UI clients send them: every answer to a run's
calls together, those a request before already recorded included."""

from __future__ import annotations

from domain.approvals import Decision
from domain.errors import AlreadyDecided
from domain.runs import ActiveRun, RunManager
from domain.runs.observer import Transport


async def decide_together(runs: RunManager, user: str, run_id: str, decisions: list[Decision],
                          transport: Transport) -> ActiveRun | list[str]:
    """Each answer recorded: the continuation once the run's last call is decided, else the
    calls still waiting. An answer recorded before is passed over (the SDK's message keeps a
    call it answered in an earlier request answered); ``AlreadyDecided`` when every one was."""
    outcome: ActiveRun | list[str] | None = None
    refused: AlreadyDecided | None = None
    for decision in decisions:
        try:
            outcome = await runs.decide(user, run_id, decision, transport=transport)
        except AlreadyDecided as exc:
            refused = exc
    if outcome is None:
        raise refused or AlreadyDecided("These tool calls were already decided.")
    return outcome
