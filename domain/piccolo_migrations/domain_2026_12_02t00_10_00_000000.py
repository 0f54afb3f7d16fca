"""One running run per conversation, as a constraint: a partial unique index on run.conversation.

Two starts racing for one conversation can no longer both be admitted; the loser's insert is
refused and answered 409. Runs a race already let through are interrupted first (all but the
newest), or the index could not be built.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from domain.tables import Run

ID = "2026-12-02T00:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "one running run per conversation"


async def one_running_run_per_conversation() -> None:
    await Run.raw(
        "UPDATE run SET status = 'interrupted' WHERE status = 'running' AND EXISTS "
        "(SELECT 1 FROM run AS newer WHERE newer.conversation = run.conversation "
        "AND newer.status = 'running' AND newer.created_at > run.created_at)"
    )
    await Run.raw(
        "CREATE UNIQUE INDEX IF NOT EXISTS run_one_running_per_conversation ON run (conversation) "
        "WHERE status = 'running'"
    )


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="domain", description=DESCRIPTION)
    manager.add_raw(one_running_run_per_conversation)
    return manager
