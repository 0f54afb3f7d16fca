"""Piccolo app config: lets Piccolo's migration machinery find the tables and migrations."""

from pathlib import Path

from piccolo.conf.apps import AppConfig

from domain.tables import TABLES

APP_CONFIG = AppConfig(
    app_name="domain",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=list(TABLES),
    migration_dependencies=[],
    commands=[],
)
