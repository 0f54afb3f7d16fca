"""Where the code leans on a library beyond its documented use, a test that fails when the
library moves: Piccolo's engine interface (domain/sqlite_engine.py), the agents SDK's models'
client (domain/models.py). (app/broker.py uses only redis.asyncio's and asyncpg's public API.)

(uvicorn's and websockets' internals are pinned in tests/test_uvicorn_batched_websocket.py,
the openai client's in tests/test_provider_fast_path.py.)"""

from __future__ import annotations

import asyncio
import inspect

import pytest
from openai import AsyncOpenAI
from piccolo.columns import Integer, Varchar
from piccolo.engine.base import Engine
from piccolo.engine.sqlite import SQLiteEngine
from piccolo.querystring import QueryString
from piccolo.table import Table

import domain.models
from domain.models import ModelConfig, build_model, close_model
from domain.sqlite_engine import InlineSQLiteEngine

# -- Piccolo: the SQLite engine ------------------------------------------------------------


def test_the_inline_sqlite_engine_implements_piccolos_engine_interface_and_no_private_method():
    """It answers Piccolo's queries through ``run_querystring`` and ``run_ddl``, the abstract
    methods of Piccolo's ``Engine``: were they renamed, Piccolo's own aiosqlite engine would
    silently run every statement on a new connection and thread, past the write lock."""
    assert {"run_querystring", "run_ddl", "transaction"} <= Engine.__abstractmethods__
    assert list(inspect.signature(Engine.run_querystring).parameters) == ["self", "querystring", "in_pool"]
    assert list(inspect.signature(Engine.run_ddl).parameters) == ["self", "ddl", "in_pool"]
    assert list(inspect.signature(QueryString.compile_string).parameters) == ["self", "engine_type"]
    assert "current_transaction" in Engine.__slots__  # where Piccolo's queries find a transaction
    # No method here overrides one of Piccolo's private ones (they were _run_in_new_connection
    # and _run_in_existing_connection).
    methods = {name for name, value in vars(InlineSQLiteEngine).items() if inspect.isfunction(value)}
    assert {name for name in methods if name.startswith("_") and not name.startswith("__")
            and hasattr(SQLiteEngine, name)} == set()


def test_every_piccolo_query_runs_on_the_inline_engines_own_connections(tmp_path, monkeypatch):
    """Tables, rows and transactions through Piccolo's query API, with aiosqlite (what Piccolo's
    SQLite engine would use) made to fail: nothing reaches it."""
    import piccolo.engine.sqlite

    def refused(*args, **kwargs):
        raise AssertionError("a Piccolo query went around the inline engine")

    monkeypatch.setattr(piccolo.engine.sqlite.aiosqlite, "connect", refused)
    engine = InlineSQLiteEngine(path=str(tmp_path / "pin.sqlite3"))

    class Note(Table, db=engine):
        text = Varchar()
        stars = Integer(default=0)

    async def scenario() -> None:
        await Note.create_table(if_not_exists=True)
        await Note.insert(Note(text="outside"))
        async with engine.transaction():
            await Note.insert(Note(text="inside", stars=1))
            assert await Note.count() == 2  # the transaction's own write, on its connection
            await Note.update({Note.stars: 5}).where(Note.text == "outside")
        assert await Note.select(Note.text, Note.stars).order_by(Note.text).run() == [
            {"text": "inside", "stars": 1}, {"text": "outside", "stars": 5}
        ]
        assert await Note.exists().where(Note.stars == 5)
        assert await Note.raw("SELECT COUNT(*) AS n FROM note").run() == [{"n": 2}]
        with pytest.raises(RuntimeError, match="rolled back"):
            async with engine.transaction():
                await Note.delete(force=True)
                raise RuntimeError("rolled back")
        assert await Note.count() == 2
        await Note.alter().drop_table()
        await engine.close()

    asyncio.run(scenario())


# -- the agents SDK: the model's OpenAI client ---------------------------------------------


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
def test_close_model_closes_the_client_build_model_made_without_the_sdks_private_client(api, monkeypatch):
    made: list[AsyncOpenAI] = []

    def make_client(fast_path: bool, **options) -> AsyncOpenAI:
        made.append(AsyncOpenAI(**options))
        return made[-1]

    monkeypatch.setattr(domain.models, "make_client", make_client)

    async def scenario() -> None:
        model, _, _ = build_model(ModelConfig(base_url="http://127.0.0.1:9/v1", api=api))
        assert not made[0].is_closed()
        await close_model(model)
        assert made[0].is_closed()
        await close_model(model)  # a second close does nothing
        offline, _, _ = build_model(ModelConfig())
        await close_model(offline)  # no client to close

    asyncio.run(scenario())
    assert "._client" not in inspect.getsource(domain.models)


# -- Piccolo: the PostgreSQL engine --------------------------------------------------------


def test_piccolos_postgres_engine_still_runs_a_query_outside_a_transaction_through_run_in_pool():
    """domain/postgres_engine.py overrides ``_run_in_pool`` to take a pool connection with a
    deadline. Were Piccolo to rename it or stop calling it, queries outside a transaction would
    wait on a silent database without end again (issue 33)."""
    from piccolo.engine.postgres import PostgresEngine

    from domain.postgres_engine import DeadlinePostgresEngine

    assert list(inspect.signature(PostgresEngine._run_in_pool).parameters) == ["self", "query", "args"]
    for method in (PostgresEngine.run_querystring, PostgresEngine.run_ddl):
        assert "self._run_in_pool(" in inspect.getsource(method)
    assert DeadlinePostgresEngine._run_in_pool is not PostgresEngine._run_in_pool
