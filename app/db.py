"""Database engine, sessions and the declarative base shared by every domain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

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
from app.pg_pipeline import PipelinedConnection

POOL_TIMEOUT_SECONDS = 10
# How long a SQLite writer waits for another connection's write lock; the pragma says the
# same in milliseconds (a constant statement: SQL is never formatted).
SQLITE_BUSY_TIMEOUT_S = 30
_SQLITE_BUSY_TIMEOUT_PRAGMA = "PRAGMA busy_timeout=30000"
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
        cursor.execute(_SQLITE_BUSY_TIMEOUT_PRAGMA)
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
    hot path's single statements on the event loop: writes (``write_one``) and the serving
    path's reads (``read_one``)."""

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
        self.dialect = "sqlite" if settings.is_sqlite else "postgresql"
        self._writer: _SqliteWriter | _PostgresWriter
        self._reader: _SqliteWriter | _PostgresReader
        if settings.is_sqlite:
            self._writer = self._reader = _SqliteWriter(settings, write_bind)
        else:
            self._writer = _PostgresWriter(settings)
            self._reader = _PostgresReader(settings)

    async def write_one(self, statement: str, parameters: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run one statement of the analyzer's hot path and return its rows; durable once this
        returns.

        The statement writes at most one row (or only reads); it is written with ``?``
        placeholders and goes to the driver without SQLAlchemy. On SQLite it runs in a
        transaction of its own on the event loop's connection (see ``_SqliteWriter``). On
        PostgreSQL it joins the statements that arrive while another transaction commits, in
        one transaction, and returns once that COMMIT did (see ``_PostgresWriter``); should
        one of them fail, the others are run again one by one, each in its own transaction, so
        its failure is its own. Driver errors are raised as SQLAlchemy's exceptions, which the
        error handlers know (503 when the database is unreachable or the hot path's queue is
        full).
        """
        return await self._writer.run(statement, parameters)

    async def read_one(self, statement: str, parameters: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run one read of the serving path on the event loop and return its rows.

        No thread hop, no session, no ping: on SQLite on the hot path's own connection (in WAL
        mode a read never waits for the write lock), on PostgreSQL on a connection kept open for
        reads, as a pipeline segment of its own (``_PostgresReader``), never on a committing
        group's. Errors are
        raised as ``write_one`` raises them.
        """
        return await self._reader.read(statement, parameters)

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
        if self._reader is not self._writer:
            await self._reader.close()

    def dispose(self) -> None:
        self.engine.dispose()


class HotPath(Protocol):
    """What the analyzer's hot path may do: run one statement (``?`` placeholders) that writes
    at most one row, durably (``Database.write_one``), or one read (``Database.read_one``),
    and get its rows."""

    dialect: str

    async def write_one(
        self, statement: str, parameters: Sequence[Any]
    ) -> list[tuple[Any, ...]]: ...

    async def read_one(
        self, statement: str, parameters: Sequence[Any]
    ) -> list[tuple[Any, ...]]: ...


# The hot path's SQLite connection checkpoints the WAL off the event loop every so many commits.
_CHECKPOINT_EVERY = 2000
# While another connection holds SQLite's write lock, a hot-path write retries this often
# (doubling from the first wait to the longest), up to SQLITE_BUSY_TIMEOUT_S as other writers.
_BUSY_FIRST_WAIT_S = 0.0005
_BUSY_MAX_WAIT_S = 0.01


class _SqliteWriter:
    """One connection, used on the event loop itself: the process's single hot-path writer.

    A one-record transaction in WAL mode with ``synchronous=NORMAL`` writes a few pages into
    the OS cache (about 15 us here), less than handing the work to a thread; and a writer
    thread waits up to the interpreter's switch interval (5 ms) for the GIL after each driver
    call while the event loop is busy (measured: p90 77 ms at 8 connections). So the write runs
    right here, and since the event loop runs one thing at a time, hot-path writes never wait
    for the file lock among themselves, and there is nothing to group: each statement is its
    own transaction, so a failing one fails alone. The connection never blocks on the lock
    either (``busy_timeout=0``): when another writer holds it (a batch, a training run, another
    process), the write retries on the event loop, sleeping between tries (``_begin``), for as
    long as other writers would wait. The serving path's reads run on the same connection,
    outside any transaction (a WAL reader never waits for the lock). The WAL is checkpointed
    from a thread, not by a commit on the event loop (a checkpoint fsyncs twice); only the
    pages written meanwhile are copied on the event loop, so the WAL starts over.

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
        self._commits = 0
        self._checkpointing: asyncio.Task[None] | None = None

    async def run(self, statement: str, parameters: Sequence[Any]) -> list[tuple[Any, ...]]:
        driver = await self._begin()
        # Synchronous from BEGIN to COMMIT: the transaction never gives the event loop away.
        rows = self._commit(driver, statement, parameters)
        self._commits += 1
        if self._commits % _CHECKPOINT_EVERY == 0 and self._checkpointing is None:
            self._checkpointing = asyncio.create_task(self._checkpoint())
        return rows

    def _driver(self) -> sqlite3.Connection:
        """The hot path's connection, opened again after a failure closed it."""
        if self._connection is None:
            self._connection = self._engine.raw_connection()
        return self._connection.driver_connection

    async def _begin(self) -> sqlite3.Connection:
        """BEGIN IMMEDIATE on the hot path's connection, waiting for the write lock while
        another connection holds it, without holding the event loop.

        Waiting on another connection in a thread (SQLite's busy handler) cascaded: the
        thread took the lock and held it until the busy event loop resumed its post, so the
        next posts found the lock taken and went to threads too (measured: 7,469 of 26k
        posts at 8 connections, p99 243 ms). Here the lock is only ever taken between two
        steps of the event loop.
        """
        wait = _BUSY_FIRST_WAIT_S
        deadline = asyncio.get_running_loop().time() + SQLITE_BUSY_TIMEOUT_S
        while True:
            driver = self._driver()
            try:
                driver.execute("BEGIN IMMEDIATE")
                return driver
            except sqlite3.Error as exc:
                busy = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY
                if not busy or asyncio.get_running_loop().time() >= deadline:
                    raise self._failed(exc) from exc
            await asyncio.sleep(wait)
            wait = min(2 * wait, _BUSY_MAX_WAIT_S)

    async def read(self, statement: str, parameters: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            return self._driver().execute(statement, parameters).fetchall()
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc

    def _commit(
        self, driver: sqlite3.Connection, statement: str, parameters: Sequence[Any]
    ) -> list[tuple[Any, ...]]:
        try:
            rows = driver.execute(statement, parameters).fetchall()
            driver.execute("COMMIT")
        except BaseException as exc:
            if driver.in_transaction:
                driver.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._failed(exc) from exc
            raise
        return rows

    def _failed(self, exc: sqlite3.Error) -> DBAPIError:
        """SQLAlchemy's exception for a driver error; the next write opens a fresh connection."""
        if isinstance(exc, sqlite3.OperationalError) and self._connection is not None:
            self._connection.invalidate()
            self._connection = None
        return DBAPIError.instance(None, None, exc, sqlite3.Error)

    async def _checkpoint(self) -> None:
        """Copy the WAL into the database, and let the next write start the WAL over.

        A thread copies what was written up to its start (PASSIVE: blocking neither writers
        nor readers). Writes go on meanwhile, so the WAL is never wholly copied when a write
        begins, and only then does SQLite start it over: under steady posts it grew without
        bound (230 MB after 20k posts). So the few pages written during the copy are copied
        here, between two writes, on the hot path's own connection (a few milliseconds, once
        per ``_CHECKPOINT_EVERY`` commits).
        """
        try:
            await asyncio.to_thread(self._checkpoint_passive)
            if self._connection is not None:
                self._connection.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception:
            logger.exception("WAL checkpoint failed")
        finally:
            self._checkpointing = None

    def _checkpoint_passive(self) -> None:
        # On the driver's connection: SQLAlchemy's would first open a transaction, inside
        # which SQLite refuses to checkpoint.
        connection = self._pooled.raw_connection()
        try:
            connection.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            connection.close()

    async def close(self) -> None:
        if self._checkpointing is not None:
            await self._checkpointing  # it logs its own failure
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._engine.dispose()


# Transactions committing at once, each on its connection: while one waits for its COMMIT (the
# WAL flush), the next group collects, and PostgreSQL flushes both with one fsync when they meet.
GROUP_COMMITTERS = 2
# Statements per transaction at most: a group's statements travel in one network write.
MAX_GROUP = 256
# Statements waiting for a transaction at most; beyond, a post answers 503 at once.
MAX_QUEUED = 4096
# How long a new hot-path connection may take to open.
CONNECT_TIMEOUT_S = 5


@dataclass(eq=False)
class _Queued:
    statement: str
    parameters: Sequence[Any]
    future: asyncio.Future[list[tuple[Any, ...]]]


class _PostgresWriter:
    """Group commit: the statements that arrive while a transaction commits are run together
    in the next one, on connections in libpq's pipeline mode driven from the event loop (no
    thread, no SQLAlchemy, no psycopg cursor: see ``app.pg_pipeline``), and each caller gets
    its rows once that COMMIT has returned.

    PostgreSQL makes a commit durable by flushing the WAL to disk (``synchronous_commit`` stays
    on): one fsync, several milliseconds on a slow disk, however many rows the transaction
    holds. PostgreSQL already flushes together the commits of backends that wait at the same
    time (measured here at 8 connections: 0.33-0.38 WAL syncs per autocommit post), a group
    does so by construction (0.07-0.13) and costs the server one transaction instead of one per
    post. A group is one pipeline segment (its statements and a Sync, which commits them, in
    one network write), in the order of arrival: two statements about the same key behave
    exactly as if they ran one after the other.

    When a statement fails, PostgreSQL rolls the segment back, and the group's statements are
    run again one by one, each in a segment of its own (all in one write): the failing one
    answers its error, the others their rows. A deadlock with another transaction (two groups,
    or a group and a batch, holding some of the same new ``external_id`` each) is such a
    failure: PostgreSQL ends one transaction after ``deadlock_timeout`` (1 s), and its
    statements then go one by one, each holding one key.

    Up to ``GROUP_COMMITTERS`` transactions are in flight, each on a connection kept open
    (starting a PostgreSQL backend per post costs more than the post). Nothing is pinged before
    use: a connection that died is found by its group, which answers 503 like any outage; the
    next group opens a new connection, so an unreachable server is reported at once. A caller
    waits ``POOL_TIMEOUT_SECONDS`` at most (then 503; a statement already sent may still
    commit, as with any timeout), and with ``MAX_QUEUED`` statements waiting, a new one is
    refused with 503 at once.
    """

    def __init__(self, settings: Settings) -> None:
        self._conninfo = _conninfo(settings)
        self._queue: deque[_Queued] = deque()
        self._committing = 0  # committer tasks running
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle: list[PipelinedConnection] = []

    async def run(self, statement: str, parameters: Sequence[Any]) -> list[tuple[Any, ...]]:
        if len(self._queue) >= MAX_QUEUED:
            raise PoolTimeoutError(f"{MAX_QUEUED} hot-path statements are waiting already")
        loop = asyncio.get_running_loop()
        queued = _Queued(statement, parameters, loop.create_future())
        self._queue.append(queued)
        if self._committing < GROUP_COMMITTERS:
            self._committing += 1
            task = asyncio.create_task(self._commit_queue())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # A timer, not asyncio.timeout and shield (a few us less per post). A caller that goes
        # away cancels its future only: its statement's outcome is left to its group.
        timer = loop.call_later(POOL_TIMEOUT_SECONDS, self._expire, queued)
        try:
            return await queued.future
        finally:
            timer.cancel()

    def _expire(self, queued: _Queued) -> None:
        if queued.future.done():
            return
        with contextlib.suppress(ValueError):
            self._queue.remove(queued)  # not sent yet: it never will be
        queued.future.set_exception(
            PoolTimeoutError(f"no hot-path transaction committed within {POOL_TIMEOUT_SECONDS} s")
        )

    async def _commit_queue(self) -> None:
        """Commit groups until the queue is empty (a group collects while this one commits)."""
        try:
            while self._queue:
                count = min(len(self._queue), MAX_GROUP)
                group = [self._queue.popleft() for _ in range(count)]
                await self._commit_group(group)
        finally:
            self._committing -= 1

    async def _commit_group(self, group: list[_Queued]) -> None:
        try:
            connection = self._idle.pop() if self._idle else await _connect(self._conninfo)
        except DBAPIError as exc:
            _fail(group, exc)
            return
        try:
            await _commit_on(connection, group)
        except psycopg.Error as exc:  # the connection failed: the outcome is unknown
            await _close_quietly(connection)
            _fail(group, _wrapped(exc, connection))
            return
        except BaseException:  # cancelled by close(): the outcome is unknown
            await _close_quietly(connection)
            _fail(group, _stopped())
            raise
        self._idle.append(connection)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        _fail(list(self._queue), _stopped())
        self._queue.clear()
        idle, self._idle = self._idle, []
        for connection in idle:
            await _close_quietly(connection)


# Reads in flight at once on the serving path; beyond, a read waits for a connection.
READERS = 4


class _PostgresReader:
    """Reads on pipelined connections of their own, kept open: one round trip per read (a
    segment of one statement), no thread, no ping (a connection that died is found by its
    read, which answers 503 like any outage, and the next read opens a new one). At most
    ``READERS`` at once; beyond, a read waits up to ``POOL_TIMEOUT_SECONDS``."""

    def __init__(self, settings: Settings) -> None:
        self._conninfo = _conninfo(settings)
        self._slots: asyncio.Semaphore | None = None  # made in the event loop it belongs to
        self._idle: list[PipelinedConnection] = []

    async def read(self, statement: str, parameters: Sequence[Any]) -> list[tuple[Any, ...]]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(READERS)
        try:
            async with asyncio.timeout(POOL_TIMEOUT_SECONDS):
                await self._slots.acquire()
        except TimeoutError:
            raise PoolTimeoutError(
                f"no read connection free within {POOL_TIMEOUT_SECONDS} s"
            ) from None
        try:
            connection = self._idle.pop() if self._idle else await _connect(self._conninfo)
            try:
                [[answer]] = await connection.exchange([[(statement, parameters)]])
            except BaseException as exc:
                await _close_quietly(connection)
                if isinstance(exc, psycopg.Error):
                    raise _wrapped(exc, connection) from exc
                raise
            self._idle.append(connection)
            if isinstance(answer, psycopg.Error):
                raise _wrapped(answer, connection) from answer
            return answer
        finally:
            self._slots.release()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await _close_quietly(connection)


def _conninfo(settings: Settings) -> str:
    url = make_url(settings.database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


async def _connect(conninfo: str) -> PipelinedConnection:
    try:
        return await PipelinedConnection.connect(conninfo, timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as exc:
        raise DBAPIError.instance(
            None, None, exc, psycopg.Error, connection_invalidated=True
        ) from exc


async def _commit_on(connection: PipelinedConnection, group: list[_Queued]) -> None:
    """Commit the group in one transaction, or else each statement in its own; raises
    ``psycopg.Error`` when the connection fails (its statements' outcome is then unknown)."""
    statements = [(queued.statement, queued.parameters) for queued in group]
    [answers] = await connection.exchange([statements])
    if len(group) > 1 and any(isinstance(answer, psycopg.Error) for answer in answers):
        # The segment was rolled back: each statement again, in a transaction of its own.
        answers = [answer for [answer] in await connection.exchange([[s] for s in statements])]
    for queued, answer in zip(group, answers, strict=True):
        if queued.future.done():  # its caller was cancelled
            continue
        if isinstance(answer, psycopg.Error):
            queued.future.set_exception(_wrapped(answer, connection))
        else:
            queued.future.set_result(answer)


def _wrapped(exc: psycopg.Error, connection: PipelinedConnection) -> DBAPIError:
    return DBAPIError.instance(
        None, None, exc, psycopg.Error, connection_invalidated=connection.broken
    )


def _stopped() -> PoolTimeoutError:
    return PoolTimeoutError("the hot path's writer stopped")


def _fail(group: list[_Queued], exc: BaseException) -> None:
    for queued in group:
        if not queued.future.done():
            queued.future.set_exception(exc)


async def _close_quietly(connection: PipelinedConnection) -> None:
    with contextlib.suppress(Exception):
        await connection.close()
