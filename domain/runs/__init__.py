"""Runs: start one, subscribe to it, cancel it; each outlives the connection that started it.

- ``manager``: the commands (start, subscribe, follow, cancel, close) and background loops;
- ``execution``: one run executing here, the SDK's stream as chat events, what a cut-short
  run leaves behind;
- ``log`` and ``reading``: the in-memory log and the one subscription transports read;
- ``store`` (``sqlite_store``, ``postgres_store``): where runs are kept;
- ``failures``: why a run failed, as a code.
"""

from domain.runs.execution import ActiveRun, RunReply, ToolCallView, unfinished_tool_result
from domain.runs.manager import RunManager, RunSettings
from domain.runs.observer import RunObserver
from domain.runs.reading import OnLeave, Subscription
from domain.runs.store import RunStore

__all__ = [
    "ActiveRun", "OnLeave", "RunManager", "RunObserver", "RunReply", "RunSettings", "RunStore", "Subscription",
    "ToolCallView", "unfinished_tool_result",
]
