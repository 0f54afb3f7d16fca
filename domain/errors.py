"""Domain errors: data, not decisions left to the transports.

Each carries a stable machine ``code``, a ``message`` safe to show a user, whether retrying
the same request can help (``allow_retry``) and, where the domain knows it, how long to wait
(``retry_after_s``). A transport only maps them to its wire: an HTTP status and body, a
WebSocket ``error`` frame, a ChatKit ``error`` event.
"""

from __future__ import annotations


class ChatError(Exception):
    code = "error"
    allow_retry = False

    def __init__(self, message: str, *, field: str | None = None, retry_after_s: int | None = None):
        super().__init__(message)
        self.message = message
        self.field = field  # the request field at fault, where one is
        self.retry_after_s = retry_after_s


class NotFound(ChatError):
    code = "not_found"


class RunActive(ChatError):
    code = "run_active"
    allow_retry = True


class RunFinished(ChatError):
    code = "run_finished"


class AlreadyDecided(ChatError):
    """The tool call's approval was decided already (or declined by a newer message)."""

    code = "already_decided"


class AlreadyStarted(ChatError):
    """A retried send: its run exists already (``run_id``), finished or on another instance;
    the transport follows it instead of starting another."""

    code = "already_started"

    def __init__(self, run_id: str, conversation_id: str):
        super().__init__("This message was sent already; its reply is that run.")
        self.run_id = run_id
        self.conversation_id = conversation_id


class ShuttingDown(ChatError):
    code = "shutting_down"
    allow_retry = True


class LimitExceeded(ChatError):
    code = "limit_exceeded"
    allow_retry = True


class QuotaExceeded(ChatError):
    """The user's tokens for the day (UTC) are spent: a new message waits for the next day."""

    code = "quota_exceeded"
    allow_retry = True


class DatabaseUnavailable(ChatError):
    """The database cannot be reached: nothing was changed; the same request can succeed later."""

    code = "database_unavailable"
    allow_retry = True

    def __init__(self, message: str = "The database cannot be reached right now; try again shortly.",
                 retry_after_s: int = 5):
        super().__init__(message, retry_after_s=retry_after_s)


class InvalidInput(ChatError):
    code = "invalid_input"


class AuthError(ChatError):
    """The token does not prove who the caller is."""

    code = "unauthorized"


class Forbidden(ChatError):
    """The token is valid but names another user than the resource's."""

    code = "forbidden"


class KeysUnavailable(ChatError):
    """The identity provider's keys could not be fetched: not the caller's fault."""

    code = "auth_unavailable"
    allow_retry = True
