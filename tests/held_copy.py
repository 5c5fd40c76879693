"""A COPY that PostgreSQL stops reading half-way, for tests of a lost connection.

asyncpg leaves a COPY waiting for ever once the socket is full and the connection is
lost (cdr.db.bounded_by_connection). To get there on purpose, each row inserted into a
table waits on an advisory lock the test holds: the backend stops reading at the first
row, and the rest of a large COPY fills the socket and pauses asyncpg's writing.
"""

from __future__ import annotations

import asyncio

import asyncpg

from tests.ops.harness import wait_until

#: The advisory lock the held rows wait on (take it with ``pg_advisory_lock``).
HELD_LOCK = 4475


async def hold_inserts(con: asyncpg.Connection, table: str, *, temporary: bool = False) -> None:
    """Makes every row inserted into ``table`` wait on :data:`HELD_LOCK`.

    Args:
        con: a connection; with ``temporary`` the one whose temporary ``table`` it is.
        table: the table.
        temporary: ``table`` is a temporary table (the trigger's function is too).
    """
    schema = "pg_temp." if temporary else ""
    await con.execute(
        f"CREATE FUNCTION {schema}held() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN PERFORM pg_advisory_xact_lock_shared({HELD_LOCK}); RETURN NEW; END $$"
    )
    await con.execute(
        f"CREATE TRIGGER held BEFORE INSERT ON {schema}{table} "
        f"FOR EACH ROW EXECUTE FUNCTION {schema}held()"
    )


async def copy_held(observer: asyncpg.Connection, backend: int) -> None:
    """Returns once ``backend``'s COPY waits on the lock and its buffers are full.

    Args:
        observer: another connection to the same server.
        backend: the process id of the copying session (``pg_backend_pid()``).
    """
    await wait_until(
        "the COPY to wait on the lock",
        lambda: observer.fetchval(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", backend
        ),
        lambda event: event == "Lock",
        10,
    )
    await asyncio.sleep(0.5)  # the rest of the COPY fills the buffers
