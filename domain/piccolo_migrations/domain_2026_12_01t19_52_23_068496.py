"""Drop the single-column indexes that lead a composite index, and the unused one on
run.heartbeat_at (the sweep selects by status). Each was written on every insert, or on
every lease renewal, for no query that needed it."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import ForeignKey, Timestamptz, Varchar

ID = "2026-12-01T19:52:23:068496"
VERSION = "1.38.0"
DESCRIPTION = "drop indexes a composite index covers"

DROPPED = [  # (table class, table, column, column class)
    ("Conversation", "conversation", "user_id", Varchar),
    ("Message", "message", "conversation", ForeignKey),
    ("Run", "run", "user_id", Varchar),
    ("Run", "run", "heartbeat_at", Timestamptz),
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="domain", description=DESCRIPTION)
    for table_class_name, tablename, column, column_class in DROPPED:
        manager.alter_column(
            table_class_name=table_class_name, tablename=tablename, column_name=column,
            db_column_name=column, params={"index": False}, old_params={"index": True},
            column_class=column_class, old_column_class=column_class, schema=None,
        )
    return manager
