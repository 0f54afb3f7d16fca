"""The Todo assistant."""

from __future__ import annotations

from agents import Agent, Model, ModelSettings

from domain.approvals import ApprovalPolicy
from domain.tools import TODO_TOOLS, TodoContext

AGENT_NAME = "Todo Assistant"

INSTRUCTIONS = """\
You are a friendly assistant that manages the user's todo list.
Use the tools to add, list, complete, reopen, rename and delete tasks; never invent tasks.
When the user refers to a task by its number in the last list you showed, use that task's id.
Keep answers short and confirm what you changed.
"""


def todo_agent(model: Model, settings: ModelSettings | None = None,
               approvals: ApprovalPolicy = ApprovalPolicy()) -> Agent[TodoContext]:
    """The assistant; the tools ``approvals`` names wait for the user's yes."""
    return Agent[TodoContext](
        name=AGENT_NAME, instructions=INSTRUCTIONS, model=model, tools=approvals.apply(TODO_TOOLS),
        model_settings=settings or ModelSettings(),
    )
