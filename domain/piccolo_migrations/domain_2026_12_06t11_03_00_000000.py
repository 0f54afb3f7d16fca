"""One row of daily usage per user and day: the key the finish's upsert conflicts on.

Piccolo runs a migration's raw steps before its others: this needs its own migration."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from domain.tables import DailyUsage

ID = "2026-12-06T11:03:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "one usage row per user and day"


async def one_row_per_user_day() -> None:
    await DailyUsage.raw("CREATE UNIQUE INDEX IF NOT EXISTS daily_usage_user_day ON daily_usage (user_id, day)")


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="domain", description=DESCRIPTION)
    manager.add_raw(one_row_per_user_day)
    return manager
