"""Drop run.instance: written at every start, read by nothing (the lease is heartbeat_at)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

ID = "2026-12-02T00:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "drop run.instance"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="domain", description=DESCRIPTION)
    manager.drop_column(table_class_name="Run", tablename="run", column_name="instance", db_column_name="instance")
    return manager
