"""Engine, session factory and the declarative base."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import Engine, MetaData, Table, create_engine, event, exc, text
from sqlalchemy.orm import (
    DeclarativeBase,
    ORMExecuteState,
    Session,
    SessionTransaction,
    sessionmaker,
)
from sqlalchemy.pool import ConnectionPoolEntry

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def table_of(model: type[Base]) -> Table:
    """A mapped class's table, typed as one: statements on plain columns run without the
    ORM's loading of each row (``__table__`` is typed as any FROM clause)."""
    return cast(Table, model.__table__)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while a worker writes; the busy timeout makes the
    # two processes queue for the write lock instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


# FastAPI runs sync routes in anyio's thread pool of 40: a pool of 10 (+10 overflow) made
# requests wait for a connection, holding a thread, while the database sat idle.
POOL_SIZE = 20
POOL_OVERFLOW = 20


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=POOL_SIZE,
            max_overflow=POOL_OVERFLOW,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(url, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)
    _ping_when_idle(engine)
    return engine


# A connection that was checked in this recently is taken as alive: pinging on every
# checkout (pool_pre_ping) cost a round trip per request. One that sat idle longer (where a
# restarted or failed-over server, or a firewall's idle timeout, bites) is pinged first.
PING_AFTER_IDLE_S = 10.0


def _ping_when_idle(engine: Engine) -> None:
    """Pessimistic disconnect handling for idle connections only. A connection the server
    dropped while it was in use fails that one request, and SQLAlchemy then recycles every
    older connection of the pool, so the next requests reconnect."""

    def checkin(_dbapi: Any, record: ConnectionPoolEntry) -> None:
        record.info["checked_in"] = time.monotonic()

    def checkout(dbapi: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        since = record.info.get("checked_in")  # None: connected just now
        if since is None or time.monotonic() - since <= PING_AFTER_IDLE_S:
            return
        try:
            alive = engine.dialect.do_ping(dbapi)
        except engine.dialect.loaded_dbapi.Error:
            alive = False
        if not alive:
            # The pool discards this connection and checks out another (or a new one).
            raise exc.DisconnectionError("connection was dropped while idle")

    event.listen(engine, "checkin", checkin)
    event.listen(engine, "checkout", checkout)


def refresh_statistics(session: Session, *tables: str) -> None:
    """Let the query planner see rows just written in bulk (a ranking, a seed).

    Until autovacuum comes round (a minute or more), Postgres plans with the statistics of
    the empty table: the review listing then joined 10,000 images to 10,000 scores in a
    nested loop (8 s a page) instead of a hash join (30 ms). ANALYZE in the same transaction
    counts the transaction's own new rows.
    """
    for table in tables:
        session.execute(
            text(f"ANALYZE {session.get_bind().dialect.identifier_preparer.quote(table)}")
        )


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    if engine.dialect.name == "sqlite":
        _one_writer(factory)
    return factory


def _one_writer(factory: sessionmaker[Session]) -> None:
    """SQLite has one write lock, and its busy handler polls for it with sleeps of up to
    100 ms, first come not first served: under 16 concurrent relabels some waited seconds.
    Threads of this process queue on a lock of their own from their first write until the
    transaction ends, so the database lock is only contended across processes."""
    lock = threading.Lock()
    held = "sqlite_write_lock"

    def take(session: Session) -> None:
        if not session.info.get(held):
            lock.acquire()
            session.info[held] = True

    def before_flush(session: Session, _context: Any, _instances: Any) -> None:
        if session.new or session.dirty or session.deleted:
            take(session)

    def do_orm_execute(state: ORMExecuteState) -> None:
        # update(), delete() and insert() statements write without a flush.
        if state.is_update or state.is_delete or state.is_insert:
            take(state.session)

    def after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None and session.info.pop(held, False):
            lock.release()

    event.listen(factory, "before_flush", before_flush)
    event.listen(factory, "do_orm_execute", do_orm_execute)
    event.listen(factory, "after_transaction_end", after_transaction_end)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
