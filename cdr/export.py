"""Exports promised by the privacy policy: invoice itemization and data-subject access.

Both write CSV (RFC 4180, header row, UTC ISO 8601 timestamps) to a text stream.
"""

from __future__ import annotations

import csv
import datetime as dt
from typing import Any, TextIO

import asyncpg

from cdr.partitions import Month
from cdr.record import COLUMNS

#: Columns of an invoice itemization line (no source address or Call-ID: not billing data).
ITEMIZE_COLUMNS: tuple[str, ...] = (
    "started_at",
    "answered_at",
    "ended_at",
    "caller",
    "callee_dialled",
    "call_class",
    "site",
    "emergency",
    "disposition",
    "duration_seconds",
    "billable_seconds",
)


def _cell(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if value is None:
        return ""
    return value


async def itemize(con: asyncpg.Connection, customer: str, month: Month, out: TextIO) -> int:
    """Writes one customer's calls of one month as CSV (invoice itemization).

    Args:
        con: a connection.
        customer: customer id.
        month: billing month (UTC).
        out: text stream for the CSV.

    Returns:
        Number of calls written.
    """
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(ITEMIZE_COLUMNS)
    count = 0
    # Explicit range on started_at so PostgreSQL prunes to the one partition.
    query = (
        f"SELECT {', '.join(ITEMIZE_COLUMNS)} FROM cdr "
        "WHERE customer = $1 AND started_at >= $2 AND started_at < $3 "
        "ORDER BY started_at, call_uuid"
    )
    async with con.transaction():
        async for row in con.cursor(query, customer, month.start, month.end):
            writer.writerow([_cell(row[c]) for c in ITEMIZE_COLUMNS])
            count += 1
    return count


async def subject_access(con: asyncpg.Connection, number: str, out: TextIO) -> int:
    """Writes every record naming ``number`` as caller, callee or P-Asserted-Identity.

    Everything still held is returned: ``cdr`` keeps only the retention window (15
    months; maintenance drops older months), and aggregates hold no numbers. A data
    subject is entitled to all data held about them, so no narrower filter is applied.

    Args:
        con: a connection.
        number: the subject's number as stored (E.164, e.g. ``+358401234567``).
        out: text stream for the CSV.

    Returns:
        Number of records written.
    """
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    # One branch per indexed column so each can use its index (an OR across
    # columns would scan), UNION removing a record that names the number twice.
    query = (
        f"SELECT {', '.join(COLUMNS)} FROM cdr WHERE call_uuid IN ("
        "SELECT call_uuid FROM cdr WHERE caller = $1 "
        "UNION SELECT call_uuid FROM cdr WHERE callee_dialled = $1 "
        "UNION SELECT call_uuid FROM cdr WHERE callee_routed = $1 "
        "UNION SELECT call_uuid FROM cdr WHERE p_asserted_identity = $1) "
        "AND $1 IN (caller, callee_dialled, callee_routed, p_asserted_identity) "
        "ORDER BY started_at, call_uuid"
    )
    async with con.transaction():
        async for row in con.cursor(query, number):
            writer.writerow([_cell(row[c]) for c in COLUMNS])
            count += 1
    return count
