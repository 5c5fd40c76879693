"""Admin subcommands: ``voipgw users set-password`` and ``voipgw status``.

``users set-password`` provisions digest credentials for the registrar (the database
keeps H(A1) per algorithm, never the password). ``status`` is a live view of a running
gateway, read from its status listener (/readyz and /metrics), so it works against any
instance without touching its process.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from cdr.cli import load_config as load_db_config
from cdr.db import database, migrate

#: Metrics shown by ``voipgw status`` (without labels: summed over them).
STATUS_METRICS = (
    ("voipgw_active_calls", "calls in progress"),
    ("voipgw_calls_total", "calls ended"),
    ("voipgw_emergency_calls_total", "emergency calls"),
    # The registrar's shared table: the same count on every instance.
    ("voipgw_registered_bindings", "bindings (all instances)"),
    ("voipgw_call_auth_challenges_total", "call auth challenges"),
    ("voipgw_overload_shed_total", "calls/requests shed"),
    ("voipgw_parse_errors_total", "parse errors"),
    ("voipgw_cdr_queue_depth", "CDR queue"),
    ("voipgw_cdr_spool_bytes", "CDR spool bytes"),
    ("voipgw_cdr_spool_oldest_age_seconds", "oldest spooled CDR, s"),
    ("voipgw_cdr_partitions_ahead", "CDR partitions ahead"),
)


def register(subparsers: Any) -> None:
    users = subparsers.add_parser("users", help="registrar credentials")
    users_sub = users.add_subparsers(title="commands", metavar="COMMAND")
    p = users_sub.add_parser("set-password", help="set a user's digest password")
    p.add_argument("username")
    p.add_argument("--realm", required=True, help="the registrar's realm ([registrar] realm)")
    p.add_argument("--password", help="the password (asked for when omitted)")
    p.add_argument("--config", help="gateway TOML file ([database] is read)")
    p.add_argument("--database-url", help="PostgreSQL URL (overrides [database] url)")
    p.add_argument("--state-dir", help="state directory (overrides [database] state_dir)")
    p.set_defaults(func=_cmd_set_password)

    status = subparsers.add_parser("status", help="live view of a running gateway")
    status.add_argument("--url", default="http://127.0.0.1:9464", help="its status listener")
    status.add_argument("--watch", type=float, default=0, help="refresh every N seconds")
    status.set_defaults(func=_cmd_status)


def _cmd_set_password(args: argparse.Namespace) -> int:
    from gateway.registrar import BindingStore

    password = args.password or getpass.getpass(f"password for {args.username}: ")
    db_config, _ = load_db_config(args)

    async def run() -> None:
        async with database(db_config) as db:
            async with db.pool.acquire() as con:
                await migrate(con)
            await BindingStore(db.pool).set_password(args.username, args.realm, password)

    asyncio.run(run())
    print(f"password set for {args.username} in realm {args.realm}")
    return 0


def _fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric_totals(text: str) -> dict[str, float]:
    """Sums each metric family's samples over their labels (Prometheus text format)."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            number = float(value)
        except ValueError:
            continue
        if number == number:  # NaN (not yet measured) is left out
            totals[name] = totals.get(name, 0.0) + number
    return totals


def _cmd_status(args: argparse.Namespace) -> int:
    while True:
        try:
            ready_code, ready_body = _fetch(args.url + "/readyz")
            _, metrics = _fetch(args.url + "/metrics")
        except OSError as exc:
            print(f"voipgw status: cannot reach {args.url}: {exc}", file=sys.stderr)
            return 1
        checks = json.loads(ready_body).get("checks", {}) if ready_body.startswith("{") else {}
        state = "ready" if ready_code == 200 else "NOT READY"
        print(
            f"{args.url}: {state} "
            + " ".join(f"{k}={'ok' if v else 'FAIL'}" for k, v in checks.items())
        )
        totals = metric_totals(metrics)
        for name, label in STATUS_METRICS:
            if name in totals:
                print(f"  {label:28} {totals[name]:g}")
        if not args.watch:
            return 0 if ready_code == 200 else 1
        time.sleep(args.watch)
        print()
