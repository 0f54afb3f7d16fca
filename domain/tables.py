"""Piccolo tables. Every row is owned by a user; queries always filter on it."""

from __future__ import annotations

from piccolo.columns import (
    JSON,
    UUID,
    BigInt,
    Boolean,
    Date,
    ForeignKey,
    Integer,
    OnDelete,
    Serial,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.table import Table

# Named here, not derived: the run store's SQL uses the same names.
CONVERSATION_TABLE = "conversation"
MESSAGE_TABLE = "message"
TASK_TABLE = "task"
RUN_TABLE = "run"
RUN_EVENT_TABLE = "run_event"
APPROVAL_TABLE = "approval"
USAGE_TABLE = "daily_usage"
FEEDBACK_TABLE = "feedback"


# A column that leads a composite index (migration 2026-11-25T11) has no index of its own: the
# composite serves the same queries, and every index is one more write on each insert.


class Conversation(Table, tablename=CONVERSATION_TABLE):
    id = UUID(primary_key=True)
    user_id = Varchar(length=128)
    title = Varchar(length=200, null=True, default=None)
    # The id a client chose for it (AI SDK chat ids, AG-UI thread ids): unique per user.
    client_id = Varchar(length=64, null=True, default=None)
    created_at = Timestamptz()
    updated_at = Timestamptz()


class Message(Table, tablename=MESSAGE_TABLE):
    """One turn: role is user, assistant, tool (call + result in ``tool``) or hidden.

    Hidden messages are notes for the model (e.g. "the user stopped this reply");
    they are never shown to a client.
    """

    id = UUID(primary_key=True)
    conversation = ForeignKey(Conversation, null=False, on_delete=OnDelete.cascade)
    run_id = Varchar(length=36, null=True, default=None)
    role = Varchar(length=16)
    content = Text(default="")
    tool = JSON(null=True, default=None)
    status = Varchar(length=16, default="completed")
    # The user's rating ("up" | "down"), shown with the message; the ``feedback`` table holds
    # it with its comment and times, and both are written together (domain/feedback.py).
    feedback = Varchar(length=16, null=True, default=None)
    # Explicit, strictly increasing within a conversation: the order the model saw things in.
    created_at = Timestamptz()


class Task(Table, tablename=TASK_TABLE):
    id = Serial(primary_key=True)
    user_id = Varchar(length=128, index=True)
    title = Varchar(length=500)
    description = Text(null=True, default=None)
    completed = Boolean(default=False)
    created_at = Timestamptz()
    updated_at = Timestamptz()


class Run(Table, tablename=RUN_TABLE):
    id = UUID(primary_key=True)
    conversation = ForeignKey(Conversation, null=False, on_delete=OnDelete.cascade, index=True)
    user_id = Varchar(length=128)
    status = Varchar(length=32, default="running", index=True)
    message_id = Varchar(length=36)
    input_tokens = Integer(default=0)
    output_tokens = Integer(default=0)
    error_code = Varchar(length=64, null=True, default=None)
    created_at = Timestamptz()
    finished_at = Timestamptz(null=True, default=None)
    # The lease: the instance running it renews heartbeat_at; a stale one means that
    # instance died, and any instance may mark the run interrupted.
    heartbeat_at = Timestamptz(null=True, default=None)
    # The id the client gave the send (unique per user): a retried send finds this run.
    client_message_id = Varchar(length=64, null=True, default=None)  # the sweep finds runs by status
    # An ``awaiting_approval`` run's agent state (the agents SDK's own serialisation): its
    # continuation resumes from it, on any instance, after any restart.
    state = Text(null=True, default=None)
    # Stop asked on another instance: the instance running it reads this as well as the
    # broker's message, so a Stop lands while the broker is away or lost the message.
    cancel_requested = Boolean(default=False)


class RunEvent(Table, tablename=RUN_EVENT_TABLE):
    """The run log, saved in batches: a row holds consecutive events from ``seq`` on, one per
    line, each the exact bytes sent to clients."""

    id = Serial(primary_key=True)
    run = ForeignKey(Run, null=False, on_delete=OnDelete.cascade, index=True)
    seq = Integer()
    payload = Text()


class Approval(Table, tablename=APPROVAL_TABLE):
    """A tool call of an ``awaiting_approval`` run, and the user's decision once made."""

    id = Serial(primary_key=True)
    run = ForeignKey(Run, null=False, on_delete=OnDelete.cascade)  # leads the unique (run, call_id)
    call_id = Varchar(length=128)
    name = Varchar(length=128)
    arguments = JSON()
    decision = Varchar(length=16, null=True, default=None)  # approved | rejected
    reason = Text(null=True, default=None)
    created_at = Timestamptz()
    decided_at = Timestamptz(null=True, default=None)


class DailyUsage(Table, tablename=USAGE_TABLE):
    """A user's tokens per UTC day, added to as each run finishes (unique ``(user_id, day)``).

    Not summed from ``run``: runs go with a deleted conversation, and the quota check at every
    start reads one row by its key instead of the day's runs."""

    id = Serial(primary_key=True)
    user_id = Varchar(length=128)  # leads the unique (user_id, day)
    day = Date()
    input_tokens = BigInt(default=0)
    output_tokens = BigInt(default=0)
    runs = Integer(default=0)


class Feedback(Table, tablename=FEEDBACK_TABLE):
    """A user's rating of an assistant message (one per message, unique ``message``), kept
    for the operators' export (``GET /feedback``); it goes with the message."""

    id = Serial(primary_key=True)
    message = ForeignKey(Message, null=False, on_delete=OnDelete.cascade)
    user_id = Varchar(length=128)  # leads the (user_id, updated_at) index the export reads
    rating = Varchar(length=8)  # up | down
    comment = Text(null=True, default=None)
    created_at = Timestamptz()
    updated_at = Timestamptz()


TABLES: tuple[type[Table], ...] = (Conversation, Message, Task, Run, RunEvent, Approval, DailyUsage, Feedback)
