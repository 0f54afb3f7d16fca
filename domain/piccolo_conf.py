"""Piccolo's configuration module.

Piccolo's migration runner looks the engine up here by module name, so ``DB`` is set by
``domain.database.bind`` when the app starts; the default only serves Piccolo's own CLI
(``piccolo migrations new domain --auto``) during development.
"""

import os

from piccolo.conf.apps import AppRegistry
from piccolo.engine.sqlite import SQLiteEngine

DB = SQLiteEngine(path=os.environ.get("PICCOLO_DEV_DB", "piccolo_dev.sqlite3"))
APP_REGISTRY = AppRegistry(apps=["domain.piccolo_app"])
