"""One PostgreSQL connection in libpq's pipeline mode, driven from the event loop: the hot
path's transport (``app.db``).

psycopg's async connection costs about 120 us of CPU per statement here (its generators,
futures, cursors and per-result column objects): 165 us per post in all, against 40 us through
its libpq layer (``psycopg.pq``), which is what this module uses. Measured by 8 coroutines
posting 20k records each way on one event loop.

A *segment* is a list of statements followed by a Sync message. PostgreSQL runs a segment's
statements in one implicit transaction and commits it at the Sync (or rolls it back when one of
them failed, skipping the rest): a segment is a transaction in one network write, and several
segments may travel in the same write, each committing on its own. Statements are prepared
once per connection (named ``h0``, ``h1``...), their parameters sent as text; results come back
as text and are read by psycopg's own loaders, so rows hold the Python types psycopg would give.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import pq
from psycopg.errors import error_from_result

# Statements prepared per connection at most (a failed prepare counts); beyond, a statement goes
# unnamed (parsed each time).
MAX_PREPARED = 64
_SESSION = "SET TIME ZONE 'UTC'; SET DateStyle TO 'ISO'"
_OK = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK)
# After a Sync no transaction may be left open (a statement that began one would hold it).
_IN_TRANSACTION = (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR)


def numbered(statement: str) -> bytes:
    """``?`` placeholders, as the hot path writes them, become PostgreSQL's ``$1, $2...``."""
    parts = statement.split("?")
    text = parts[0] + "".join(f"${index}{part}" for index, part in enumerate(parts[1:], 1))
    return text.encode()


def _text(value: Any) -> bytes | None:
    """A parameter in PostgreSQL's text format (the server infers its type from the statement)."""
    if value is None:
        return None
    if value is True:
        return b"t"
    if value is False:
        return b"f"
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int | float):
        return repr(value).encode()  # the shortest text that reads back as the same float
    raise TypeError(f"a hot-path parameter is str, int, float, bool or None, not {type(value)}")


Rows = list[tuple[Any, ...]]


class PipelinedConnection:
    """A connection kept open for the hot path; ``exchange`` runs segments of statements.

    Not safe for two coroutines at once: its owner runs one ``exchange`` at a time. After an
    exchange raised, the connection is unusable and must be closed.
    """

    def __init__(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self._connection = connection
        self._pgconn = connection.pgconn
        self._encoding = connection.info.encoding
        self._names: dict[str, bytes] = {}  # statement -> prepared name
        self._prepares = 0  # names given so far: a name is never given twice
        self._loaders: dict[int, Any] = {}  # type oid -> psycopg text loader
        self._loop = asyncio.get_running_loop()

    @classmethod
    async def connect(cls, conninfo: str, *, timeout: float) -> PipelinedConnection:
        connection = await psycopg.AsyncConnection.connect(
            conninfo, autocommit=True, connect_timeout=max(1, round(timeout))
        )
        try:
            await connection.execute(_SESSION)  # timestamps read back as psycopg reads them
            connection.pgconn.nonblocking = 1
            connection.pgconn.enter_pipeline_mode()
        except BaseException:
            await connection.close()
            raise
        return cls(connection)

    @property
    def broken(self) -> bool:
        return self._pgconn.status != pq.ConnStatus.OK

    async def close(self) -> None:
        await self._connection.close()

    async def exchange(
        self, segments: Sequence[Sequence[tuple[str, Sequence[Any]]]]
    ) -> list[list[Rows | psycopg.Error]]:
        """Send every segment in one write and read their results: per segment, per statement,
        its rows or the error it met. In a segment where a statement failed, the statements
        after it were skipped and answer the same error, and nothing of the segment is
        committed. Raises ``psycopg.OperationalError`` when the connection fails."""
        pgconn = self._pgconn
        expected: list[list[str | None]] = []  # per segment: per result, its statement or None
        for segment in segments:
            kinds: list[str | None] = []
            for statement, parameters in segment:
                name = self._names.get(statement)
                if name is None and self._prepares < MAX_PREPARED:
                    name = b"h%d" % self._prepares
                    self._prepares += 1
                    pgconn.send_prepare(name, numbered(statement))
                    self._names[statement] = name
                    kinds.append(statement)  # the prepare's result
                values = [_text(value) for value in parameters]
                if name is None:
                    pgconn.send_query_params(numbered(statement), values)
                else:
                    pgconn.send_query_prepared(name, values)
                kinds.append(None)
            pgconn.pipeline_sync()
            expected.append(kinds)
        await self._flush()
        return [await self._read_segment(kinds) for kinds in expected]

    async def _read_segment(self, kinds: list[str | None]) -> list[Rows | psycopg.Error]:
        answers: list[Rows | psycopg.Error] = []
        failure: psycopg.Error | None = None  # the segment's first error
        position = 0
        while True:
            result = await self._next_result()
            status = result.status
            if status == pq.ExecStatus.PIPELINE_SYNC:
                break
            if position >= len(kinds):
                raise psycopg.OperationalError("the hot path's pipeline is out of step")
            prepared = kinds[position]
            position += 1
            if status in _OK:
                if prepared is None:
                    answers.append(self._rows(result))
                continue
            error = failure
            if status != pq.ExecStatus.PIPELINE_ABORTED or error is None:
                error = error_from_result(result, encoding=self._encoding)
            if failure is None:
                failure = error
            if prepared is not None:
                self._names.pop(prepared, None)  # prepared again next time
            else:
                answers.append(error)
        if position != len(kinds) or self._pgconn.transaction_status in _IN_TRANSACTION:
            raise psycopg.OperationalError("the hot path's pipeline is out of step")
        return answers

    async def _next_result(self) -> pq.abc.PGresult:
        """The next result of the pipeline, waiting for the server as long as it takes."""
        pgconn = self._pgconn
        ends = 0  # results in a row that were the end of a statement's results
        while True:
            if pgconn.is_busy():
                await self._ready(write=False)
                pgconn.consume_input()
                continue
            result = pgconn.get_result()
            if result is not None:
                return result
            ends += 1
            if ends > 1:  # nothing more is coming: a result is missing
                raise psycopg.OperationalError("the hot path's pipeline is out of step")

    async def _flush(self) -> None:
        pgconn = self._pgconn
        while pgconn.flush():
            # The server may be answering while it reads: take its answers in so neither waits.
            await self._ready(write=True)
            pgconn.consume_input()

    async def _ready(self, *, write: bool) -> None:
        """Until the socket is readable (or, with ``write``, readable or writable)."""
        descriptor = self._pgconn.socket
        ready = self._loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        self._loop.add_reader(descriptor, wake)
        if write:
            self._loop.add_writer(descriptor, wake)
        try:
            await ready
        finally:
            self._loop.remove_reader(descriptor)
            if write:
                self._loop.remove_writer(descriptor)

    def _rows(self, result: pq.abc.PGresult) -> Rows:
        fields = result.nfields
        if not fields:
            return []
        loaders = [self._loader(result.ftype(column)) for column in range(fields)]
        get_value = result.get_value
        return [
            tuple(
                None if (value := get_value(row, column)) is None else loaders[column](value)
                for column in range(fields)
            )
            for row in range(result.ntuples)
        ]

    def _loader(self, oid: int) -> Any:
        load = self._loaders.get(oid)
        if load is None:
            loader_class = self._connection.adapters.get_loader(oid, pq.Format.TEXT)
            load = self._loaders[oid] = loader_class(oid, self._connection).load
        return load
