"""What the built-in offline model understands, through the real Runner, tools and database."""

from __future__ import annotations

import msgspec
import pytest

from tests.conftest import auth


@pytest.fixture
def settings(settings):
    """The agent deletes without asking here: approvals have their own tests (test_approvals.py)."""
    return msgspec.structs.replace(settings, tool_approval="none")


class Chat:
    def __init__(self, client, user="alice"):
        self.client, self.user, self.conversation_id = client, user, None

    def say(self, message: str) -> dict:
        body = {"message": message}
        if self.conversation_id:
            body["conversation_id"] = self.conversation_id
        reply = self.client.post(f"/api/{self.user}/chat", json=body, headers=auth(self.user)).json()
        self.conversation_id = reply["conversation_id"]
        assert reply["status"] == "completed"
        return reply

    def tasks(self, status="all") -> list[dict]:
        return self.client.get(f"/api/{self.user}/tasks", params={"status": status}, headers=auth(self.user)).json()


def called(reply: dict) -> tuple[str, dict]:
    (call,) = reply["tool_calls"]
    return call["name"], call["arguments"]


def test_add_a_task_with_a_description(client):
    chat = Chat(client)
    reply = chat.say("please add call mom with description about the trip")
    assert called(reply) == ("add_task", {"title": "call mom", "description": "about the trip"})
    assert [(t["title"], t["description"]) for t in chat.tasks()] == [("call mom", "about the trip")]
    assert "call mom" in reply["response"]


@pytest.mark.parametrize("message, status", [
    ("list my tasks", "all"), ("show pending tasks", "pending"), ("what are my completed tasks?", "completed"),
])
def test_list_tasks_all_pending_completed(client, message, status):
    chat = Chat(client)
    chat.say("add alpha")
    chat.say("add beta")
    chat.say("complete beta")
    reply = chat.say(message)
    assert called(reply) == ("list_tasks", {"status": status})
    expected = {"all": ["alpha", "beta"], "pending": ["alpha"], "completed": ["beta"]}[status]
    listed = [t["title"] for t in reply["tool_calls"][0]["result"]["tasks"]]
    assert listed == expected
    for title in expected:
        assert title in reply["response"]


def test_empty_list_says_so(client):
    assert "empty" in Chat(client).say("list my tasks")["response"]


def test_complete_and_reopen_by_title(client):
    chat = Chat(client)
    chat.say("add water plants")
    assert called(chat.say("mark water plants as done"))[0] == "complete_task"
    assert chat.tasks("completed")[0]["title"] == "water plants"
    reply = chat.say("reopen water plants")
    assert called(reply)[1]["completed"] is False
    assert chat.tasks("pending")[0]["title"] == "water plants"
    assert "pending again" in reply["response"]


def test_rename_a_task(client):
    chat = Chat(client)
    chat.say("add buy milk")
    reply = chat.say("rename buy milk to buy oat milk")
    assert called(reply) == ("update_task", {"title": "buy milk", "new_title": "buy oat milk"})
    assert [t["title"] for t in chat.tasks()] == ["buy oat milk"]


def test_delete_by_title_and_by_number_from_the_last_list(client):
    chat = Chat(client)
    for title in ("one", "two", "three"):
        chat.say(f"add {title}")
    chat.say("delete one")
    chat.say("list my tasks")  # shows: 1. two, 2. three
    reply = chat.say("delete 2")
    assert "three" in reply["response"]
    assert [t["title"] for t in chat.tasks()] == ["two"]


def test_unknown_task_gets_a_helpful_answer_and_changes_nothing(client):
    chat = Chat(client)
    chat.say("add real task")
    reply = chat.say("complete imaginary task")
    assert "couldn't" in reply["response"]
    assert chat.tasks()[0]["completed"] is False


def test_anything_else_gets_help(client):
    reply = Chat(client).say("what can you do?")
    assert reply["tool_calls"] == []
    assert "add a task" in reply["response"]


def test_tools_only_touch_the_token_users_tasks(client):
    Chat(client, "alice").say("add alice task")
    bob = Chat(client, "bob")
    reply = bob.say("delete alice task")
    assert "couldn't" in reply["response"]
    assert [t["title"] for t in Chat(client, "alice").tasks()] == ["alice task"]


def test_a_multi_turn_conversation(client):
    chat = Chat(client)
    chat.say("hello")
    chat.say("add write report")
    chat.say("add book flights with description for the conference")
    chat.say("list pending tasks")
    chat.say("complete 1")
    chat.say("rename book flights to book trains")
    final = chat.say("show my list")
    assert final["response"] == (
        "You have 2 tasks:\n1. [x] write report\n2. [ ] book trains — for the conference"
    )
    detail = client.get(f"/api/alice/conversations/{chat.conversation_id}", headers=auth("alice")).json()
    assert len([m for m in detail["messages"] if m["role"] == "user"]) == 7
