"""``voipgw sites ...``: import, export and check the routing data (sites file).

Contract with ``gateway/cli/main.py`` (same as :mod:`cdr.cli`): call :func:`register` with
the top-level ``add_subparsers()`` result. It adds::

    voipgw sites check FILE  [--format toml|csv] [--config PATH]
    voipgw sites import FILE [--format toml|csv] [--dry-run]   + database options
    voipgw sites export [--format toml|csv] [--output FILE]    + database options

Database options: ``--config PATH`` (only ``[database]`` is read), ``--database-url``,
``--state-dir``, as in ``voipgw db``. Every leaf parser sets ``func``; dispatch with
``sys.exit(args.func(args))``. Handlers return an exit status: 0 success, 1 invalid
sites file (every error printed to stderr as ``FILE:LINE: field: problem``) or a
database failure, 2 a bad config.

``--format`` defaults to the file extension (``.csv`` is CSV, anything else TOML).
``sites check`` warns of every site and declared location whose civic address lacks
what a centre needs (:mod:`routing.address_check`). ``sites check --config`` also
compares the centres' addresses with the gateway's PBX
side (``[upstream]``, ``[routing] default_next_hop``) and prints a warning to stderr,
naming both peers, for each centre whose address is not its own
(:func:`gateway.edge.peers.address_overlaps`); warnings do not change the exit status.
An import replaces all routing data in one transaction: nothing is half-imported.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

from cdr.db import DatabaseConfig, database, state_dir_of
from gateway.edge.peers import address_overlaps
from gateway.service.sitestore import export_sites, import_sites
from routing.address_check import PlaceProblems, sites_address_problems
from routing.configfields import ConfigError, Table
from routing.psap import InMemoryPsapDirectory
from routing.sites_export import dump_sites
from routing.sites_file import SitesData, SitesFileError, parse_sites

if TYPE_CHECKING:
    from gateway.config import GatewayConfig


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the ``sites`` subcommands.

    Args:
        subparsers: the top-level parser's ``add_subparsers()`` result.
    """
    sites = subparsers.add_parser("sites", help="routing data: customers, sites, centres")
    sub = sites.add_subparsers(dest="sites_command", required=True)
    p = sub.add_parser("check", help="validate a sites file without touching the database")
    p.add_argument("file", type=Path)
    p.add_argument("--format", choices=("toml", "csv"))
    p.add_argument(
        "--config",
        help="gateway TOML file: warn of centres sharing an address with its PBX side",
    )
    p.set_defaults(func=_cmd_check)
    p = sub.add_parser("import", help="replace all routing data with a sites file")
    p.add_argument("file", type=Path)
    p.add_argument("--format", choices=("toml", "csv"))
    p.add_argument("--dry-run", action="store_true", help="validate only")
    _database_options(p)
    p.set_defaults(func=_cmd_import)
    p = sub.add_parser("export", help="write the routing data as a sites file")
    p.add_argument("--format", choices=("toml", "csv"), default="toml")
    p.add_argument("--output", type=Path, help="file to write (default: stdout)")
    _database_options(p)
    p.set_defaults(func=_cmd_export)


def _database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="gateway TOML file (only [database] is read)")
    parser.add_argument("--database-url", help="PostgreSQL URL (overrides [database] url)")
    parser.add_argument("--state-dir", help="state directory (overrides [database] state_dir)")


def database_config(args: argparse.Namespace) -> DatabaseConfig:
    """Builds the ``[database]`` config from ``--config`` and the override options.

    Raises:
        ConfigError: a bad ``[database]`` field (named).
        OSError: the config file cannot be read.
    """
    data: dict[str, Any] = {}
    if args.config:
        with open(args.config, "rb") as f:
            try:
                data = tomllib.load(f)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(args.config, f"not valid TOML: {exc}") from None
    config = DatabaseConfig.from_table(Table(data).table("database"), state_dir=state_dir_of(data))
    if args.database_url:
        config = dataclasses.replace(config, url=args.database_url)
    if args.state_dir:
        config = dataclasses.replace(config, state_dir=args.state_dir)
    return config


def read_sites_file(path: Path, fmt: str | None) -> SitesData:
    """Reads and validates a sites file.

    Args:
        path: the file.
        fmt: "toml", "csv", or None to go by the extension.

    Returns:
        The data.

    Raises:
        SitesFileError: the file has errors (all listed).
        OSError, UnicodeDecodeError: the file cannot be read as UTF-8.
    """
    fmt = fmt or ("csv" if path.suffix.lower() == ".csv" else "toml")
    return parse_sites(path.read_text(encoding="utf-8"), fmt)


def _load(args: argparse.Namespace) -> SitesData | None:
    try:
        return read_sites_file(args.file, args.format)
    except SitesFileError as exc:
        for error in exc.errors:
            line = f"{error.line}:" if error.line is not None else ""
            print(f"{args.file}:{line} {error.field}: {error.problem}", file=sys.stderr)
        print(f"{args.file}: {len(exc.errors)} error(s), nothing imported", file=sys.stderr)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{args.file}: cannot read: {exc}", file=sys.stderr)
    return None


def _summary(data: SitesData) -> str:
    networks = sum(len(s.networks) for s in data.sites)
    return (
        f"{len(data.customers)} customers, {len(data.sites)} sites, {networks} networks,"
        f" {len(data.subscribers)} subscribers, {len(data.devices)} devices,"
        f" {len(data.centres)} emergency centres, {len(data.declared)} declared locations"
        + (f", {len(data.number_ranges)} number ranges" if data.number_ranges else "")
    )


def centre_address_warnings(data: SitesData, config: GatewayConfig | None) -> list[str]:
    """Centres whose address overlaps another centre's, or (with the gateway config)
    the PBX side's: the upstream, the default next hop, a trusted peer network.

    Args:
        data: the routing data.
        config: the gateway configuration, or None to compare the centres only.

    Returns:
        One warning per overlap, naming both peers.
    """
    upstream: list[tuple[str, str]] = []
    trusted: list[tuple[str, Any]] = []
    if config is not None:
        upstream.append((f"upstream {config.upstream.uri}", config.upstream.uri))
        routing = config.routing
        next_hop = getattr(routing, "default_next_hop", None)
        if isinstance(next_hop, str) and next_hop != config.upstream.uri:
            upstream.append((f"default next hop {next_hop}", next_hop))
        trusted = [("[upstream] trusted_peers", n) for n in config.upstream.trusted_peers]
    return address_overlaps(data.centres, upstream=upstream, trusted=trusted)


def address_warnings(data: SitesData) -> list[PlaceProblems]:
    """Sites and declared locations whose address lacks what a centre needs (street,
    house number, postal code, municipality) or names a municipality no centre serves."""
    psap = InMemoryPsapDirectory.build(data.centres)
    return sites_address_problems(data.sites, data.declared, psap.municipalities)


def _cmd_check(args: argparse.Namespace) -> int:
    data = _load(args)
    if data is None:
        return 1
    config = None
    if args.config:
        from gateway.config import load_config

        config = load_config(args.config)
    for warning in centre_address_warnings(data, config):
        print(f"{args.file}: warning: {warning}", file=sys.stderr)
    for place in address_warnings(data):
        print(f"{args.file}: warning: {place.describe()}", file=sys.stderr)
    print(f"{args.file}: ok: {_summary(data)}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    data = _load(args)
    if data is None:
        return 1
    if args.dry_run:
        print(f"{args.file}: ok (dry run): {_summary(data)}")
        return 0
    config = database_config(args)

    async def run() -> None:
        async with database(config) as db, db.pool.acquire() as con:
            await import_sites(con, data)

    try:
        asyncio.run(run())
    except asyncpg.UndefinedTableError:
        print("routing tables are missing: run 'voipgw db migrate' first", file=sys.stderr)
        return 1
    except asyncpg.PostgresError as exc:
        # A constraint the file validation did not catch; the transaction rolled back.
        print(f"import failed, nothing changed: {exc}", file=sys.stderr)
        return 1
    print(f"imported {_summary(data)}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    config = database_config(args)

    async def run() -> SitesData:
        async with database(config) as db, db.pool.acquire() as con:
            return await export_sites(con)

    try:
        data = asyncio.run(run())
    except asyncpg.UndefinedTableError:
        print("routing tables are missing: run 'voipgw db migrate' first", file=sys.stderr)
        return 1
    text = dump_sites(data, args.format)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    print(_summary(data), file=sys.stderr)
    return 0
