"""Domain errors: a stable machine ``code`` and a message safe to show a user.

Transports map codes to their own status (HTTP 404/409/429…, a WebSocket ``error`` frame).
"""

from __future__ import annotations


class ChatError(Exception):
    code = "error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotFound(ChatError):
    code = "not_found"


class RunActive(ChatError):
    code = "run_active"


class RunFinished(ChatError):
    code = "run_finished"


class ShuttingDown(ChatError):
    code = "shutting_down"


class LimitExceeded(ChatError):
    code = "limit_exceeded"

    def __init__(self, message: str, retry_after_s: int | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InvalidInput(ChatError):
    code = "invalid_input"

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field
