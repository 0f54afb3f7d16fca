"""Full-text search over a user's own conversation titles and messages.

What is indexed: every user and assistant message (every branch, old or current), the first
of each conversation with the conversation's title (so a title finds its conversation, opened
at its first message, and a conversation is not found twice for its opening words); hidden
notes and tool calls are not. The index is kept by triggers the migration 2026-12-20T00:00
creates, so a message or title is searchable in the same transaction that writes it, whoever
writes it (the run store, a fork, a rename), and goes with it when it is deleted. SQLite: an
FTS5 table (``unicode61``, diacritics removed, prefix indexes) beside ``search_entry``;
PostgreSQL: ``search_entry.document``, a ``tsvector`` under a GIN index, in the
``chat_search`` configuration (``simple`` after ``unaccent``). Neither stems (users write in
every language): a word matches the words it begins ("plant" finds "plants").

The query is read here, once, the same for both engines: words are runs of letters and digits
(case and accents ignored), every word must match, a bare word of two or more characters
matches as a prefix, and text in double quotes is a phrase (its words in that order, whole);
words after the first ``MAX_WORDS`` are left out. Everything else (operators, punctuation, an
unclosed quote) only separates words, so no input reaches an engine's query syntax, and both
engines accept and refuse exactly the same input: a query longer than ``MAX_QUERY_CHARS`` is
refused (``query_too_long``); one without a word finds nothing. The user's newest ``RANKED``
matches are ranked. Snippets are cut here from the matched text, alike on both engines.

``search_index(engine)`` is the one place that asks which engine it is.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import msgspec
from piccolo.engine.base import Engine

from domain.errors import InvalidInput
from domain.sqlite_engine import InlineSQLiteEngine
from domain.tables import Message

MAX_QUERY_CHARS = 1000
MAX_WORDS = 32  # the words that count: an AND of 32 words singles out a message already
DEFAULT_PAGE = 20
MAX_PAGE = 50
SNIPPET_WORDS = 24
SNIPPET_CHARS = 240
PREFIX_FROM = 2  # a bare word this long or longer also matches longer words
# A query matching more of the user's messages than this ranks the newest this many: ranking
# every match of a word in most messages took 50-150 ms over 100,000, and ranks alike anyway.
RANKED = 5000

# Letters and digits (Unicode); "_" is a word character to Python, a separator to both engines.
_WORD = re.compile(r"[^\W_]+")
# Straight and typographic double quotes (phones type the latter) delimit phrases.
_QUOTES = re.compile(r"[\"“”„‟«»]")

Role = Literal["user", "assistant"]


class QueryTooLong(InvalidInput):
    code = "query_too_long"


class InvalidCursor(InvalidInput):
    code = "invalid_cursor"


class Phrase(msgspec.Struct, frozen=True):
    """Words that must appear in this order; the last matches as a prefix when ``prefix``."""

    words: tuple[str, ...]
    prefix: bool = False


class SnippetPart(msgspec.Struct, frozen=True):
    text: str
    match: bool = False


class SearchHit(msgspec.Struct, frozen=True):
    conversation_id: str
    conversation_title: str | None
    message_id: str  # where to open the conversation; the first message's for a title that matched
    role: Role
    created_at: datetime
    snippet: str  # from the message; from the title when only the title matched
    snippet_parts: list[SnippetPart]  # the snippet, the matched words marked


class SearchPage(msgspec.Struct, frozen=True):
    query: str
    results: list[SearchHit]
    # Pass it as ``cursor`` for the next page; None: no more results.
    next_cursor: str | None = None


def fold(word: str) -> str:
    """A word as matching sees it: accents removed, case folded (for snippets and duplicates)."""
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def parse(query: str) -> list[Phrase]:
    """The phrases every result must hold; ``QueryTooLong`` past ``MAX_QUERY_CHARS``."""
    if len(query) > MAX_QUERY_CHARS:
        raise QueryTooLong(f"A search is at most {MAX_QUERY_CHARS} characters long.")
    parts = _QUOTES.split(query)
    closed = len(parts) % 2 == 1  # an unclosed quote: the text after it is plain words
    phrases: list[Phrase] = []
    seen: set[tuple[tuple[str, ...], bool]] = set()
    for n, part in enumerate(parts):
        words = _WORD.findall(part)
        quoted = n % 2 == 1 and (closed or n < len(parts) - 1)
        found = [Phrase(tuple(words))] if quoted and len(words) > 1 else [
            Phrase((word,), prefix=not quoted and len(word) >= PREFIX_FROM) for word in words
        ]
        for phrase in found:
            key = (tuple(fold(w) for w in phrase.words), phrase.prefix)
            if key not in seen:
                seen.add(key)
                phrases.append(phrase)
    return _first_words(phrases)


def _first_words(phrases: list[Phrase]) -> list[Phrase]:
    """The phrases holding the first ``MAX_WORDS`` words (a long phrase cut to what is left)."""
    kept, room = [], MAX_WORDS
    for phrase in phrases:
        if len(phrase.words) > room:
            if room:
                kept.append(Phrase(phrase.words[:room]))
            break
        kept.append(phrase)
        room -= len(phrase.words)
    return kept


def page_bounds(limit: int | None, cursor: str | None) -> tuple[int, int]:
    """(size, offset). The cursor is opaque to clients: the offset of the next page."""
    size = DEFAULT_PAGE if limit is None else max(1, min(limit, MAX_PAGE))
    if cursor is None or cursor == "":
        return size, 0
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 9):
        raise InvalidCursor("The cursor is not one a search answered.")
    return size, int(cursor)


# -- snippets -------------------------------------------------------------------------------

def snippet(text: str, phrases: Sequence[Phrase]) -> list[SnippetPart]:
    """The passage of ``text`` around its first match, the matched words marked, whitespace
    collapsed, "…" where the text goes on. Each engine splits words its own way: a match these
    rules do not see still gets the text's beginning."""
    exact = {fold(w) for p in phrases for w in (p.words[:-1] if p.prefix else p.words)}
    prefixes = tuple(fold(p.words[-1]) for p in phrases if p.prefix)
    tokens = list(_WORD.finditer(text))
    hits = [n for n, token in enumerate(tokens) if fold(token.group()) in exact
            or fold(token.group()).startswith(prefixes)]
    focus = hits[0] if hits else 0
    first = max(0, focus - SNIPPET_WORDS // 4)
    while first < focus and tokens[focus].start() - tokens[first].start() > SNIPPET_CHARS // 3:
        first += 1  # a few long words before the match: start nearer it
    last = min(len(tokens), first + SNIPPET_WORDS)
    start = tokens[first].start() if first else 0
    end = tokens[last - 1].end() if last < len(tokens) else len(text)
    pieces: list[tuple[str, bool]] = [("…", False)] if first else []
    at = start
    for n in hits:
        if first <= n < last:
            pieces += [(text[at:tokens[n].start()], False), (tokens[n].group(), True)]
            at = tokens[n].end()
    pieces.append((text[at:end], False))
    if last < len(tokens):
        pieces.append(("…", False))
    return _clipped([(piece if match else _squeeze(piece), match) for piece, match in pieces])


def _clipped(pieces: list[tuple[str, bool]]) -> list[SnippetPart]:
    """Adjacent pieces of a kind joined, the ends trimmed, at most ``SNIPPET_CHARS``."""
    parts: list[SnippetPart] = []
    room = SNIPPET_CHARS
    for n, (piece, match) in enumerate(pieces):
        if n == 0:
            piece = piece.lstrip()
        if n == len(pieces) - 1:
            piece = piece.rstrip()
        if len(piece) > room:
            piece = piece[:room].rstrip() + "…"
        if piece:
            if parts and parts[-1].match == match:
                parts[-1] = SnippetPart(parts[-1].text + piece, match)
            else:
                parts.append(SnippetPart(piece, match))
        room -= len(piece)
        if room <= 0:
            break
    return parts


def _squeeze(text: str) -> str:
    """Whitespace runs as one space (a snippet is one line)."""
    return re.sub(r"\s+", " ", text)


# -- the engines ----------------------------------------------------------------------------

class _Index:
    """One engine's query: the page of entries matching, best first, with their text."""

    async def hits(self, user_id: str, phrases: Sequence[Phrase], size: int, offset: int) -> list[dict[str, Any]]:
        raise NotImplementedError


# Both engines: the page of the user's best entries among their newest ``RANKED`` matches,
# ties newest first, then their text.
_WITH_TEXT = """
SELECT e.conversation_id, e.message_id, e.role, e.created_at, c.title, m.content
FROM page p JOIN search_entry e ON e.id = p.id JOIN conversation c ON c.id = e.conversation_id
JOIN message m ON m.id = e.message_id
WHERE e.user_id = {}
ORDER BY p.score DESC, p.id DESC
"""


class SQLiteIndex(_Index):
    # bm25 is lower for better matches; its weights: owner (never ranks), title, text. FTS5
    # reads matches newest first and stops at the cutoff; bm25 ranks those at or after it.
    _SQL = (f"""
WITH cutoff AS (
    SELECT MIN(rowid) AS low FROM (
        SELECT rowid FROM search_text WHERE search_text MATCH {{}} ORDER BY rowid DESC LIMIT {RANKED})
), page AS (
    SELECT rowid AS id, -bm25(search_text, 0.0, 4.0, 1.0) AS score FROM search_text
    WHERE search_text MATCH {{}} AND rowid >= (SELECT low FROM cutoff)
    ORDER BY score DESC, rowid DESC LIMIT {{}} OFFSET {{}}
)""" + _WITH_TEXT).replace("{}", "?")

    def __init__(self, engine: InlineSQLiteEngine):
        self.engine = engine

    async def hits(self, user_id: str, phrases: Sequence[Phrase], size: int, offset: int) -> list[dict[str, Any]]:
        # Off the event loop: ranking thousands of matches takes milliseconds, and this
        # engine's other statements run on the loop's thread.
        match = self.match(user_id, phrases)
        return await self.engine.read_off_loop(self._SQL, [match, match, size, offset, user_id])

    @staticmethod
    def match(user_id: str, phrases: Sequence[Phrase]) -> str:
        """An FTS5 query. Every word is a quoted string (a ``"`` never occurs in one), so no
        input is FTS5 syntax. The owner column holds one token per user, the id's UTF-8 in
        hex (one id, one token): FTS5 finds the user's entries itself, and ranks only those."""
        owner = "u" + user_id.encode("utf-8", "surrogatepass").hex()
        words = " ".join(f'"{" ".join(p.words)}"' + ("*" if p.prefix else "") for p in phrases)
        return f'owner : "{owner}" AND {{title body}} : ({words})'


class PostgresIndex(_Index):
    # ts_rank's normalisation 1 divides by the log of the entry's length; a title's words
    # (weight A) count four times a message's (D), as on SQLite. The query is in the SQL as a
    # literal, not a parameter: the plan depends on how common its words are (a common word:
    # the user's entries newest first until enough match; a rare one: the GIN index), which a
    # prepared statement's generic plan would not know.
    _SQL = f"""
WITH matches AS (
    SELECT e.id, e.document FROM search_entry e
    WHERE e.user_id = {{}} AND e.document @@ to_tsquery('chat_search', '%(query)s')
    ORDER BY e.id DESC LIMIT {RANKED}
), page AS (
    SELECT id, ts_rank(ARRAY[0.1, 0.2, 0.4, 0.4]::real[], document, to_tsquery('chat_search', '%(query)s'), 1) AS score
    FROM matches ORDER BY score DESC, id DESC LIMIT {{}} OFFSET {{}}
)""" + _WITH_TEXT

    def __init__(self, engine: Engine):
        self.engine = engine

    async def hits(self, user_id: str, phrases: Sequence[Phrase], size: int, offset: int) -> list[dict[str, Any]]:
        # The query text holds letters, digits, quotes, parentheses, ``&``, ``<->`` and ``:*``
        # (``tsquery``): a quote doubled is all a SQL literal of it needs.
        literal = self.tsquery(phrases).replace("'", "''")
        async with self.engine.transaction():
            # Reading every entry is never the best plan here, yet the planner, which prices
            # GIN prefix scans high, chose it for words in a few percent of the messages
            # (80-120 ms over 100,000, against 10-30 through an index).
            await Message.raw("SET LOCAL enable_seqscan = off")
            return await Message.raw(self._SQL % {"query": literal}, user_id, size, offset, user_id)

    @staticmethod
    def tsquery(phrases: Sequence[Phrase]) -> str:
        """A ``to_tsquery`` text. Words hold only letters and digits, each quoted as a lexeme,
        so none is an operator; the configuration folds case and accents as it did indexing."""

        def phrase(p: Phrase) -> str:
            lexemes = [f"'{word}'" for word in p.words]
            if p.prefix:
                lexemes[-1] += ":*"
            return " <-> ".join(lexemes)

        return " & ".join(f"({phrase(p)})" for p in phrases)


def search_index(engine: Engine) -> _Index:
    """The index for ``engine``: the one place here that asks which engine it is."""
    return SQLiteIndex(engine) if isinstance(engine, InlineSQLiteEngine) else PostgresIndex(engine)


async def search(engine: Engine, user_id: str, query: str, limit: int | None = None,
                 cursor: str | None = None) -> SearchPage:
    """A page of the user's messages and titles matching ``query``, best first."""
    phrases = parse(query)
    size, offset = page_bounds(limit, cursor)
    if not phrases:
        return SearchPage(query=query, results=[])
    rows = await search_index(engine).hits(user_id, phrases, size + 1, offset)
    results = [_hit(row, phrases) for row in rows[:size]]
    return SearchPage(query=query, results=results, next_cursor=str(offset + size) if len(rows) > size else None)


def _hit(row: dict[str, Any], phrases: Sequence[Phrase]) -> SearchHit:
    parts = snippet(row["content"] or "", phrases)
    if row["title"] and not any(part.match for part in parts):
        titled = snippet(row["title"], phrases)
        parts = titled if any(part.match for part in titled) else parts
    created_at = row["created_at"]
    return SearchHit(
        conversation_id=str(row["conversation_id"]), conversation_title=row["title"],
        message_id=str(row["message_id"]), role=row["role"],
        # Text where the driver did not convert it (SQLite reads a column as declared, or not).
        created_at=datetime.fromisoformat(created_at) if isinstance(created_at, str) else created_at,
        snippet="".join(part.text for part in parts), snippet_parts=parts,
    )
