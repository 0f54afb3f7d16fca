"""Feedback's indexes, and the ratings ChatKit stored on messages before it: copied into it.

Piccolo runs a migration's raw steps before its others: these need their own migration."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from domain.tables import Feedback

ID = "2026-12-20T00:11:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "one rating per message; ratings given before"


async def indexes() -> None:
    await Feedback.raw("CREATE UNIQUE INDEX IF NOT EXISTS feedback_message ON feedback (message)")
    await Feedback.raw("CREATE INDEX IF NOT EXISTS feedback_user_id_updated_at ON feedback (user_id, updated_at)")


async def ratings_given_before() -> None:
    # ChatKit's kinds were stored as they came (positive, negative), on any item.
    await Feedback.raw(
        "UPDATE message SET feedback = CASE WHEN role <> 'assistant' THEN NULL "
        "WHEN feedback = 'positive' THEN 'up' ELSE 'down' END WHERE feedback IS NOT NULL"
    )
    await Feedback.raw(
        "INSERT INTO feedback (message, user_id, rating, comment, created_at, updated_at) "
        "SELECT m.id, c.user_id, m.feedback, NULL, m.created_at, m.created_at FROM message m "
        "JOIN conversation c ON c.id = m.conversation WHERE m.feedback IS NOT NULL"
    )


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="domain", description=DESCRIPTION)
    manager.add_raw(indexes)
    manager.add_raw(ratings_given_before)
    return manager
