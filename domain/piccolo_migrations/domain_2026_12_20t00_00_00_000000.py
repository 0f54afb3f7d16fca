"""Full-text search (domain/search.py): the index, the triggers that keep it, and every
message and title written before it, indexed.

The triggers run inside the statement that writes a message or a title, so the index changes
in the same transaction, whoever writes (the run store's own SQL, Piccolo, a fork, a rename);
deleting a message or a conversation deletes its entries (foreign keys, then a trigger on
SQLite). Indexed: user and assistant messages with text, and titles.

PostgreSQL needs the ``unaccent`` extension (in contrib, which every packaged PostgreSQL
ships; trusted since PostgreSQL 13, so the database's owner may create it).
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from domain.tables import Message  # only a handle on the bound engine for raw statements

ID = "2026-12-20T00:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "full-text search of messages and titles"

SQLITE = [
    # rowid = the entry's id in search_text: FTS5 has no foreign keys, search_entry has.
    """CREATE TABLE search_entry (
        id INTEGER PRIMARY KEY,
        user_id VARCHAR(128) NOT NULL,
        conversation_id UUID NOT NULL REFERENCES conversation (id) ON DELETE CASCADE,
        message_id UUID UNIQUE REFERENCES message (id) ON DELETE CASCADE,
        role VARCHAR(16) NOT NULL,
        created_at TIMESTAMPTZ NOT NULL
    )""",
    "CREATE INDEX search_entry_conversation ON search_entry (conversation_id)",
    # owner: one token per user, 'u' + the id's UTF-8 in hex (see SQLiteIndex.match).
    """CREATE VIRTUAL TABLE search_text USING fts5(
        owner, title, body, tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3')""",
    """CREATE TRIGGER search_entry_deleted AFTER DELETE ON search_entry BEGIN
        DELETE FROM search_text WHERE rowid = OLD.id;
    END""",
    """CREATE TRIGGER message_indexed AFTER INSERT ON message
    WHEN NEW.role IN ('user', 'assistant') AND NEW.content <> '' BEGIN
        INSERT INTO search_entry (user_id, conversation_id, message_id, role, created_at)
            SELECT user_id, id, NEW.id, NEW.role, NEW.created_at FROM conversation WHERE id = NEW.conversation;
        INSERT INTO search_text (rowid, owner, title, body)
            SELECT id, 'u' || hex(user_id), '', NEW.content FROM search_entry WHERE message_id = NEW.id;
    END""",
    """CREATE TRIGGER message_reindexed AFTER UPDATE OF content ON message BEGIN
        DELETE FROM search_entry WHERE message_id = NEW.id;
        INSERT INTO search_entry (user_id, conversation_id, message_id, role, created_at)
            SELECT user_id, id, NEW.id, NEW.role, NEW.created_at FROM conversation
            WHERE id = NEW.conversation AND NEW.role IN ('user', 'assistant') AND NEW.content <> '';
        INSERT INTO search_text (rowid, owner, title, body)
            SELECT id, 'u' || hex(user_id), '', NEW.content FROM search_entry WHERE message_id = NEW.id;
    END""",
    """CREATE TRIGGER conversation_indexed AFTER INSERT ON conversation
    WHEN NEW.title IS NOT NULL AND NEW.title <> '' BEGIN
        INSERT INTO search_entry (user_id, conversation_id, message_id, role, created_at)
            VALUES (NEW.user_id, NEW.id, NULL, 'title', NEW.created_at);
        INSERT INTO search_text (rowid, owner, title, body)
            VALUES (last_insert_rowid(), 'u' || hex(NEW.user_id), NEW.title, '');
    END""",
    """CREATE TRIGGER conversation_retitled AFTER UPDATE OF title ON conversation BEGIN
        DELETE FROM search_entry WHERE conversation_id = NEW.id AND message_id IS NULL;
        INSERT INTO search_entry (user_id, conversation_id, message_id, role, created_at)
            SELECT NEW.user_id, NEW.id, NULL, 'title', NEW.created_at WHERE NEW.title IS NOT NULL AND NEW.title <> '';
        INSERT INTO search_text (rowid, owner, title, body)
            SELECT id, 'u' || hex(NEW.user_id), NEW.title, '' FROM search_entry
            WHERE conversation_id = NEW.id AND message_id IS NULL;
    END""",
    # What was written before: titles, then messages in order.
    """INSERT INTO search_entry (user_id, conversation_id, message_id, role, created_at)
        SELECT user_id, id, NULL, 'title', created_at FROM conversation WHERE title IS NOT NULL AND title <> ''""",
    """INSERT INTO search_entry (user_id, conversation_id, message_id, role, created_at)
        SELECT c.user_id, c.id, m.id, m.role, m.created_at FROM message m JOIN conversation c ON c.id = m.conversation
        WHERE m.role IN ('user', 'assistant') AND m.content <> '' ORDER BY m.created_at""",
    """INSERT INTO search_text (rowid, owner, title, body)
        SELECT e.id, 'u' || hex(e.user_id), COALESCE(c.title, ''), '' FROM search_entry e
        JOIN conversation c ON c.id = e.conversation_id WHERE e.message_id IS NULL""",
    """INSERT INTO search_text (rowid, owner, title, body)
        SELECT e.id, 'u' || hex(e.user_id), '', m.content FROM search_entry e JOIN message m ON m.id = e.message_id""",
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
        conversation_id UUID NOT NULL REFERENCES conversation (id) ON DELETE CASCADE,
        message_id UUID UNIQUE REFERENCES message (id) ON DELETE CASCADE,
        role VARCHAR(16) NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        document TSVECTOR NOT NULL
    )""",
    "CREATE INDEX search_entry_document ON search_entry USING GIN (document)",
    "CREATE INDEX search_entry_user_id ON search_entry (user_id)",
    "CREATE INDEX search_entry_conversation ON search_entry (conversation_id)",
    """CREATE FUNCTION search_index_message() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' THEN
            DELETE FROM search_entry WHERE message_id = NEW.id;
        END IF;
        IF NEW.role IN ('user', 'assistant') AND NEW.content <> '' THEN
            INSERT INTO search_entry (user_id, conversation_id, message_id, role, created_at, document)
                SELECT c.user_id, c.id, NEW.id, NEW.role, NEW.created_at,
                       setweight(to_tsvector('chat_search', NEW.content), 'D')
                FROM conversation c WHERE c.id = NEW.conversation;
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER message_indexed AFTER INSERT OR UPDATE OF content ON message
        FOR EACH ROW EXECUTE FUNCTION search_index_message()""",
    """CREATE FUNCTION search_index_title() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' THEN
            DELETE FROM search_entry WHERE conversation_id = NEW.id AND message_id IS NULL;
        END IF;
        IF NEW.title IS NOT NULL AND NEW.title <> '' THEN
            INSERT INTO search_entry (user_id, conversation_id, message_id, role, created_at, document)
                VALUES (NEW.user_id, NEW.id, NULL, 'title', NEW.created_at,
                        setweight(to_tsvector('chat_search', NEW.title), 'A'));
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER conversation_indexed AFTER INSERT OR UPDATE OF title ON conversation
        FOR EACH ROW EXECUTE FUNCTION search_index_title()""",
    """INSERT INTO search_entry (user_id, conversation_id, message_id, role, created_at, document)
        SELECT user_id, id, NULL, 'title', created_at, setweight(to_tsvector('chat_search', title), 'A')
        FROM conversation WHERE title IS NOT NULL AND title <> ''""",
    """INSERT INTO search_entry (user_id, conversation_id, message_id, role, created_at, document)
        SELECT c.user_id, c.id, m.id, m.role, m.created_at, setweight(to_tsvector('chat_search', m.content), 'D')
        FROM message m JOIN conversation c ON c.id = m.conversation
        WHERE m.role IN ('user', 'assistant') AND m.content <> '' ORDER BY m.created_at""",
]

SQLITE_BACKWARDS = [
    "DROP TRIGGER IF EXISTS conversation_retitled", "DROP TRIGGER IF EXISTS conversation_indexed",
    "DROP TRIGGER IF EXISTS message_reindexed", "DROP TRIGGER IF EXISTS message_indexed",
    "DROP TRIGGER IF EXISTS search_entry_deleted", "DROP TABLE IF EXISTS search_text",
    "DROP TABLE IF EXISTS search_entry",
]
POSTGRES_BACKWARDS = [
    "DROP TRIGGER IF EXISTS conversation_indexed ON conversation", "DROP TRIGGER IF EXISTS message_indexed ON message",
    "DROP FUNCTION IF EXISTS search_index_title()", "DROP FUNCTION IF EXISTS search_index_message()",
    "DROP TABLE IF EXISTS search_entry", "DROP TEXT SEARCH CONFIGURATION IF EXISTS chat_search",
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
