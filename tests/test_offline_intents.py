"""The offline model's rules: a user's words to a tool call, a tool's output to a reply."""

from __future__ import annotations

import msgspec
import pytest

from domain.offline_intents import HELP, ToolIntent, parse, reply

# What the last "list my tasks" showed: positions 1..3 map to these ids.
LAST_LIST = [
    {"id": 41, "title": "buy milk", "description": None, "completed": False},
    {"id": 42, "title": "call mom", "description": "about the trip", "completed": False},
    {"id": 43, "title": "pay rent", "description": None, "completed": True},
]


def task(id: int, title: str, *, description: str | None = None, completed: bool = False) -> dict:
    return {"id": id, "title": title, "description": description, "completed": completed,
            "created_at": "2026-01-15T12:00:00Z", "updated_at": "2026-01-15T12:00:00Z"}


def out(value) -> str:
    """A tool's output, as the tools write it: JSON text."""
    return msgspec.json.encode(value).decode()


# -- add ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("message", [
    "add buy milk",
    "Add buy milk.",
    "add buy milk!",
    "add buy milk to my list",
    "add buy milk to my todo list",
    "add a new task: buy milk",
    "add task buy milk",
    "create buy milk",
    'create task "buy milk"',
    "new task: buy milk",
    "remember to buy milk",
    "remind me to buy milk",
    "add    buy\n   milk",
])
def test_add_phrasings_add_a_task_with_the_title(message):
    assert parse(message, None) == ToolIntent("add_task", {"title": "buy milk", "description": None})


def test_add_keeps_the_title_case():
    assert parse("add Call Mom about Paris", None) == ToolIntent(
        "add_task", {"title": "Call Mom about Paris", "description": None})


@pytest.mark.parametrize("message", [
    "add call mom with description about the trip",
    "add call mom with the description about the trip",
    "add call mom with details about the trip",
    "add call mom described as about the trip",
    "add call mom description: about the trip",
    "add call mom with description about the trip.",
])
def test_add_with_description_splits_title_and_description(message):
    assert parse(message, None) == ToolIntent("add_task", {"title": "call mom", "description": "about the trip"})


def test_add_whose_title_starts_with_another_verb_is_still_an_add():
    assert parse("add delete old photos", LAST_LIST) == ToolIntent(
        "add_task", {"title": "delete old photos", "description": None})
    assert parse("add list the boxes", None).name == "add_task"


def test_add_does_not_resolve_a_number_from_the_last_list():
    assert parse("add 2", LAST_LIST) == ToolIntent("add_task", {"title": "2", "description": None})


# -- list ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("message", "status"), [
    ("list my tasks", "all"),
    ("list", "all"),
    ("show my todos", "all"),
    ("what's on my list", "all"),
    ("what are my tasks?", "all"),
    ("show pending tasks", "pending"),
    ("what are my open tasks", "pending"),
    ("show me what is left on my list", "pending"),
    ("which tasks are not done", "pending"),
    ("show completed tasks", "completed"),
    ("list done tasks", "completed"),
    ("which tasks are finished", "completed"),
    ("please show my tasks", "all"),
])
def test_list_phrasings_list_tasks_with_the_right_status(message, status):
    assert parse(message, LAST_LIST) == ToolIntent("list_tasks", {"status": status})


# -- complete and reopen ----------------------------------------------------------------------


@pytest.mark.parametrize("message", [
    "complete buy milk",
    "finish buy milk",
    "check off buy milk",
    "tick off buy milk",
    "mark buy milk as done",
    "mark buy milk as completed",
    "i finished buy milk",
    "I have completed buy milk",
    "i did buy milk",
    "buy milk is done",
    "complete the task buy milk",
    'complete "buy milk"',
])
def test_complete_phrasings_mark_the_task_done(message):
    assert parse(message, None) == ToolIntent("complete_task", {"title": "buy milk", "completed": True})


def test_contraction_i_ve_completed_marks_the_task_done():
    assert parse("I've completed buy milk", None) == ToolIntent("complete_task", {"title": "buy milk", "completed": True})


@pytest.mark.parametrize(("message", "task_id"), [
    ("complete 2", 42),
    ("complete #2", 42),
    ("complete task 2", 42),
    ("complete number 3", 43),
    ("mark 1 as done", 41),
])
def test_complete_by_number_uses_the_id_from_the_last_list(message, task_id):
    assert parse(message, LAST_LIST) == ToolIntent("complete_task", {"task_id": task_id, "completed": True})


@pytest.mark.parametrize("message", [
    "reopen buy milk",
    "re-open buy milk",
    "uncomplete buy milk",
    "uncheck the task buy milk",
    "undo buy milk",
    "mark buy milk as not done",
    "mark buy milk as incomplete",
    "mark buy milk as pending",
])
def test_reopen_phrasings_mark_the_task_not_done(message):
    assert parse(message, None) == ToolIntent("complete_task", {"title": "buy milk", "completed": False})


def test_reopen_by_number_uses_the_id_from_the_last_list():
    assert parse("reopen 3", LAST_LIST) == ToolIntent("complete_task", {"task_id": 43, "completed": False})


# -- rename and describe ------------------------------------------------------------------------


def test_rename_by_title():
    assert parse("rename buy milk to buy oat milk", None) == ToolIntent(
        "update_task", {"title": "buy milk", "new_title": "buy oat milk"})


def test_rename_by_number_strips_quotes_from_the_new_title():
    assert parse('rename 2 to "call dad"', LAST_LIST) == ToolIntent(
        "update_task", {"task_id": 42, "new_title": "call dad"})


@pytest.mark.parametrize("message", ["change buy milk to buy oat milk", "update buy milk into buy oat milk",
                                     "edit buy milk as buy oat milk."])
def test_rename_synonyms(message):
    assert parse(message, None) == ToolIntent("update_task", {"title": "buy milk", "new_title": "buy oat milk"})


def test_set_description_by_title():
    assert parse("set the description of buy milk to two litres", None) == ToolIntent(
        "update_task", {"title": "buy milk", "description": "two litres"})


def test_change_description_by_number_is_not_taken_for_a_rename():
    assert parse("change description of 3 to ask for a receipt", LAST_LIST) == ToolIntent(
        "update_task", {"task_id": 43, "description": "ask for a receipt"})


# -- delete -------------------------------------------------------------------------------------


@pytest.mark.parametrize("message", [
    "delete buy milk",
    "remove buy milk",
    "drop buy milk",
    "erase buy milk.",
    "get rid of buy milk",
    "delete the task buy milk",
    "remove buy milk from my list",
    "delete 'buy milk'",
])
def test_delete_by_title(message):
    assert parse(message, None) == ToolIntent("delete_task", {"title": "buy milk"})


@pytest.mark.parametrize(("message", "task_id"), [
    ("delete 1", 41),
    ("delete 2", 42),
    ("remove task 3 from my list", 43),
    ("delete #3", 43),
    ("delete no. 2", 42),
    ("delete the task number 1", 41),
])
def test_delete_by_number_uses_the_id_from_the_last_list(message, task_id):
    assert parse(message, LAST_LIST) == ToolIntent("delete_task", {"task_id": task_id})


@pytest.mark.parametrize("last_list", [None, []])
def test_delete_by_number_without_a_last_list_takes_the_number_in_the_user_s_list(last_list):
    # The number the page shows: never a database id, which users do not see.
    assert parse("delete 2", last_list) == ToolIntent("delete_task", {"number": 2})


def test_delete_by_number_outside_the_last_list_takes_the_number_in_the_user_s_list():
    assert parse("delete 7", LAST_LIST) == ToolIntent("delete_task", {"number": 7})
    assert parse("delete 0", LAST_LIST) == ToolIntent("delete_task", {"number": 0})


def test_a_number_from_a_filtered_list_is_the_number_it_was_shown_with():
    pending = [{"id": 50, "number": 2, "title": "b", "completed": False},
               {"id": 61, "number": 5, "title": "e", "completed": False}]
    assert parse("delete 5", pending) == ToolIntent("delete_task", {"task_id": 61})
    assert parse("delete 1", pending) == ToolIntent("delete_task", {"number": 1})


# -- polite prefixes ----------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["please ", "Please, ", "pls ", "can you ", "could you ", "would you ",
                                    "kindly ", "hey ", "ok ", "okay, ", "could you, please "])
def test_polite_prefixes_are_ignored(prefix):
    assert parse(prefix + "add buy milk", None) == ToolIntent("add_task", {"title": "buy milk", "description": None})
    assert parse(prefix + "delete 2", LAST_LIST) == ToolIntent("delete_task", {"task_id": 42})
    assert parse(prefix + "complete buy milk", None) == ToolIntent(
        "complete_task", {"title": "buy milk", "completed": True})


# -- help and the unknown -----------------------------------------------------------------------


@pytest.mark.parametrize("message", ["help", "what can you do", "tell me a joke", "", "   ", "add", "please"])
def test_help_and_unknown_messages_get_the_help_text(message):
    assert parse(message, LAST_LIST) == HELP


@pytest.mark.parametrize("message", ["hi", "Hello there", "hey", "good morning"])
def test_greetings_get_a_hello_and_the_help_text(message):
    assert parse(message, None) == "Hello! " + HELP


def test_help_text_mentions_every_kind_of_action():
    for word in ("add", "list", "complete", "reopen", "rename", "delete"):
        assert word in HELP


# -- replies ------------------------------------------------------------------------------------


def test_reply_to_an_added_task():
    assert reply("add_task", {"title": "buy milk"}, out({"added": task(7, "buy milk")})) == (
        "Added “buy milk” to your list (task #7)."
    )


def test_reply_to_an_added_task_with_a_description():
    output = out({"added": task(8, "call mom", description="about the trip")})
    assert reply("add_task", {}, output) == "Added “call mom” to your list (task #8). Description: about the trip."


def test_reply_to_a_list_numbers_tasks_with_marks_and_descriptions():
    output = out({"status": "all", "tasks": [task(41, "buy milk"),
                                             task(42, "call mom", description="about the trip", completed=True)]})
    assert reply("list_tasks", {"status": "all"}, output) == (
        "You have 2 tasks:\n"
        "1. [ ] buy milk\n"
        "2. [x] call mom — about the trip"
    )


def test_reply_to_a_list_of_one_pending_task_is_singular():
    output = out({"status": "pending", "tasks": [task(5, "water plants", description="")]})
    assert reply("list_tasks", {"status": "pending"}, output) == "You have 1 pending task:\n1. [ ] water plants"


def test_reply_to_a_list_of_completed_tasks_names_the_kind():
    output = out({"status": "completed", "tasks": [task(1, "a", completed=True), task(2, "b", completed=True)]})
    assert reply("list_tasks", {}, output).startswith("You have 2 completed tasks:\n1. [x] a\n2. [x] b")


def test_reply_to_an_empty_list():
    assert reply("list_tasks", {}, out({"status": "all", "tasks": []})) == (
        'Your list is empty. Say "add …" to add a task.'
    )
    assert reply("list_tasks", {}, out({"tasks": []})) == 'Your list is empty. Say "add …" to add a task.'


@pytest.mark.parametrize("status", ["pending", "completed"])
def test_reply_to_an_empty_filtered_list(status):
    assert reply("list_tasks", {"status": status}, out({"status": status, "tasks": []})) == (
        f"You have no {status} tasks."
    )


def test_list_reply_numbers_match_what_delete_by_number_resolves():
    shown = [task(90, "first"), task(17, "second"), task(55, "third")]
    text = reply("list_tasks", {}, out({"status": "all", "tasks": shown}))
    assert "2. [ ] second" in text
    assert parse("delete 2", shown) == ToolIntent("delete_task", {"task_id": 17})


def test_reply_to_a_deleted_task():
    assert reply("delete_task", {"task_id": 41}, out({"deleted": task(41, "buy milk")})) == "Deleted “buy milk”."


def test_reply_to_a_completed_task():
    output = out({"updated": task(41, "buy milk", completed=True)})
    assert reply("complete_task", {"task_id": 41, "completed": True}, output) == (
        "Marked “buy milk” as done. Nice work!"
    )


def test_reply_to_a_reopened_task():
    output = out({"updated": task(41, "buy milk", completed=False)})
    assert reply("complete_task", {"task_id": 41, "completed": False}, output) == (
        "Reopened “buy milk”: it's pending again."
    )


def test_reply_to_a_renamed_task():
    output = out({"updated": task(41, "buy oat milk")})
    assert reply("update_task", {"title": "buy milk", "new_title": "buy oat milk"}, output) == (
        "Renamed task #41 to “buy oat milk”."
    )


def test_reply_to_a_description_change():
    output = out({"updated": task(41, "buy milk", description="two litres")})
    assert reply("update_task", {"task_id": 41, "description": "two litres"}, output) == "Updated “buy milk”."


def test_reply_to_a_tool_error_apologises_and_points_to_the_list():
    output = out({"error": "No task matches id 9."})
    assert reply("delete_task", {"task_id": 9}, output) == (
        "Sorry, I couldn't do that: No task matches id 9. Say \"list my tasks\" to see what's there."
    )


def test_reply_to_output_that_is_not_json_treats_it_as_an_error():
    text = reply("add_task", {}, "database is locked")
    assert text.startswith("Sorry, I couldn't do that: database is locked")


def test_reply_to_json_that_is_not_an_object_treats_it_as_an_error():
    assert reply("list_tasks", {}, "[1, 2]").startswith("Sorry, I couldn't do that: [1, 2]")


def test_reply_to_an_unrecognised_result_is_done():
    assert reply("update_task", {}, out({"ok": True})) == "Done."


def test_reply_to_another_tools_result_says_what_it_answered():
    """Another tool (an MCP server's): its result in words, a plain ``{"result"}`` as its text."""
    assert reply("mystery_tool", {}, out({"ok": True})) == 'mystery_tool answered: {"ok": true}'
    assert reply("files__read", {}, out({"result": "hello"})) == "files__read answered: hello"
    assert reply("files__read", {}, out({"error": "gone"})) == "Sorry, files__read failed: gone"


@pytest.mark.parametrize("message, tools, expected", [
    ('use files.read {"path": "a.txt"}', ["files__read"], ToolIntent("files__read", {"path": "a.txt"})),
    ("use files__read", ["files__read"], ToolIntent("files__read", {})),
    ("use files.read", [], "I have no tool named files.read."),
    ("use files.read [1]", ["files__read"], 'Give files.read its arguments as a JSON object, e.g. use files.read {"text": "hi"}.'),
    ("use the force", ["files__read"], HELP),  # not a tool's name: the usual rules
])
def test_use_calls_any_tool_the_agent_has(message, tools, expected):
    assert parse(message, None, tools) == expected
