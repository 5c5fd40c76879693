"""``voipgw db ...`` and ``voipgw cdr ...`` subcommands.

Contract with ``gateway/cli/main.py``: call :func:`register` with the top-level
``add_subparsers()`` result. It adds ``db`` (``migrate``, ``maintain``) and ``cdr``
(``itemize``, ``subject-access``, ``replay-spool``). Every leaf parser sets ``func``; dispatch with
``sys.exit(args.func(args))``. Handlers take the parsed ``argparse.Namespace`` and return
an exit status. They read the config themselves from the leaf options:

* ``--config PATH``: the gateway TOML; only its ``[database]`` and ``[cdr]`` tables are
  read (through :mod:`routing.configfields`, so a bad field is named).
* ``--database-url URL`` / ``--state-dir DIR``: override ``[database]`` ``url`` /
  ``state_dir`` (handy without a config file).

Without ``url`` the embedded server under ``<state_dir>/pgdata`` is used: reused if the
gateway is running, otherwise started for the command and stopped afterwards.

``python -m cdr.cli`` runs these commands standalone.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cdr.config import CdrConfig
from cdr.db import DatabaseConfig, database, migrate, state_dir_of
from cdr.export import in_progress, itemize, subject_access
from cdr.maintenance import maintain
from cdr.partitions import Month
from cdr.spool import SpoolError, worker_spool_dirs
from cdr.writer import SpoolReplay, replay_spool
from routing.configfields import ConfigError, Table


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the ``db`` and ``cdr`` subcommands.

    Args:
        subparsers: the top-level parser's ``add_subparsers()`` result.
    """
    db = subparsers.add_parser("db", help="database schema and partitions")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    p = db_sub.add_parser("migrate", help="apply pending migrations")
    _common(p)
    p.set_defaults(func=_cmd_migrate)
    p = db_sub.add_parser("maintain", help="create partitions ahead, retire expired months")
    _common(p)
    p.add_argument("--now", type=_timestamp, help="pretend time (ISO 8601), for testing")
    p.set_defaults(func=_cmd_maintain)

    cdr = subparsers.add_parser("cdr", help="call detail record exports")
    cdr_sub = cdr.add_subparsers(dest="cdr_command", required=True)
    p = cdr_sub.add_parser(
        "itemize",
        help="one customer's finished calls of one month as CSV (with why each ended)",
    )
    _common(p)
    p.add_argument("--customer", required=True)
    p.add_argument("--month", required=True, type=_month, help="YYYY-MM (UTC)")
    p.set_defaults(func=_cmd_itemize)
    p = cdr_sub.add_parser(
        "subject-access", help="every record naming a number (caller, callee or PAI) as CSV"
    )
    _common(p)
    p.add_argument("--number", required=True, help="as stored, e.g. +358401234567")
    p.set_defaults(func=_cmd_subject_access)
    p = cdr_sub.add_parser(
        "replay-spool",
        help="insert the uncommitted records of a CDR spool (a dead instance's) and exit",
    )
    _common(p)
    p.add_argument("--spool-dir", required=True, help="the spool directory to replay")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the database")
    p.set_defaults(func=_cmd_replay_spool)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="gateway TOML file ([database] and [cdr] are read)")
    parser.add_argument("--database-url", help="PostgreSQL URL (overrides [database] url)")
    parser.add_argument("--state-dir", help="state directory (overrides [database] state_dir)")


def _month(text: str) -> Month:
    try:
        return Month.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _timestamp(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def load_config(args: argparse.Namespace) -> tuple[DatabaseConfig, CdrConfig]:
    """Builds the configs from ``--config`` and the override options.

    Args:
        args: parsed options of a leaf command.

    Returns:
        ``(database config, cdr config)``.

    Raises:
        ConfigError: the file has a bad ``[database]`` or ``[cdr]`` field.
        OSError: the file cannot be read.
    """
    data: dict[str, Any] = {}
    if args.config:
        with open(args.config, "rb") as f:
            try:
                data = tomllib.load(f)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(args.config, f"not valid TOML: {exc}") from None
    top = Table(data)
    state_dir = state_dir_of(data)
    db_config = DatabaseConfig.from_table(top.table("database"), state_dir=state_dir)
    cdr_config = CdrConfig.from_table(top.table("cdr"), state_dir=state_dir)
    if args.database_url:
        db_config = dataclasses.replace(db_config, url=args.database_url)
    if args.state_dir:
        db_config = dataclasses.replace(db_config, state_dir=args.state_dir)
    return db_config, cdr_config


def _cmd_migrate(args: argparse.Namespace) -> int:
    db_config, _ = load_config(args)

    async def run() -> list[str]:
        async with database(db_config) as db, db.pool.acquire() as con:
            return await migrate(con)

    applied = asyncio.run(run())
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return 0


def _cmd_maintain(args: argparse.Namespace) -> int:
    db_config, cdr_config = load_config(args)
    now = args.now or dt.datetime.now(dt.UTC)

    async def run() -> str:
        async with database(db_config) as db:
            report = await maintain(
                db.pool, now, cdr_config.retention_months, cdr_config.partitions_ahead
            )
        if report.skipped:
            return "skipped: another instance is maintaining"
        lines = [f"created {name}" for name in report.created]
        lines += [f"retired {name} ({rows} rows rolled up)" for name, rows in report.retired]
        return "\n".join(lines) or "nothing to do"

    print(asyncio.run(run()))
    return 0


def _cmd_itemize(args: argparse.Namespace) -> int:
    db_config, _ = load_config(args)

    async def run() -> tuple[int, int]:
        async with database(db_config) as db, db.pool.acquire() as con:
            count = await itemize(con, args.customer, args.month, sys.stdout)
            return count, await in_progress(con, args.customer, args.month)

    count, up = asyncio.run(run())
    note = f"; {up} still in progress, not itemized" if up else ""
    print(f"{count} calls{note}", file=sys.stderr)
    return 0


def _cmd_subject_access(args: argparse.Namespace) -> int:
    db_config, _ = load_config(args)

    async def run() -> int:
        async with database(db_config) as db, db.pool.acquire() as con:
            return await subject_access(con, args.number, sys.stdout)

    count = asyncio.run(run())
    print(f"{count} records", file=sys.stderr)
    return 0


def _cmd_replay_spool(args: argparse.Namespace) -> int:
    """Replays a spool directory as the gateway does on start (same writer, same
    idempotent insert: a record already in the table stays one row), without
    closing anybody's calls in progress (no instance name). The spools of its worker
    processes (``w1``, ``w2`` ... under it, ``[server] workers``) are replayed too: the
    configured spool directory of a gateway with workers holds one spool per worker."""
    db_config, cdr_config = load_config(args)
    # The writer's shutdown drains everything pending within shutdown_timeout.
    cdr_config = dataclasses.replace(cdr_config, shutdown_timeout=args.timeout)
    root = Path(args.spool_dir)
    spools = [root, *(path for _, path in worker_spool_dirs(root))]

    async def run() -> list[SpoolReplay]:
        async with database(db_config) as db:
            return [await replay_spool(db.pool, cdr_config, spool) for spool in spools]

    try:
        replays = asyncio.run(run())
    except (OSError, SpoolError) as exc:
        print(f"cannot replay {args.spool_dir}: {exc}", file=sys.stderr)
        return 1
    committed = sum(replay.committed for replay in replays)
    duplicate = sum(replay.duplicate for replay in replays)
    left = sum(replay.left for replay in replays)
    print(f"{committed} rows inserted, {duplicate} already present; {left} bytes left")
    for spool, replay in zip(spools[1:], replays[1:], strict=True):
        print(
            f"  {spool.name}: {replay.committed} rows inserted,"
            f" {replay.duplicate} already present; {replay.left} bytes left"
        )
    if left:
        error = next((replay.error for replay in reversed(replays) if replay.error), None)
        print(f"not all replayed (last error: {error}); run it again", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``db``/``cdr`` commands standalone (``python -m cdr.cli``).

    Args:
        argv: arguments without the program name (``sys.argv[1:]`` when omitted).

    Returns:
        Exit status.
    """
    parser = argparse.ArgumentParser(prog="voipgw")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    sys.exit(main())
