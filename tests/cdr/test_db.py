"""Database config, embedded server lifecycle and migrations."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg
import pytest

from cdr.config import CdrConfig
from cdr.db import (
    DatabaseConfig,
    EmbeddedPostgres,
    MigrationError,
    database,
    load_migrations,
    migrate,
)
from routing.configfields import ConfigError, Table


def test_database_config_from_table() -> None:
    config = DatabaseConfig.from_table(Table({"state_dir": "/var/lib/voipgw"}, "database"))
    assert config.url is None
    assert config.pgdata == Path("/var/lib/voipgw/pgdata")
    with pytest.raises(ConfigError, match=r"^database.pool_max_size: must be >= 1"):
        DatabaseConfig.from_table(Table({"pool_max_size": 0}, "database"))
    with pytest.raises(ConfigError, match=r"^database.urll: unknown field"):
        DatabaseConfig.from_table(Table({"urll": "x"}, "database"))


def test_cdr_config_from_table() -> None:
    config = CdrConfig.from_table(Table({"batch_size": 100, "retention_months": 24}, "cdr"))
    assert (config.batch_size, config.retention_months) == (100, 24)
    assert CdrConfig.from_table(Table({}, "cdr")) == CdrConfig()
    with pytest.raises(ConfigError, match=r"^cdr.partitions_ahead: must be >= 3"):
        CdrConfig.from_table(Table({"partitions_ahead": 1}, "cdr"))
    with pytest.raises(ConfigError, match=r"^cdr.batch_age: expected a number"):
        CdrConfig.from_table(Table({"batch_age": "fast"}, "cdr"))
    assert CdrConfig.from_table(Table({"insert_interval": 0}, "cdr")).insert_interval == 0.0
    with pytest.raises(ConfigError, match=r"^cdr.insert_interval: must be >= 0"):
        CdrConfig.from_table(Table({"insert_interval": -0.1}, "cdr"))
    assert CdrConfig().fsync_interval == 0.1
    assert CdrConfig.from_table(Table({"fsync_interval": 0}, "cdr")).fsync_interval == 0.0
    with pytest.raises(ConfigError, match=r"^cdr.fsync_interval: must be >= 0"):
        CdrConfig.from_table(Table({"fsync_interval": -1}, "cdr"))


def test_migration_files_are_ordered_and_named() -> None:
    names = [m.version for m in load_migrations()]
    assert names[0] == "0001_cdr.sql"
    assert names == sorted(names)


def test_duplicate_migration_number_rejected(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1")
    (tmp_path / "0001_b.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match="share number 0001"):
        load_migrations(tmp_path)


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_migrate_is_idempotent_and_concurrent(pg_dsn: str, tmp_path: Path) -> None:
    # The fixture database already has every migration; add two new files.
    migrations = tmp_path / "m"
    shutil.copytree(Path(__file__).parents[2] / "cdr" / "migrations", migrations)
    (migrations / "0150_sites.sql").write_text("CREATE TABLE t_sites (id int PRIMARY KEY);")
    (migrations / "0201_bindings.sql").write_text("INSERT INTO t_sites VALUES (1);")
    cons = [await asyncpg.connect(pg_dsn) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(c, migrations) for c in cons))
        applied = sorted(v for r in results for v in r)
        # Exactly one instance applied each new file, in order.
        assert applied == ["0150_sites.sql", "0201_bindings.sql"]
        assert await cons[0].fetchval("SELECT count(*) FROM t_sites") == 1
        assert await migrate(cons[0], migrations) == []
        (migrations / "0150_sites.sql").write_text("CREATE TABLE t_sites (id bigint);")
        with pytest.raises(MigrationError, match=r"0150_sites\.sql changed"):
            await migrate(cons[0], migrations)
    finally:
        for c in cons:
            await c.close()


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_failed_migration_rolls_back_only_itself(pg_dsn: str, tmp_path: Path) -> None:
    migrations = tmp_path / "m"
    shutil.copytree(Path(__file__).parents[2] / "cdr" / "migrations", migrations)
    (migrations / "0101_ok.sql").write_text("CREATE TABLE t_ok (id int);")
    (migrations / "0102_bad.sql").write_text("CREATE TABLE t_bad (id int); SELECT 1/0;")
    con = await asyncpg.connect(pg_dsn)
    try:
        with pytest.raises(asyncpg.DivisionByZeroError):
            await migrate(con, migrations)
        assert await con.fetchval("SELECT to_regclass('t_ok')") is not None
        assert await con.fetchval("SELECT to_regclass('t_bad')") is None
        versions = {r[0] for r in await con.fetch("SELECT version FROM schema_migrations")}
        assert "0101_ok.sql" in versions
        assert "0102_bad.sql" not in versions
    finally:
        await con.close()


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_embedded_lifecycle_start_reuse_stop(pg_state_dir: Path) -> None:
    config = DatabaseConfig(state_dir=str(pg_state_dir / "state"))
    async with database(config) as db:
        assert db.embedded is not None
        assert (pg_state_dir / "state" / "pgdata" / "PG_VERSION").exists()
        async with db.pool.acquire() as con:
            assert await con.fetchval("SELECT current_database()") == "voipgw"
            assert await migrate(con) == [m.version for m in load_migrations()]
        # A second user of the same state directory reuses the running server and
        # does not stop it when it leaves.
        async with database(config) as db2, db2.pool.acquire() as con:
            assert await con.fetchval("SELECT count(*) FROM schema_migrations") >= 1
        async with db.pool.acquire() as con:
            assert await con.fetchval("SELECT 1") == 1
        dsn = db.dsn
    # The owner stopped it on exit.
    with pytest.raises((OSError, asyncpg.PostgresError)):
        await asyncpg.connect(dsn, timeout=5)
    # Starting again finds the existing data directory (no initdb) and the data.
    async with database(config) as db, db.pool.acquire() as con:
        assert await con.fetchval("SELECT count(*) FROM schema_migrations") >= 1
    EmbeddedPostgres(config.pgdata).stop()  # stopping a stopped server is a no-op
