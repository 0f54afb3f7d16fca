"""What the offline model understands: plain rules from the user's words to a tool call,
and from a tool's result to a reply. Deterministic, so tests and demos can rely on it."""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import Any

import msgspec

from domain.mcp_servers import tool_name


class ToolIntent(msgspec.Struct, frozen=True):
    name: str
    arguments: dict[str, Any]


HELP = (
    "I'm your todo assistant (running on the built-in offline model). I can:\n"
    "- add a task: \"add buy milk\" (or \"add call mom with description about the trip\")\n"
    "- list tasks: \"list my tasks\", \"show pending tasks\", \"show completed tasks\"\n"
    "- complete or reopen one: \"complete buy milk\", \"reopen 2\"\n"
    "- rename one: \"rename buy milk to buy oat milk\"\n"
    "- delete one: \"delete buy milk\" or \"delete 2\" (the number from the last list)\n"
    "- call any other tool (an MCP server's): \"use files.read {\"path\": \"notes.txt\"}\""
)
TODO_TOOLS = frozenset({"add_task", "list_tasks", "complete_task", "update_task", "delete_task"})

_POLITE = r"^(?:(?:please|pls|can you|could you|would you|kindly|hey|ok|okay)[,\s]+)*"
_LIST_SUFFIX = r"(?:\s+(?:to|from|in|on)\s+(?:my|the)\s+(?:todo\s+|to-do\s+)?(?:list|tasks|todos?))?"

_ADD = re.compile(
    _POLITE + r"(?:add|create|new task:?|remember to|remind me to)\s+(?:a\s+)?(?:new\s+)?(?:task\s*:?\s+)?(?:to\s+)?"
    r"(?P<rest>.+?)" + _LIST_SUFFIX + r"[.!]?$",
    re.I | re.S,
)
_DESCRIPTION = re.compile(r"\s+(?:with (?:the )?description|with details|described as|description:)\s*:?\s+", re.I)
_LIST = re.compile(
    r"\b(?:list|show|display|view|see|what(?:'s| is| are)|which)\b.*\b(?:tasks?|todos?|to-dos?|list)\b|^list\b", re.I
)
_REOPEN = re.compile(
    _POLITE + r"(?:(?:uncomplete|reopen|re-open|uncheck|un-check|undo)\s+(?P<a>.+?)"
    r"|mark\s+(?P<b>.+?)\s+as\s+(?:not done|not complete[d]?|incomplete|pending|undone|open))"
    + _LIST_SUFFIX + r"[.!]?$",
    re.I,
)
_COMPLETE = re.compile(
    _POLITE + r"(?:(?:complete|finish|check off|tick off|mark)\s+(?P<a>.+?)"
    r"(?:\s+as\s+(?:done|complete[d]?|finished))?"
    r"|i(?:\s+have|'ve)?\s+(?:finished|completed|did|done)\s+(?P<b>.+?)"
    r"|(?P<c>.+?)\s+is\s+(?:done|complete[d]?|finished))[.!]?$",
    re.I,
)
_RENAME = re.compile(
    _POLITE + r"(?:rename|change|update|edit)\s+(?P<target>.+?)\s+(?:to|into|as)\s+(?P<new>.+?)[.!]?$", re.I
)
_DESCRIBE = re.compile(
    _POLITE + r"(?:set|change|update)\s+(?:the\s+)?description\s+(?:of|for)\s+(?P<target>.+?)\s+to\s+(?P<new>.+?)[.!]?$",
    re.I,
)
_DELETE = re.compile(
    _POLITE + r"(?:delete|remove|drop|erase|get rid of)\s+(?P<target>.+?)" + _LIST_SUFFIX + r"[.!]?$", re.I
)
_NUMBER = re.compile(r"^(?:the\s+)?(?:task\s+)?(?:number\s+|no\.?\s*|#)?(?P<n>\d+)$", re.I)
# "use <tool> [JSON arguments]": a tool by the model's name for it, or an MCP server's as server.tool.
_USE = re.compile(r"^use\s+(?P<tool>[A-Za-z0-9_.-]+)(?:\s+(?P<arguments>.+))?$", re.I | re.S)
_GREETING = re.compile(r"^(?:hi|hello|hey|good (?:morning|afternoon|evening)|yo)\b", re.I)


def _clean_title(text: str) -> str:
    text = text.strip().strip(".!?").strip()
    text = re.sub(r"^(?:the\s+)?task\s+", "", text, flags=re.I)
    return text.strip().strip("\"'“”‘’").strip()


def _target(text: str, last_list: list[dict] | None) -> dict[str, Any]:
    """A task reference: a number as the last list showed it, else the task's number in the
    user's list (what the page shows), or a title. Never a database id: users never see one."""
    cleaned = _clean_title(text)
    number = _NUMBER.match(cleaned)
    if number:
        n = int(number["n"])
        if last_list:
            if any("number" in task for task in last_list):
                shown = [task for task in last_list if task.get("number") == n]
                if shown:
                    return {"task_id": shown[0]["id"]}
            elif 1 <= n <= len(last_list):  # a list stored before tasks had numbers: by position
                return {"task_id": last_list[n - 1]["id"]}
        return {"number": n}
    return {"title": cleaned}


def _use(match: re.Match[str], tools: Collection[str]) -> ToolIntent | str | None:
    """A call of the named tool; words if it cannot be made; None: not a tool's name after all."""
    named = match["tool"]
    server, dot, tool = named.partition(".")
    name = named if named in tools else tool_name(server, tool) if dot else None
    if name not in tools:
        return f"I have no tool named {named}." if dot else None
    try:
        arguments = json.loads(match["arguments"] or "{}")
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        return f"Give {named} its arguments as a JSON object, e.g. use {named} {{\"text\": \"hi\"}}."
    return ToolIntent(name, arguments)


def parse(message: str, last_list: list[dict] | None, tools: Collection[str] = ()) -> ToolIntent | str:
    """Map a user message to a tool call, or to a direct reply; ``tools``: the tools the agent has."""
    text = " ".join(message.split())
    if (m := _USE.match(text)) and (used := _use(m, tools)) is not None:
        return used
    if m := _DESCRIBE.match(text):
        return ToolIntent("update_task", {**_target(m["target"], last_list), "description": m["new"].strip()})
    if m := _ADD.match(text):
        title, description = _split_description(m["rest"])
        return ToolIntent("add_task", {"title": _clean_title(title), "description": description})
    if m := _REOPEN.match(text):
        return ToolIntent("complete_task", {**_target(m["a"] or m["b"], last_list), "completed": False})
    if m := _RENAME.match(text):
        return ToolIntent("update_task", {**_target(m["target"], last_list), "new_title": _clean_title(m["new"])})
    if m := _DELETE.match(text):
        return ToolIntent("delete_task", _target(m["target"], last_list))
    if _LIST.search(text):
        lowered = text.lower()
        if re.search(r"\b(?:pending|open|incomplete|remaining|not done|unfinished|left)\b", lowered):
            status = "pending"
        elif re.search(r"\b(?:completed|done|finished)\b", lowered):
            status = "completed"
        else:
            status = "all"
        return ToolIntent("list_tasks", {"status": status})
    if m := _COMPLETE.match(text):
        return ToolIntent("complete_task", {**_target(m["a"] or m["b"] or m["c"], last_list), "completed": True})
    if _GREETING.match(text):
        return "Hello! " + HELP
    return HELP


def _split_description(rest: str) -> tuple[str, str | None]:
    parts = _DESCRIPTION.split(rest, maxsplit=1)
    if len(parts) == 2:
        return parts[0], parts[1].strip().rstrip(".") or None
    return rest, None


def _quote(title: str) -> str:
    return f"“{title}”"


def _task_line(n: int, task: dict) -> str:
    mark = "x" if task["completed"] else " "
    line = f"{task.get('number', n)}. [{mark}] {task['title']}"
    if task.get("description"):
        line += f" — {task['description']}"
    return line


def _number(task: dict) -> int:
    """The task's number in the user's list; a result stored before tasks had one names the id."""
    return task.get("number", task["id"])


def reply(tool: str, arguments: dict[str, Any], output: str) -> str:
    """Words for the user about a tool's result."""
    try:
        result = json.loads(output)
    except ValueError:
        result = {"error": output}
    if not isinstance(result, dict):
        result = {"error": str(result)}
    if tool not in TODO_TOOLS:
        return _other_reply(tool, result)
    if "error" in result:
        return f"Sorry, I couldn't do that: {result['error']} Say \"list my tasks\" to see what's there."
    if "added" in result:
        task = result["added"]
        text = f"Added {_quote(task['title'])} to your list (task #{_number(task)})."
        if task.get("description"):
            text += f" Description: {task['description']}."
        return text
    if "tasks" in result:
        found = result["tasks"]
        kind = {"pending": "pending ", "completed": "completed "}.get(result.get("status", "all"), "")
        if not found:
            return f"You have no {kind}tasks." if kind else "Your list is empty. Say \"add …\" to add a task."
        lines = "\n".join(_task_line(n, task) for n, task in enumerate(found, start=1))
        plural = "task" if len(found) == 1 else "tasks"
        return f"You have {len(found)} {kind}{plural}:\n{lines}"
    if "deleted" in result:
        return f"Deleted {_quote(result['deleted']['title'])}."
    if "updated" in result:
        task = result["updated"]
        if tool == "complete_task":
            if task["completed"]:
                return f"Marked {_quote(task['title'])} as done. Nice work!"
            return f"Reopened {_quote(task['title'])}: it's pending again."
        if arguments.get("new_title"):
            return f"Renamed task #{_number(task)} to {_quote(task['title'])}."
        return f"Updated {_quote(task['title'])}."
    return "Done."


def _other_reply(tool: str, result: dict) -> str:
    """Words about another tool's result (an MCP server's): what it said."""
    if "error" in result:
        return f"Sorry, {tool} failed: {result['error']}"
    said = result["result"] if set(result) == {"result"} else json.dumps(result, ensure_ascii=False)
    return f"{tool} answered: {said}"
