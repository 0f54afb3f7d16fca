"""A client's message id names one run of that user's: a unique index (partial: most sends
carry none)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from domain.tables import Run

ID = "2026-12-02T00:21:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "one run per client message id"


async def one_run_per_client_message() -> None:
    await Run.raw(
        "CREATE UNIQUE INDEX IF NOT EXISTS run_user_id_client_message_id ON run (user_id, client_message_id) "
        "WHERE client_message_id IS NOT NULL"
    )


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="domain", description=DESCRIPTION)
    manager.add_raw(one_run_per_client_message)
    return manager
