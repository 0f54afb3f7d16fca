"""Full-text search (domain/search.py): the index, the triggers that keep it, and every
message and title written before it, indexed.

One entry per user and assistant message: its text, and for the conversation's first one the
conversation's title too (a title is its first message's opening until renamed: one entry, so
a conversation is not found twice for the same words). The triggers run inside the statement
that writes a message or a title, so the index changes in the same transaction, whoever writes
(the run store's own SQL, Piccolo, a fork, a rename); deleting a message or a conversation
deletes its entry (a foreign key, then a trigger on SQLite).

PostgreSQL needs the ``unaccent`` extension (in contrib, which every packaged PostgreSQL
ships; trusted since PostgreSQL 13, so the database's owner may create it).
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from domain.tables import Message  # only a handle on the bound engine for raw statements

ID = "2026-12-20T00:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "full-text search of messages and titles"

# A message is its conversation's first when no user or assistant message is older.
_FIRST = """NOT EXISTS (SELECT 1 FROM message earlier WHERE earlier.conversation = {message}.conversation
        AND earlier.role IN ('user', 'assistant') AND earlier.created_at < {message}.created_at)"""
_FIRST_OF = """(SELECT id FROM message WHERE conversation = {conversation} AND role IN ('user', 'assistant')
        ORDER BY created_at, id LIMIT 1)"""

SQLITE = [
    # rowid = the entry's id in search_text: FTS5 has no foreign keys, search_entry has.
    """CREATE TABLE search_entry (
        id INTEGER PRIMARY KEY,
        user_id VARCHAR(128) NOT NULL,
        conversation_id UUID NOT NULL,
        message_id UUID NOT NULL UNIQUE REFERENCES message (id) ON DELETE CASCADE,
        role VARCHAR(16) NOT NULL,
        created_at TIMESTAMPTZ NOT NULL
    )""",
    # owner: one token per user, 'u' + the id's UTF-8 in hex (see SQLiteIndex.match).
    """CREATE VIRTUAL TABLE search_text USING fts5(
        owner, title, body, tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3')""",
    """CREATE TRIGGER search_entry_deleted AFTER DELETE ON search_entry BEGIN
        DELETE FROM search_text WHERE rowid = OLD.id;
    END""",
    f"""CREATE TRIGGER message_indexed AFTER INSERT ON message WHEN NEW.role IN ('user', 'assistant') BEGIN
        INSERT INTO search_entry (user_id, conversation_id, message_id, role, created_at)
            SELECT user_id, id, NEW.id, NEW.role, NEW.created_at FROM conversation WHERE id = NEW.conversation;
        INSERT INTO search_text (rowid, owner, title, body)
            SELECT e.id, 'u' || hex(e.user_id),
                   CASE WHEN {_FIRST.format(message="NEW")} THEN COALESCE(c.title, '') ELSE '' END, NEW.content
            FROM search_entry e JOIN conversation c ON c.id = e.conversation_id WHERE e.message_id = NEW.id;
    END""",
    """CREATE TRIGGER message_reindexed AFTER UPDATE OF content ON message BEGIN
        UPDATE search_text SET body = NEW.content WHERE rowid = (SELECT id FROM search_entry WHERE message_id = NEW.id);
    END""",
    f"""CREATE TRIGGER conversation_retitled AFTER UPDATE OF title ON conversation BEGIN
        UPDATE search_text SET title = COALESCE(NEW.title, '')
        WHERE rowid = (SELECT id FROM search_entry WHERE message_id = {_FIRST_OF.format(conversation="NEW.id")});
    END""",
    # What was written before, in order.
    """INSERT INTO search_entry (user_id, conversation_id, message_id, role, created_at)
        SELECT c.user_id, c.id, m.id, m.role, m.created_at FROM message m JOIN conversation c ON c.id = m.conversation
        WHERE m.role IN ('user', 'assistant') ORDER BY m.created_at""",
    f"""INSERT INTO search_text (rowid, owner, title, body)
        SELECT e.id, 'u' || hex(e.user_id), CASE WHEN {_FIRST.format(message="m")} THEN COALESCE(c.title, '') ELSE '' END,
               m.content
        FROM search_entry e JOIN message m ON m.id = e.message_id JOIN conversation c ON c.id = e.conversation_id""",
]

POSTGRES = [
    "CREATE EXTENSION IF NOT EXISTS unaccent",
    # simple: no stop words, no stemming (any language); unaccent first folds accents.
    "CREATE TEXT SEARCH CONFIGURATION chat_search (COPY = simple)",
    """ALTER TEXT SEARCH CONFIGURATION chat_search ALTER MAPPING FOR asciiword, asciihword, hword_asciipart,
        word, hword, hword_part, numword, numhword, hword_numpart WITH unaccent, simple""",
    """CREATE TABLE search_entry (
        id BIGSERIAL PRIMARY KEY,
        user_id VARCHAR(128) NOT NULL,
        conversation_id UUID NOT NULL,
        message_id UUID NOT NULL UNIQUE REFERENCES message (id) ON DELETE CASCADE,
        role VARCHAR(16) NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        document TSVECTOR NOT NULL
    )""",
    # fastupdate off: each insert updates the index itself, instead of a pending list (up to
    # 4 MB) that every search reads through until a vacuum (2-4 ms a search at 100,000 messages).
    "CREATE INDEX search_entry_document ON search_entry USING GIN (document) WITH (fastupdate = off)",
    # The user's entries newest first: a common word's newest matches without the GIN index.
    "CREATE INDEX search_entry_user_id_id ON search_entry (user_id, id)",
    # The title weighs A, the text D.
    """CREATE FUNCTION search_document(title TEXT, content TEXT) RETURNS TSVECTOR LANGUAGE SQL IMMUTABLE AS $$
        SELECT setweight(to_tsvector('chat_search', COALESCE(title, '')), 'A')
            || setweight(to_tsvector('chat_search', content), 'D')
    $$""",
    f"""CREATE FUNCTION search_index_message() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' THEN
            UPDATE search_entry e SET document = search_document(
                CASE WHEN {_FIRST.format(message="NEW")} THEN c.title END, NEW.content)
            FROM conversation c WHERE e.message_id = NEW.id AND c.id = NEW.conversation;
        ELSIF NEW.role IN ('user', 'assistant') THEN
            INSERT INTO search_entry (user_id, conversation_id, message_id, role, created_at, document)
                SELECT c.user_id, c.id, NEW.id, NEW.role, NEW.created_at,
                       search_document(CASE WHEN {_FIRST.format(message="NEW")} THEN c.title END, NEW.content)
                FROM conversation c WHERE c.id = NEW.conversation;
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER message_indexed AFTER INSERT OR UPDATE OF content ON message
        FOR EACH ROW EXECUTE FUNCTION search_index_message()""",
    f"""CREATE FUNCTION search_index_title() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE search_entry e SET document = search_document(NEW.title, m.content) FROM message m
        WHERE m.id = {_FIRST_OF.format(conversation="NEW.id")} AND e.message_id = m.id;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER conversation_retitled AFTER UPDATE OF title ON conversation
        FOR EACH ROW EXECUTE FUNCTION search_index_title()""",
    f"""INSERT INTO search_entry (user_id, conversation_id, message_id, role, created_at, document)
        SELECT c.user_id, c.id, m.id, m.role, m.created_at,
               search_document(CASE WHEN {_FIRST.format(message="m")} THEN c.title END, m.content)
        FROM message m JOIN conversation c ON c.id = m.conversation
        WHERE m.role IN ('user', 'assistant') ORDER BY m.created_at""",
]

SQLITE_BACKWARDS = [
    "DROP TRIGGER IF EXISTS conversation_retitled", "DROP TRIGGER IF EXISTS message_reindexed",
    "DROP TRIGGER IF EXISTS message_indexed", "DROP TRIGGER IF EXISTS search_entry_deleted",
    "DROP TABLE IF EXISTS search_text", "DROP TABLE IF EXISTS search_entry",
]
POSTGRES_BACKWARDS = [
    "DROP TRIGGER IF EXISTS conversation_retitled ON conversation", "DROP TRIGGER IF EXISTS message_indexed ON message",
    "DROP FUNCTION IF EXISTS search_index_title()", "DROP FUNCTION IF EXISTS search_index_message()",
    "DROP TABLE IF EXISTS search_entry", "DROP FUNCTION IF EXISTS search_document(TEXT, TEXT)",
    "DROP TEXT SEARCH CONFIGURATION IF EXISTS chat_search",
]


async def _run(statements: dict[str, list[str]]) -> None:
    for statement in statements[Message._meta.db.engine_type]:
        await Message.raw(statement)


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="domain", description=DESCRIPTION)

    async def create() -> None:
        await _run({"sqlite": SQLITE, "postgres": POSTGRES})

    async def drop() -> None:
        await _run({"sqlite": SQLITE_BACKWARDS, "postgres": POSTGRES_BACKWARDS})

    manager.add_raw(create)
    manager.add_raw_backwards(drop)
    return manager
