"""One decision per tool call of a run; run.status long enough for ``awaiting_approval``.

Piccolo runs a migration's raw steps before its others: these need their own migration."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from domain.tables import Approval

ID = "2026-12-06T10:24:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "one decision per call"


async def one_decision_per_call() -> None:
    await Approval.raw("CREATE UNIQUE INDEX IF NOT EXISTS approval_run_call_id ON approval (run, call_id)")


async def longer_run_status() -> None:
    # SQLite enforces no VARCHAR length (and Piccolo warns at every start when asked to alter one).
    if Approval._meta.db.engine_type == "postgres":
        await Approval.raw("ALTER TABLE run ALTER COLUMN status TYPE VARCHAR(32)")


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="domain", description=DESCRIPTION)
    manager.add_raw(one_decision_per_call)
    manager.add_raw(longer_run_status)
    return manager
