"""Models and migrations agree: after `upgrade` on an empty database, Alembic's autogenerate
comparison finds nothing to do. Runs on a fresh SQLite file and on the pass's own database
(PostgreSQL in the services pass)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Integer, MetaData, String, Table, text

from idp import create_app
from idp.settings import Settings
from idp.storage.models import db
from tests.conftest import ROOT

IDP = ROOT / ".venv" / "bin" / "idp"


def schema_diff(engine, metadata: MetaData) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": False})
        return compare_metadata(context, metadata)


def test_migrations_match_models_on_fresh_sqlite(tmp_path):
    from flask_migrate import upgrade

    db_file = tmp_path / "fresh.db"
    app = create_app(Settings(database_url=f"sqlite:///{db_file}", instance_path=str(tmp_path / "instance"),
                              keys_path=str(tmp_path / "keys"), log_level="WARNING", testing=True))
    with app.app_context():
        upgrade()
        assert db.engine.url.database == str(db_file)
        diff = schema_diff(db.engine, db.metadata)
        db.engine.dispose()
    assert diff == []


def test_migrations_match_models_on_test_database(app):
    """The `app` fixture upgraded this pass's database (PostgreSQL in the services pass)."""
    with app.app_context():
        diff = schema_diff(db.engine, db.metadata)
        tables = set(db.metadata.tables)
    assert diff == []
    assert {"users", "clients", "signing_keys", "store_entries"} <= tables


def test_comparison_detects_a_model_without_migration(app):
    """Guard for the two tests above: the comparison really sees tables and columns."""
    metadata = MetaData()
    for table in db.metadata.tables.values():
        table.to_metadata(metadata)
    Table("not_migrated", metadata, Column("id", Integer, primary_key=True))
    metadata.tables["users"].append_column(Column("nickname", String(50)))
    metadata.tables["users"].c.name.type = Integer()
    with app.app_context():
        diff = schema_diff(db.engine, metadata)
    flat = [d[0] if isinstance(d, list) else d for d in diff]  # modify_* come wrapped in a list
    found = {(d[0], d[3].name if d[0] == "add_column" else d[3] if d[0] == "modify_type" else d[1].name)
             for d in flat}
    assert ("add_table", "not_migrated") in found
    assert ("add_column", "nickname") in found
    assert ("modify_type", "name") in found  # compare_type is on


def _sqlite_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDP_", "DATABASE_URL", "REDIS_URL",
                                                                     "SECRET_KEY", "FLASK_"))}
    env.update(IDP_INSTANCE_PATH=str(tmp_path / "instance"), IDP_KEYS_PATH=str(tmp_path / "keys"))
    return env


def test_db_upgrade_twice_is_idempotent(tmp_path):
    env = _sqlite_env(tmp_path)
    runs = [subprocess.run([str(IDP), "db", "upgrade"], env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=120) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    assert "Running upgrade" in runs[0].stderr
    assert "Running upgrade" not in runs[1].stderr

    db_file = tmp_path / "instance" / "idp.db"
    with closing(sqlite3.connect(db_file)) as conn:
        versions = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    head = ScriptDirectory(str(ROOT / "migrations")).get_current_head()
    assert versions == [(head,)]
    assert {"users", "clients", "signing_keys", "store_entries"} <= tables
    assert journal == "wal"  # embedded mode: readers never block the writer


def test_db_upgrade_on_the_upgraded_test_database_is_a_no_op(app, settings, tmp_path):
    """The pass's own database (PostgreSQL in the services pass), already at head."""
    with app.app_context():
        before = schema_diff(db.engine, db.metadata)
        [(version_before,)] = db.session.execute(text("SELECT version_num FROM alembic_version")).all()
        db.session.remove()
    env = {**_sqlite_env(tmp_path), "DATABASE_URL": settings.database_url}
    run = subprocess.run([str(IDP), "db", "upgrade"], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert "Running upgrade" not in run.stderr
    with app.app_context():
        [(version_after,)] = db.session.execute(text("SELECT version_num FROM alembic_version")).all()
        assert schema_diff(db.engine, db.metadata) == before == []
        db.session.remove()
    assert version_after == version_before == ScriptDirectory(str(ROOT / "migrations")).get_current_head()
