"""The Todo agent's function tools.

The user always comes from the run context, never from model-written arguments, so a model
cannot touch another user's tasks. Results are JSON text: a dict would reach the model as
a Python repr.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from agents import RunContextWrapper, function_tool
from piccolo.engine.base import Engine

from domain import tasks
from domain.errors import InvalidInput
from domain.feed import FeedEvent, TaskAdded, TaskChanged, TaskRemoved
from domain.tasks import TaskFilter


class TodoContext(msgspec.Struct):
    user_id: str
    db: Engine
    tell: Callable[[FeedEvent], None] | None = None  # to the user's feed, once a change is committed

    def changed(self, event: FeedEvent) -> None:
        if self.tell is not None:
            self.tell(event)


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _not_found(task_id: int | None, title: str | None, number: int | None = None) -> str:
    if task_id is not None:
        what = f"id {task_id}"
    elif number is not None:
        what = f"number {number}"
    else:
        what = f"title {title!r}"
    return _json({"error": f"No task matches {what}."})


def _updated(context: TodoContext, task: tasks.TaskView) -> str:
    context.changed(TaskChanged(task_id=task.id, title=task.title, completed=task.completed))
    return _json({"updated": task})


@function_tool
async def add_task(ctx: RunContextWrapper[TodoContext], title: str, description: str | None = None) -> str:
    """Add a task to the user's todo list.

    Args:
        title: Short title of the task.
        description: Optional longer description.
    """
    title = title.strip()
    if not title:
        return _json({"error": "A task needs a title."})
    try:
        task = await tasks.add_task(ctx.context.db, ctx.context.user_id, title, description)
    except InvalidInput as exc:
        return _json({"error": exc.message})
    ctx.context.changed(TaskAdded(task_id=task.id, title=task.title, completed=task.completed))
    return _json({"added": task})


@function_tool
async def list_tasks(ctx: RunContextWrapper[TodoContext], status: TaskFilter = "all") -> str:
    """List the user's tasks, oldest first.

    Args:
        status: Which tasks to list: all, pending or completed.
    """
    found = await tasks.list_tasks(ctx.context.user_id, status)
    return _json({"status": status, "tasks": found})


@function_tool
async def complete_task(
    ctx: RunContextWrapper[TodoContext],
    task_id: int | None = None,
    title: str | None = None,
    completed: bool = True,
    number: int | None = None,
) -> str:
    """Mark a task as completed (or, with completed=false, as not completed again).

    Args:
        task_id: The task's id, if known.
        title: The task's title, used when the id is not known.
        completed: True to complete the task, false to reopen it.
        number: The task's number in the user's list (1 = oldest), as listed, when the id is not known.
    """
    found = await tasks.find_task(ctx.context.user_id, task_id, title, number)
    if found is None:
        return _not_found(task_id, title, number)
    task = await tasks.update_task(ctx.context.db, ctx.context.user_id, found.id, completed=completed)
    return _updated(ctx.context, task) if task else _not_found(task_id, title, number)


@function_tool
async def update_task(
    ctx: RunContextWrapper[TodoContext],
    task_id: int | None = None,
    title: str | None = None,
    new_title: str | None = None,
    description: str | None = None,
    number: int | None = None,
) -> str:
    """Rename a task or change its description.

    Args:
        task_id: The task's id, if known.
        title: The task's current title, used when the id is not known.
        new_title: The new title.
        description: The new description.
        number: The task's number in the user's list (1 = oldest), as listed, when the id is not known.
    """
    found = await tasks.find_task(ctx.context.user_id, task_id, title, number)
    if found is None:
        return _not_found(task_id, title, number)
    try:
        task = await tasks.update_task(
            ctx.context.db, ctx.context.user_id, found.id, title=new_title, description=description
        )
    except InvalidInput as exc:
        return _json({"error": exc.message})
    return _updated(ctx.context, task) if task else _not_found(task_id, title, number)


@function_tool
async def delete_task(
    ctx: RunContextWrapper[TodoContext], task_id: int | None = None, title: str | None = None,
    number: int | None = None,
) -> str:
    """Delete a task.

    Args:
        task_id: The task's id, if known.
        title: The task's title, used when the id is not known.
        number: The task's number in the user's list (1 = oldest), as listed, when the id is not known.
    """
    found = await tasks.find_task(ctx.context.user_id, task_id, title, number)
    if found is None:
        return _not_found(task_id, title, number)
    task = await tasks.delete_task(ctx.context.db, ctx.context.user_id, found.id)
    if task is None:
        return _not_found(task_id, title, number)
    ctx.context.changed(TaskRemoved(task_id=task.id))
    return _json({"deleted": task})


TODO_TOOLS = [add_task, list_tasks, complete_task, update_task, delete_task]
