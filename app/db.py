"""Database engine, sessions and the declarative base shared by every domain."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import psycopg
from sqlalchemy import (
    BigInteger,
    DateTime,
    Engine,
    Integer,
    MetaData,
    create_engine,
    event,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

from app.config import Settings

T = TypeVar("T")
POOL_TIMEOUT_SECONDS = 10
logger = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY, not a BIGINT one.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite stores it naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def create_db_engine(settings: Settings) -> Engine:
    """Build the engine; on SQLite, WAL and immediate write transactions avoid lock errors."""
    if settings.is_sqlite:
        settings.ensure_sqlite_directory()
        engine = create_engine(
            settings.database_url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_pre_ping=True,
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(
        settings.database_url,
        pool_pre_ping=True,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        pool_timeout=10,
        connect_args={"connect_timeout": 5},
    )


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from pysqlite so BEGIN IMMEDIATE can be issued.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        # Checkpoint every ~40 MB of WAL instead of 4 MB: index pages rewritten by consecutive
        # batches are copied back once, not per batch (+~10% batch ingestion, measured).
        cursor.execute("PRAGMA wal_autocheckpoint=10000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get("sqlite_immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    """The engine, the two session factories (reads, and writes: immediate on SQLite), and the
    hot path's single-statement writes (``write_one``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = create_db_engine(settings)
        write_bind = (
            self.engine.execution_options(sqlite_immediate=True)
            if settings.is_sqlite
            else self.engine
        )
        self.read_sessions = sessionmaker(bind=self.engine, expire_on_commit=False)
        self.write_sessions = sessionmaker(bind=write_bind, expire_on_commit=False)
        self._writer: _SqliteWriter | _PostgresWriter = (
            _SqliteWriter(settings, write_bind) if settings.is_sqlite else _PostgresWriter(settings)
        )

    async def write_one(self, work: Callable[[Statements], Awaitable[T]]) -> T:
        """Run ``work``, one small write, on the event loop; durable once this returns.

        ``work`` talks to the driver through ``Statements``, without SQLAlchemy: this is the
        analyzer's hot path. On SQLite it runs in one transaction on the event loop's own
        connection (see ``_SqliteWriter``). On PostgreSQL it runs in autocommit (see
        ``_PostgresWriter``), so its first statement must be the whole write (statements after
        it may read): one round trip. Driver errors are raised as SQLAlchemy's exceptions,
        which the error handlers know (503 when the database is unreachable).
        """
        return await self._writer.run(work)

    @contextmanager
    def session_scope(self, *, write: bool = True) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any error."""
        factory = self.write_sessions if write else self.read_sessions
        with factory() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    async def close_writer(self) -> None:
        """Close the hot path's connections (they belong to the event loop)."""
        await self._writer.close()

    def dispose(self) -> None:
        self.engine.dispose()


class Statements(Protocol):
    """What a hot-path write may do: run a statement (``?`` placeholders) and get its rows."""

    dialect: str

    async def fetch(self, statement: str, parameters: Sequence[Any]) -> list[tuple[Any, ...]]: ...


# The hot path's SQLite connection checkpoints the WAL off the event loop every so many commits.
_CHECKPOINT_EVERY = 2000


class _SqliteStatements:
    dialect = "sqlite"

    def __init__(self, driver: sqlite3.Connection) -> None:
        self._driver = driver

    async def fetch(self, statement: str, parameters: Sequence[Any]) -> list[tuple[Any, ...]]:
        # Synchronous: it never gives the event loop away inside the transaction.
        return self._driver.execute(statement, parameters).fetchall()


class _SqliteWriter:
    """One connection, used on the event loop itself: the process's single hot-path writer.

    A one-record transaction in WAL mode with ``synchronous=NORMAL`` writes a few pages into
    the OS cache (about 15 us here), less than handing the work to a thread; and a writer
    thread waits up to the interpreter's switch interval (5 ms) for the GIL after each driver
    call while the event loop is busy (measured: p90 77 ms at 8 connections). So the write runs
    right here, and since the event loop runs one thing at a time, hot-path writes never wait
    for the file lock among themselves. The connection never waits for the lock either
    (``busy_timeout=0``): when another writer holds it (a batch, a training run, another
    process), a worker thread waits for it on a pooled connection, as any other writer does,
    and the write then runs on that connection. The WAL is checkpointed from a thread, not by
    a commit on the event loop (a checkpoint fsyncs twice).

    Durability: WAL with ``synchronous=NORMAL``. A write is acknowledged after its COMMIT, so it
    survives a crash of the process; a power loss or an OS crash may lose the last commits
    (never the database's consistency), because NORMAL syncs the WAL at checkpoints rather
    than at each commit. ``synchronous=FULL`` would add an fsync per post: 5.7 ms on this
    machine's disk.
    """

    def __init__(self, settings: Settings, pooled: Engine) -> None:
        self._pooled = pooled
        self._engine = create_engine(
            settings.database_url, connect_args={"check_same_thread": False}, poolclass=NullPool
        )
        _configure_sqlite(self._engine)

        @event.listens_for(self._engine, "connect")
        def _never_wait(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("PRAGMA busy_timeout=0")
            dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")

        self._connection: Any = None  # the pool's wrapper of the driver's connection
        # Held while the transaction is open, should a ``work`` ever give the loop away.
        self._lock = asyncio.Lock()
        self._commits = 0
        self._checkpointing = False

    async def run(self, work: Callable[[Statements], Awaitable[T]]) -> T:
        async with self._lock:
            if self._connection is None:
                self._connection = self._engine.raw_connection()
            driver = self._connection.driver_connection
            try:
                driver.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_BUSY:
                    raise self._failed(exc) from exc
                driver = None
            if driver is not None:
                result = await self._commit(driver, work)
                self._commits += 1
                if self._commits % _CHECKPOINT_EVERY == 0 and not self._checkpointing:
                    self._checkpointing = True
                    asyncio.get_running_loop().run_in_executor(None, self._checkpoint)
                return result
        # Another connection holds the write lock: wait for it off the event loop.
        pooled = await asyncio.to_thread(self._begin_waiting)
        try:
            return await self._commit(pooled.driver_connection, work)
        finally:
            pooled.close()

    async def _commit(
        self, driver: sqlite3.Connection, work: Callable[[Statements], Awaitable[T]]
    ) -> T:
        try:
            result = await work(_SqliteStatements(driver))
            driver.execute("COMMIT")
        except BaseException as exc:
            if driver.in_transaction:
                driver.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._failed(exc) from exc
            raise
        return result

    def _begin_waiting(self) -> Any:
        pooled = self._pooled.raw_connection()
        try:
            pooled.driver_connection.execute("BEGIN IMMEDIATE")  # waits up to busy_timeout
        except sqlite3.Error as exc:
            pooled.close()
            raise self._failed(exc) from exc
        return pooled

    def _failed(self, exc: sqlite3.Error) -> DBAPIError:
        """SQLAlchemy's exception for a driver error; the next write opens a fresh connection."""
        if isinstance(exc, sqlite3.OperationalError) and self._connection is not None:
            self._connection.invalidate()
            self._connection = None
        return DBAPIError.instance(None, None, exc, sqlite3.Error)

    def _checkpoint(self) -> None:
        # PASSIVE: copies what it can without blocking writers or readers. On the driver's
        # connection: SQLAlchemy's would first open a transaction, inside which SQLite refuses.
        try:
            connection = self._pooled.raw_connection()
            try:
                connection.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                connection.close()
        except Exception:
            logger.exception("WAL checkpoint failed")
        finally:
            self._checkpointing = False

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._engine.dispose()


@functools.lru_cache(maxsize=64)
def _pyformat(statement: str) -> str:
    """Placeholders are written SQLite's way; psycopg wants %s."""
    return statement.replace("?", "%s")


class _PostgresStatements:
    dialect = "postgresql"

    def __init__(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self._connection = connection

    async def fetch(self, statement: str, parameters: Sequence[Any]) -> list[tuple[Any, ...]]:
        cursor = await self._connection.execute(_pyformat(statement), parameters)
        return await cursor.fetchall()


class _PostgresWriter:
    """Autocommit statements through psycopg's async driver, on connections of their own: one
    round trip per post, no thread, no SQLAlchemy (which costs ~1 ms of CPU per post here).

    At most ``2 * database_pool_size`` connections (what the main engine may open), all kept
    open: starting a PostgreSQL backend per post costs more than the post. Beyond them, posts
    wait in line, up to ``POOL_TIMEOUT_SECONDS``. There is no ping before use: a connection
    that died is found by its statement and closed, the post answers 503 like any outage, and
    a new connection is opened on demand, so an unreachable server is reported at once.
    (psycopg_pool instead reconnects in the background with back-off while requests wait.)
    """

    def __init__(self, settings: Settings) -> None:
        url = make_url(settings.database_url).set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._size = 2 * settings.database_pool_size
        self._slots: asyncio.Semaphore | None = None  # made in the event loop it belongs to
        self._idle: list[psycopg.AsyncConnection[Any]] = []

    async def run(self, work: Callable[[Statements], Awaitable[T]]) -> T:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._size)
        try:
            async with asyncio.timeout(POOL_TIMEOUT_SECONDS):
                await self._slots.acquire()
        except TimeoutError:
            raise PoolTimeoutError(
                f"no hot-path connection free within {POOL_TIMEOUT_SECONDS} s"
            ) from None
        try:
            connection = self._idle.pop() if self._idle else await self._connect()
            try:
                result = await work(_PostgresStatements(connection))
            except BaseException as exc:
                await _close_quietly(connection)
                if isinstance(exc, psycopg.Error):
                    raise DBAPIError.instance(
                        None, None, exc, psycopg.Error, connection_invalidated=connection.broken
                    ) from exc
                raise
            self._idle.append(connection)
            return result
        finally:
            self._slots.release()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        try:
            return await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, connect_timeout=5
            )
        except psycopg.Error as exc:
            raise DBAPIError.instance(
                None, None, exc, psycopg.Error, connection_invalidated=True
            ) from exc

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await _close_quietly(connection)


async def _close_quietly(connection: psycopg.AsyncConnection[Any]) -> None:
    with contextlib.suppress(Exception):
        await connection.close()
