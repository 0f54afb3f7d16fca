"""Runs: start one, subscribe to it, cancel it; each outlives the connection that started it.

- ``manager``: the commands (start, subscribe, follow, cancel, close) and background loops;
- ``execution``: one run executing here, the SDK's stream as chat events, what a cut-short
  run leaves behind;
- ``replies``: start-or-follow, the one call a transport makes for a send (a message, a
  regenerate, a retried send, an approval's continuation);
- ``log`` and ``reading``: the in-memory log and the one subscription transports read;
- ``store`` (``sqlite_store``, ``postgres_store``): where runs are kept;
- ``failures``: why a run failed, as a code.
"""

from domain.runs.execution import ActiveRun, RunReply, ToolCallView, cut_short_message, unfinished_tool_result
from domain.runs.manager import RunManager, RunSettings
from domain.runs.observer import RunObserver
from domain.runs.reading import OnLeave, Subscription
from domain.runs.replies import continue_or_follow, running_reply, start_or_find, start_or_follow
from domain.runs.store import RunStore

__all__ = [
    "ActiveRun", "OnLeave", "RunManager", "RunObserver", "RunReply", "RunSettings", "RunStore", "Subscription",
    "ToolCallView", "continue_or_follow", "cut_short_message", "running_reply", "start_or_find", "start_or_follow",
    "unfinished_tool_result",
]
