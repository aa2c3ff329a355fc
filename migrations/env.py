"""Alembic environment: the URL comes from Winnow's settings unless the caller set one."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from core import tables, team_tables  # noqa: F401  (registers the tables on the metadata)
from core.config import get_settings
from core.db import Base, make_engine

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_settings().db_url


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=True,
        compare_type=True,
        literal_binds=connection is None,
    )


def run_offline() -> None:
    _configure(url=_url())
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        _configure(connection=connectable)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url())
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            _foreign_keys(connection, on=False)
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        if sqlite:
            _foreign_keys(connection, on=True)
    engine.dispose()


def _foreign_keys(connection: Connection, on: bool) -> None:
    """SQLite rebuilds a table to drop or change a column (batch mode): with foreign keys
    enforced, dropping the old table cascaded to every row that referenced it (dropping a
    column of projects deleted the project's images, classes and scores). They are off
    while migrations run (SQLite ignores the pragma inside a transaction), and every
    reference is checked before they are on again."""
    if on:
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
        if broken:
            raise RuntimeError(f"migration left rows referring to missing rows: {broken[:5]}")
    connection.exec_driver_sql(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    connection.commit()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
