"""Search over a user's own conversations: ``GET /api/{user_id}/search``, on both engines, over
real HTTP against the real app (uvicorn)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from domain.search import MAX_QUERY_CHARS
from tests.conftest import LiveServer, auth, start_live_server, write_before_migration
from tests.sse import parse_frames


@pytest.fixture
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        yield client


def say(http: httpx.Client, message: str, conversation_id: str | None = None, user: str = "alice") -> str:
    """Send a message and wait for the whole reply; the conversation's id."""
    response = http.post(f"/api/{user}/chat", json={"message": message, "conversation_id": conversation_id},
                         headers=auth(user))
    assert response.status_code == 200, response.text
    return response.json()["conversation_id"]


def search(http: httpx.Client, q: str, user: str = "alice", **params: object) -> dict:
    response = http.get(f"/api/{user}/search", params={"q": q, **params}, headers=auth(user))
    assert response.status_code == 200, response.text
    return response.json()


def found(http: httpx.Client, q: str, user: str = "alice") -> list[tuple[str, str]]:
    """(conversation id, snippet) of every result on the first page, best first."""
    return [(hit["conversation_id"], hit["snippet"]) for hit in search(http, q, user)["results"]]


def test_a_word_said_in_an_old_conversation_is_found_and_the_better_match_first(http):
    old = say(http, "add feed the purple kangaroo")
    for n in range(5):
        say(http, f"add water plant number {n}")
    # A long message that mentions both words once, far apart: a weaker match.
    weaker = say(http, "add " + " ".join(["a kangaroo appeared"] + ["and then nothing happened"] * 12 + ["purple"]))

    results = search(http, "purple kangaroo")["results"]
    assert {hit["conversation_id"] for hit in results} == {old, weaker}
    assert results[0]["conversation_id"] == old  # short, both words: ranked above the long one
    best = results[0]
    assert best["conversation_title"] == "add feed the purple kangaroo"
    assert best["role"] in ("user", "assistant") and best["message_id"]
    assert [part["text"] for part in best["snippet_parts"] if part["match"]] == ["purple", "kangaroo"]
    assert "".join(part["text"] for part in best["snippet_parts"]) == best["snippet"]
    # The message it names is in that conversation, and says it.
    detail = http.get(f"/api/alice/conversations/{old}", headers=auth("alice")).json()
    said = {m["id"]: m["content"] for m in detail["messages"]}
    assert "kangaroo" in said[best["message_id"]]


def test_case_and_accents_are_ignored_both_ways(http):
    accented = say(http, "add order a Crème Brûlée for Zoë")
    plain = say(http, "add visit the cafe near the naive museum")
    assert [c for c, _ in found(http, "creme brulee")] == [accented, accented]  # her message and the reply
    assert {c for c, _ in found(http, "ZOË")} == {accented}
    assert {c for c, _ in found(http, "café")} == {plain}
    assert {c for c, _ in found(http, "NAÏVE Musée")} == set()  # "musée" is not "museum" (no stemming)
    assert {c for c, _ in found(http, "NAÏVE Muse")} == {plain}  # a word matches the words it begins
    snippet = search(http, "brulee")["results"][0]["snippet_parts"]
    assert [part["text"] for part in snippet if part["match"]] == ["Brûlée"]  # shown as written


def test_another_users_words_are_never_found(http):
    say(http, "add adopt a secret axolotl", user="alice")
    say(http, "add adopt a tortoise", user="bob")
    assert found(http, "axolotl", user="bob") == []
    bobs = found(http, "adopt", user="bob")
    assert bobs and all("tortoise" in snippet for _, snippet in bobs)
    # Nor can one search as another.
    assert http.get("/api/alice/search", params={"q": "axolotl"}, headers=auth("bob")).status_code == 403


ODD_QUERIES = [
    '"', '""', '"""', "'", "' OR 1=1 --", '"unclosed phrase', "NOT", "a AND b OR c", "NEAR(a b)", "col:value",
    "{title body}: x", "x*", "*", "^start", "-minus", "(", ")", "\\", "%", "_", "\\x00", "\x00", "\u0000milk",
    "🦘", "猫が好き", "ﬁsh", "Ǆ", "\u200b", "\ufeff", "\U0010ffff", "a" * 300, "word " * 200,
    "x" * MAX_QUERY_CHARS, "ä" * MAX_QUERY_CHARS, "é" * 999 + "😀", " ".join(["quoted"] * 142),
]


def test_quotes_operators_unicode_and_long_queries_are_answered(http):
    say(http, 'add remember the "quoted" axolotl')
    for q in ODD_QUERIES:
        response = http.get("/api/alice/search", params={"q": q}, headers=auth("alice"))
        assert response.status_code == 200, (q, response.text)
        body = response.json()
        assert body["query"] == q and isinstance(body["results"], list)
    assert {hit["snippet"] for hit in search(http, '"quoted"')["results"]} >= {'add remember the "quoted" axolotl'}
    assert search(http, "🦘 axolotl")["results"]  # an emoji is no word: it only separates


def test_an_empty_query_finds_nothing_and_a_too_long_one_is_refused(http):
    say(http, "add something to find")
    for q in ("", "   ", "!?", '" "'):
        assert search(http, q) == {"query": q, "results": [], "next_cursor": None}
    assert http.get("/api/alice/search", headers=auth("alice")).json()["results"] == []  # no q at all
    for q in ("x" * (MAX_QUERY_CHARS + 1), "find " * 201):
        response = http.get("/api/alice/search", params={"q": q}, headers=auth("alice"))
        assert response.status_code == 400, response.text
        assert response.json()["extra"] == {"code": "query_too_long"}


def test_quoted_words_are_a_phrase(http):
    both = say(http, "add buy oat flour")
    say(http, "add flour and then buy something")
    assert {c for c, _ in found(http, '"buy oat flour"')} == {both}
    assert found(http, '"flour oat"') == []
    assert len({c for c, _ in found(http, "flour buy")}) == 2  # bare words: any order
    assert {c for c, _ in found(http, "“buy oat”")} == {both}  # typographic quotes too


def test_a_rename_an_edit_a_fork_and_a_delete_change_what_is_found(live_server, http):
    conversation = say(http, "add book the zeppelin tickets")
    assert http.patch(f"/api/alice/conversations/{conversation}", json={"title": "Holiday with Ingrid"},
                      headers=auth("alice")).status_code == 200
    hits = search(http, "ingrid")["results"]
    assert [hit["snippet"] for hit in hits] == ["Holiday with Ingrid"]  # the title, opened at the first message
    first = http.get(f"/api/alice/conversations/{conversation}", headers=auth("alice")).json()["messages"][0]
    assert hits[0]["message_id"] == first["id"] and hits[0]["conversation_title"] == "Holiday with Ingrid"

    # Editing the message (answered again with new words): the old words are gone, the new found.
    with httpx.stream("POST", f"{live_server.url}/api/alice/chat/stream", headers=auth("alice"), timeout=30,
                      json={"message": "add book the airship tickets", "conversation_id": conversation,
                            "again": first["id"]}) as response:
        assert parse_frames(response.read())[-1]["type"] == "done"
    assert {snippet for _, snippet in found(http, "zeppelin")} == set()
    assert {c for c, _ in found(http, "airship")} == {conversation}
    assert {c for c, _ in found(http, "ingrid")} == {conversation}  # the title stays with the first message

    fork = http.post(f"/api/alice/conversations/{conversation}/fork", headers=auth("alice")).json()
    assert {c for c, _ in found(http, "airship")} == {conversation, fork["id"]}

    assert http.delete(f"/api/alice/conversations/{conversation}", headers=auth("alice")).status_code == 204
    assert {c for c, _ in found(http, "airship")} == {fork["id"]}
    assert {c for c, _ in found(http, "ingrid")} == {fork["id"]}  # "Holiday with Ingrid (fork)"


def test_results_come_in_pages(http):
    conversation = None
    for n in range(12):
        conversation = say(http, f"add walk the wombat {n}", conversation)
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = search(http, "wombat", limit=5, **({"cursor": cursor} if cursor else {}))
        seen += [hit["message_id"] for hit in page["results"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(page["results"]) == 5
    assert len(seen) == len(set(seen)) == 24  # every message and reply, each once
    assert len(search(http, "wombat", limit=1000)["results"]) == 24  # at most 50 a page
    assert len(search(http, "wombat", limit=0)["results"]) == 1  # at least one
    for cursor in ("-1", "abc", "1.5", "9" * 40, "١٢"):
        response = http.get("/api/alice/search", params={"q": "wombat", "cursor": cursor}, headers=auth("alice"))
        assert response.status_code == 400, response.text
        assert response.json()["extra"] == {"code": "invalid_cursor"}


OLD_CONVERSATION = "6c0c5d48-1111-4a4a-9a9a-000000000001"
OLD_ROWS = [
    "INSERT INTO conversation (id, user_id, title, created_at, updated_at) VALUES "
    f"('{OLD_CONVERSATION}', 'alice', 'Old times', '2020-01-01 00:00:00+00:00', '2020-01-01 00:00:00+00:00')",
    *(
        "INSERT INTO message (id, conversation, run_id, role, content, tool, status, created_at) VALUES "
        f"('6c0c5d48-2222-4a4a-9a9a-00000000000{n}', '{OLD_CONVERSATION}', NULL, '{role}', '{text}', NULL, "
        f"'completed', '2020-01-01 00:00:0{n}+00:00')"
        for n, (role, text) in enumerate([("user", "tell me about the platypus"), ("assistant", "It lays eggs.")])
    ),
]


def test_messages_written_before_the_index_are_found(settings):
    """The migration that creates the index indexes what the database already held."""
    before_search = "2026-12-10T00:33:00:000000"

    write_before_migration(settings.database, before_search, OLD_ROWS)
    live = start_live_server(settings)  # migrates the rest: the search index among them
    try:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            assert found(http, "platypus") == [(OLD_CONVERSATION, "tell me about the platypus")]
            assert found(http, "eggs") == [(OLD_CONVERSATION, "It lays eggs.")]
            hit = search(http, "old times")["results"][0]  # the title, with the first message
            assert hit["message_id"] == "6c0c5d48-2222-4a4a-9a9a-000000000000"
            # And what is written from now on is found as usual.
            say(http, "add photograph the echidna", OLD_CONVERSATION)
            assert {c for c, _ in found(http, "echidna")} == {OLD_CONVERSATION}
    finally:
        live.stop()


def test_the_openapi_document_types_the_search(http):
    schema = http.get("/schema/openapi.json").json()
    operation = schema["paths"]["/api/{user_id}/search"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {"q", "limit", "cursor"}
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    page = schema["components"]["schemas"][answer["$ref"].rsplit("/", 1)[-1]]
    assert set(page["properties"]) == {"query", "results", "next_cursor"}
    assert json.dumps(schema).count("snippet_parts") >= 1
