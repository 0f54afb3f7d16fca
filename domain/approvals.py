"""Tool approvals: which tools wait for the user's yes, and what a decision tells the model.

The agents SDK does the rest: a tool with ``needs_approval`` interrupts the run, its state
(the SDK's own serialisation) is stored with the pending calls, and once each is decided the
continuation resumes from that state with ``approve`` / ``reject``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from typing import Any

import msgspec
from agents import FunctionTool, Tool

from domain.limits import check_text

MAX_REASON_CHARS = 1000
MAX_CALL_ID_CHARS = 128


def run_call_id(run_id: str, call_id: str) -> str:
    """One id for a call a run waits on, for protocols whose answer brings back a single id
    (the AI SDK's ``approvalId``, AG-UI's interrupt id)."""
    return f"{run_id}:{call_id}"


def split_run_call_id(value: str) -> tuple[str, str] | None:
    """The run and call ``run_call_id`` made ``value`` of; None for anything else."""
    run_id, _, call_id = value.partition(":")
    return (run_id, call_id) if run_id and call_id else None


class ApprovalPolicy(msgspec.Struct, frozen=True):
    """The tools that need approval: a set of names, or every tool."""

    tools: frozenset[str] = frozenset()
    every_tool: bool = False

    @classmethod
    def parse(cls, value: str) -> ApprovalPolicy:
        """``TOOL_APPROVAL``: a comma list of tool names, ``all`` or ``none``."""
        names = {name.strip() for name in value.split(",") if name.strip()}
        if names == {"all"}:
            return cls(every_tool=True)
        if names in ({"none"}, set()):
            return cls()
        return cls(frozenset(names))

    def needs(self, name: str) -> bool:
        return self.every_tool or name in self.tools

    def without_servers(self, servers: Collection[str]) -> ApprovalPolicy:
        """This policy less the names of MCP servers' tools (``server.tool``, see
        domain/mcp_servers.py, which asks it about those): what the agent's own tools are checked against."""
        return msgspec.structs.replace(
            self, tools=frozenset(name for name in self.tools if name.partition(".")[0] not in servers or "." not in name))

    def apply(self, tools: Sequence[Tool]) -> list[Tool]:
        """The tools, those this policy names marked ``needs_approval``."""
        known = {tool.name for tool in tools}
        if unknown := self.tools - known:
            raise ValueError(f"TOOL_APPROVAL names no tool: {', '.join(sorted(unknown))} (tools: {', '.join(sorted(known))})")
        return [
            dataclasses.replace(tool, needs_approval=True) if isinstance(tool, FunctionTool) and self.needs(tool.name)
            else tool
            for tool in tools
        ]


class PendingCall(msgspec.Struct, frozen=True):
    call_id: str
    name: str
    arguments: dict[str, Any]


class Decision(msgspec.Struct, frozen=True):
    call_id: str
    approve: bool
    reason: str | None = None


def check_decision(decision: Decision) -> None:
    check_text(decision.call_id, "call_id", "The call id", MAX_CALL_ID_CHARS)
    if decision.reason is not None:
        check_text(decision.reason, "reason", "The reason", MAX_REASON_CHARS)


def declined(reason: str | None) -> str:
    """What the model is told about a call the user said no to."""
    said = f" Their reason: {reason}" if reason else ""
    return f"The user declined this tool call; it did not run.{said}"


SUPERSEDED = "they sent a new message instead of deciding"


def _quoted(value: Any) -> str:
    return f"“{value}”"


def _task(arguments: dict[str, Any]) -> str:
    """The task a call names, as the user knows it: by title, else by number."""
    if arguments.get("title"):
        return f"the task {_quoted(arguments['title'])}"
    if arguments.get("task_id") is not None:
        return f"task {arguments['task_id']}"
    if arguments.get("number") is not None:
        return f"task number {arguments['number']} of your list"
    return "a task"


def describe(name: str, arguments: dict[str, Any]) -> str:
    """A call in words, for a person asked to approve it: "Delete the task “buy milk”"."""
    match name:
        case "delete_task":
            return f"Delete {_task(arguments)}"
        case "add_task":
            return f"Add the task {_quoted(arguments.get('title', ''))}"
        case "complete_task":
            done = "done" if arguments.get("completed", True) else "not done"
            return f"Mark {_task(arguments)} as {done}"
        case "update_task" if arguments.get("new_title"):
            return f"Rename {_task(arguments)} to {_quoted(arguments['new_title'])}"
        case "update_task":
            return f"Change the description of {_task(arguments)}"
        case "list_tasks":
            status = arguments.get("status", "all")
            return "List your tasks" if status == "all" else f"List your {status} tasks"
    shown = ", ".join(f"{key}={msgspec.json.encode(value).decode()}" for key, value in arguments.items())
    return f"Run {name}({shown})"
