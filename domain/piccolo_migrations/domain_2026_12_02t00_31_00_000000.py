"""A client's conversation id names one conversation of that user's (partial: most have none)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from domain.tables import Conversation

ID = "2026-12-02T00:31:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "one conversation per client id"


async def one_conversation_per_client_id() -> None:
    await Conversation.raw(
        "CREATE UNIQUE INDEX IF NOT EXISTS conversation_user_id_client_id ON conversation (user_id, client_id) "
        "WHERE client_id IS NOT NULL"
    )


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="domain", description=DESCRIPTION)
    manager.add_raw(one_conversation_per_client_id)
    return manager
