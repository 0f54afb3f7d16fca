"""Who and what a log line is about: the request, user and run ids, in a context variable the
log formatter reads (``app/logs.py``).

A request opens a ``LogContext`` (its middleware) that authentication fills in later. It is
mutated, not set again: Litestar resolves dependencies in tasks of their own, and a context
variable set there would not reach the handler. A run's task opens its own, so a connection
that starts several runs does not mix their ids.
"""

from __future__ import annotations

from contextvars import ContextVar


class LogContext:
    __slots__ = ("request_id", "run_id", "user_id")

    def __init__(self, request_id: str | None = None, user_id: str | None = None, run_id: str | None = None):
        self.request_id = request_id
        self.user_id = user_id
        self.run_id = run_id


_NONE = LogContext()  # outside any request or run; never mutated
_CURRENT: ContextVar[LogContext] = ContextVar("log_context", default=_NONE)


def current() -> LogContext:
    return _CURRENT.get()


def open_request(request_id: str) -> object:
    """A fresh context for one request; the token resets it."""
    return _CURRENT.set(LogContext(request_id))


def close_request(token: object) -> None:
    _CURRENT.reset(token)  # type: ignore[arg-type]


def identify_user(user_id: str) -> None:
    """The caller is known: every later line of its request names it."""
    context = _CURRENT.get()
    if context is not _NONE:
        context.user_id = user_id


def enter_run(run_id: str, user_id: str) -> None:
    """In a run's own task: its lines name the run, its user, and the request that started it."""
    _CURRENT.set(LogContext(_CURRENT.get().request_id, user_id, run_id))
