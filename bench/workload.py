"""The benchmark's reply: one message the offline model answers at length.

The offline model answers "complete <title>" by calling ``complete_task`` (a read: no task
has that title) and then saying so, quoting the title: a reply of about ``words + 15`` text
events, with no change to the model and no rows added, whatever the number of runs.
"""

from __future__ import annotations

SHORT_MESSAGE = "hello"  # a direct answer: no tool call, about 76 text events


def long_message(words: int) -> str:
    return "complete " + " ".join(f"w{n}" for n in range(words))
