"""Exports promised by the privacy policy: invoice itemization and data-subject access.

Both write CSV (RFC 4180, header row, UTC ISO 8601 timestamps) to a text stream.
Durations are written in seconds with three decimals: the gateway times calls to the
millisecond at best (loop clock, 10 ms timer granularity), so further digits are only
binary floating-point noise (``6.168999999999869``); billing uses the separate whole
``billable_seconds``. Itemization shows the caller, the number the call presented
(``presented_number``, delivery terms 12.7: the customer sees which caller ID each
call used) and the callee as numbers: the user part of a SIP URI or the number of a
tel URI (RFC 3966) when it is one. For an emergency call it shows where the location
sent to the centre came from (``location_source``) and whether the call had a callback
identity (``callback_identity``, issue 14). Subject access returns the records as held.

A call relayed to the worker or instance holding its callee's flow has two rows, the
relaying process's and the flow owner's (``flow_relay``, ``routing.decision.FlowRelay``):
itemization and the in-progress count take the relaying one alone
(:data:`cdr.record.CALL_RECORD_CONDITION`), so the call is billed once with its
caller as the caller's side saw it. Subject access returns both: both are held.

A call still in progress has a row whose ``ended_by`` is NULL (``cdr.record``): its
durations run only to its last interim update. Itemization bills finished calls only
(the call is itemized once it ends, in the month it started); :func:`in_progress` counts
the others, which ``voipgw cdr itemize`` reports. Subject access returns every row held,
in-progress ones with an empty ``ended_by``.
"""

from __future__ import annotations

import csv
import datetime as dt
from typing import Any, Final, TextIO

import asyncpg

from cdr.numbers import number_of
from cdr.partitions import Month
from cdr.record import CALL_RECORD_CONDITION, COLUMNS

#: Columns of an invoice itemization line (no source address or Call-ID: not billing data).
ITEMIZE_COLUMNS: tuple[str, ...] = (
    "started_at",
    "answered_at",
    "ended_at",
    "caller",
    "presented_number",
    "callee_dialled",
    "call_class",
    "site",
    "emergency",
    "location_source",
    "callback_identity",
    "disposition",
    "ended_by",
    "duration_seconds",
    "billable_seconds",
)


#: Itemized columns that hold a party's number (or the URI it came as).
_NUMBER_COLUMNS: Final = frozenset({"caller", "callee_dialled"})


def _cell(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"  # see the module docstring
    return value


def _itemized_cell(column: str, value: Any) -> Any:
    if column in _NUMBER_COLUMNS and isinstance(value, str):
        return number_of(value)
    return _cell(value)


async def itemize(con: asyncpg.Connection, customer: str, month: Month, out: TextIO) -> int:
    """Writes one customer's calls of one month as CSV (invoice itemization).

    Args:
        con: a connection.
        customer: customer id.
        month: billing month (UTC).
        out: text stream for the CSV.

    Returns:
        Number of calls written (finished calls only, each once: a relayed call's
        flow owner's row is left out).
    """
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(ITEMIZE_COLUMNS)
    count = 0
    # Explicit range on started_at so PostgreSQL prunes to the one partition.
    query = (
        f"SELECT {', '.join(ITEMIZE_COLUMNS)} FROM cdr "
        "WHERE customer = $1 AND started_at >= $2 AND started_at < $3 "
        f"AND ended_by IS NOT NULL AND {CALL_RECORD_CONDITION} "
        "ORDER BY started_at, call_uuid"
    )
    async with con.transaction():
        async for row in con.cursor(query, customer, month.start, month.end):
            writer.writerow([_itemized_cell(c, row[c]) for c in ITEMIZE_COLUMNS])
            count += 1
    return count


async def in_progress(con: asyncpg.Connection, customer: str, month: Month) -> int:
    """Counts one customer's calls of one month still in progress (not itemized).

    Args:
        con: a connection.
        customer: customer id.
        month: billing month (UTC).

    Returns:
        Number of in-progress calls (a relayed call's flow owner's row not counted).
    """
    count: int = await con.fetchval(
        "SELECT count(*) FROM cdr WHERE customer = $1 AND started_at >= $2 "
        f"AND started_at < $3 AND ended_by IS NULL AND {CALL_RECORD_CONDITION}",
        customer,
        month.start,
        month.end,
    )
    return count


async def subject_access(con: asyncpg.Connection, number: str, out: TextIO) -> int:
    """Writes every record naming ``number`` as caller, callee or P-Asserted-Identity.

    Everything still held is returned: ``cdr`` keeps only the retention window (15
    months; maintenance drops older months), and aggregates hold no numbers. A data
    subject is entitled to all data held about them, so no narrower filter is applied:
    a relayed call's two rows (``flow_relay``) are both returned.

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
