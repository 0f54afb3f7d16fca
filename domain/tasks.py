"""Task queries. Every query is scoped to one user.

A task's ``number`` is its position in the user's list, oldest first: the number the assistant
lists it under and the page shows. The ``id`` is the database's (shared by all users, so it
would tell a user how many tasks others have): routes take it, people never need to see it."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

import msgspec
from piccolo.engine.base import Engine

from domain.errors import InvalidInput
from domain.limits import check_task_title, check_text
from domain.tables import Task

TaskFilter = Literal["all", "pending", "completed"]


class TaskView(msgspec.Struct, frozen=True):
    id: int
    title: str
    completed: bool
    created_at: datetime
    updated_at: datetime
    number: int  # its place in the user's list: 1 = the oldest task
    description: str | None = None


_COLUMNS = (Task.id, Task.title, Task.description, Task.completed, Task.created_at, Task.updated_at)


def _view(row: dict, number: int) -> TaskView:
    return msgspec.convert({**row, "number": number}, TaskView)


async def _number_of(user_id: str, task_id: int) -> int:
    return await Task.count().where(Task.user_id == user_id, Task.id <= task_id)


# Task.id is a Serial, a 32-bit integer on PostgreSQL: a larger id names no task, and handing it
# to the driver raises (a 500) instead of matching nothing. SQLite stops at 64 bits.
_MAX_ID = 2**31 - 1


def _impossible(task_id: int) -> bool:
    return not 0 < task_id <= _MAX_ID


async def list_tasks(user_id: str, status: TaskFilter = "all") -> list[TaskView]:
    """Numbered within the whole list even when filtered: a task keeps its number."""
    rows = await Task.select(*_COLUMNS).where(Task.user_id == user_id).order_by(Task.id)
    tasks = [_view(row, number) for number, row in enumerate(rows, start=1)]
    if status != "all":
        tasks = [task for task in tasks if task.completed == (status == "completed")]
    return tasks


async def get_task(user_id: str, task_id: int) -> TaskView | None:
    if _impossible(task_id):
        return None
    row = await Task.select(*_COLUMNS).where(Task.user_id == user_id, Task.id == task_id).first()
    return _view(row, await _number_of(user_id, task_id)) if row else None


async def find_task(user_id: str, task_id: int | None, title: str | None, number: int | None = None) -> TaskView | None:
    """By id, else by number, else by title: exact (case-insensitive) first, then a unique
    partial match."""
    if task_id is not None:
        return await get_task(user_id, task_id)
    if number is not None:
        listed = await list_tasks(user_id)
        return listed[number - 1] if 1 <= number <= len(listed) else None
    if not title:
        return None
    wanted = title.strip().casefold()
    tasks = await list_tasks(user_id)
    exact = [t for t in tasks if t.title.casefold() == wanted]
    if exact:
        return exact[0]
    partial = [t for t in tasks if wanted in t.title.casefold()]
    return partial[0] if len(partial) == 1 else None


async def add_task(db: Engine, user_id: str, title: str, description: str | None) -> TaskView:
    """``InvalidInput`` for a title or description the store could not keep as it is."""
    check_task_title(title)
    if description is not None:
        check_text(description, "description", "The description")
    now = datetime.now(timezone.utc)
    async with db.transaction():
        rows = await Task.insert(
            Task(user_id=user_id, title=title, description=description, completed=False,
                 created_at=now, updated_at=now)
        ).returning(*_COLUMNS)
    return _view(rows[0], await _number_of(user_id, rows[0]["id"]))


async def update_task(
    db: Engine,
    user_id: str,
    task_id: int,
    *,
    title: str | None = None,
    description: str | None = None,
    completed: bool | None = None,
) -> TaskView | None:
    if _impossible(task_id):
        return None
    if title is not None:
        if not title.strip():
            raise InvalidInput("A task needs a title.", field="title")
        check_task_title(title)
    if description is not None:
        check_text(description, "description", "The description")
    changes: dict = {Task.updated_at: datetime.now(timezone.utc)}
    if title is not None:
        changes[Task.title] = title
    if description is not None:
        changes[Task.description] = description
    if completed is not None:
        changes[Task.completed] = completed
    async with db.transaction():
        rows = await Task.update(changes).where(Task.user_id == user_id, Task.id == task_id).returning(*_COLUMNS)
    return _view(rows[0], await _number_of(user_id, task_id)) if rows else None


async def delete_task(db: Engine, user_id: str, task_id: int) -> TaskView | None:
    if _impossible(task_id):
        return None
    number = await _number_of(user_id, task_id)  # what it was listed as, for the reply
    async with db.transaction():
        rows = await Task.delete().where(Task.user_id == user_id, Task.id == task_id).returning(*_COLUMNS)
    return _view(rows[0], number) if rows else None
