"""Monthly partition arithmetic for the ``cdr`` table (pure: no I/O, no clock).

The ``cdr`` table is ``PARTITION BY RANGE (started_at)`` with one partition per calendar
month in UTC, named ``cdr_YYYY_MM`` and covering ``[first day 00:00 UTC, next first
day 00:00 UTC)``. There is deliberately no DEFAULT partition: a row for a month without
a partition must fail loudly (SQLSTATE 23514) so the writer creates the partition,
instead of piling up in a default partition that would later block creating that
month's partition (PostgreSQL rejects a new partition whose range matches rows in the
default partition).

Retention: the privacy policy keeps call logs 15 months. A partition is retired once
every row it can hold is older than the retention period, that is when its *upper*
bound is at or before ``now - retention``. Retiring a whole partition replaces a bulk
DELETE (and the VACUUM it would cost) with a cheap DETACH + DROP (PostgreSQL docs,
5.12.4 "Partition Maintenance").
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

#: Parent table name.
PARENT = "cdr"

_NAME_RE = re.compile(r"^cdr_(\d{4})_(\d{2})$")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, order=True)
class Month:
    """A calendar month in UTC."""

    year: int
    month: int
    """1-12."""

    def __post_init__(self) -> None:
        if not 1 <= self.month <= 12:
            raise ValueError(f"month must be 1-12, got {self.month}")
        if not 1 <= self.year <= 9998:
            raise ValueError(f"year out of range: {self.year}")

    @classmethod
    def of(cls, when: dt.datetime) -> Month:
        """Returns the UTC month containing ``when``.

        Args:
            when: a timezone-aware timestamp.

        Returns:
            Its month.

        Raises:
            ValueError: ``when`` is naive.
        """
        if when.utcoffset() is None:
            raise ValueError("a naive datetime has no month in UTC")
        utc = when.astimezone(dt.UTC)
        return cls(year=utc.year, month=utc.month)

    @classmethod
    def parse(cls, text: str) -> Month:
        """Parses ``YYYY-MM``.

        Args:
            text: e.g. ``"2026-10"``.

        Returns:
            The month.

        Raises:
            ValueError: not of that form.
        """
        match = re.fullmatch(r"(\d{4})-(\d{2})", text)
        if match is None:
            raise ValueError(f"expected YYYY-MM, got {text!r}")
        return cls(year=int(match[1]), month=int(match[2]))

    def plus(self, months: int) -> Month:
        """Returns the month ``months`` later (negative for earlier)."""
        index = self.year * 12 + (self.month - 1) + months
        return Month(year=index // 12, month=index % 12 + 1)

    @property
    def start(self) -> dt.datetime:
        """First instant of the month, UTC."""
        return dt.datetime(self.year, self.month, 1, tzinfo=dt.UTC)

    @property
    def end(self) -> dt.datetime:
        """First instant of the next month, UTC (exclusive upper bound)."""
        return self.plus(1).start

    @property
    def partition_name(self) -> str:
        """Partition table name, e.g. ``cdr_2026_11``."""
        return f"{PARENT}_{self.year:04d}_{self.month:02d}"

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


def month_of_partition(name: str) -> Month | None:
    """Returns the month a partition name stands for, or ``None`` if it is not one.

    Args:
        name: a table name.

    Returns:
        The month for ``cdr_YYYY_MM`` names, else ``None``.
    """
    match = _NAME_RE.match(name)
    if match is None:
        return None
    try:
        return Month(year=int(match[1]), month=int(match[2]))
    except ValueError:
        return None


def create_partition_sql(month: Month) -> str:
    """Returns the idempotent DDL creating the partition for ``month``.

    ``IF NOT EXISTS`` because several gateway instances may create the same partition
    at the same moment (the writer on a missing partition, maintenance ahead of time).

    Args:
        month: the month.

    Returns:
        One SQL statement.
    """
    return (
        f"CREATE TABLE IF NOT EXISTS {month.partition_name} PARTITION OF {PARENT} "
        f"FOR VALUES FROM ('{month.start.isoformat()}') TO ('{month.end.isoformat()}')"
    )


def months_to_create(now: dt.datetime, ahead: int = 3) -> list[Month]:
    """Returns the months that must have a partition: the current one and ``ahead`` more.

    Args:
        now: the current time (timezone-aware).
        ahead: how many future months to prepare (at least 3 so a maintenance outage
            of weeks never leaves the writer without a partition).

    Returns:
        Months in ascending order.

    Raises:
        ValueError: ``ahead`` is negative.
    """
    if ahead < 0:
        raise ValueError("ahead must be >= 0")
    current = Month.of(now)
    return [current.plus(i) for i in range(ahead + 1)]


def retention_cutoff(now: dt.datetime, retention_months: int = 15) -> dt.datetime:
    """Returns the instant before which call records must not be kept.

    The day of month is clamped (31 March minus one month is 28/29 February).

    Args:
        now: the current time (timezone-aware).
        retention_months: how long call logs are kept (privacy policy: 15).

    Returns:
        ``now - retention_months`` months, in UTC.

    Raises:
        ValueError: ``retention_months`` is below 1.
    """
    if retention_months < 1:
        raise ValueError("retention_months must be >= 1")
    utc = now.astimezone(dt.UTC)
    target = Month.of(utc).plus(-retention_months)
    last_day = (target.end - dt.timedelta(days=1)).day
    return utc.replace(year=target.year, month=target.month, day=min(utc.day, last_day))


def is_retired(month: Month, now: dt.datetime, retention_months: int = 15) -> bool:
    """Tells whether every row the month's partition can hold is past retention.

    Args:
        month: the partition's month.
        now: the current time (timezone-aware).
        retention_months: retention in months.

    Returns:
        True when the partition's upper bound is at or before the retention cutoff.
    """
    return month.end <= retention_cutoff(now, retention_months)


def months_to_retire(
    existing: list[str], now: dt.datetime, retention_months: int = 15
) -> list[Month]:
    """Returns the months among ``existing`` partition names that are past retention.

    Args:
        existing: table names (names that are not ``cdr_YYYY_MM`` are ignored).
        now: the current time (timezone-aware).
        retention_months: retention in months.

    Returns:
        Months to retire, oldest first.
    """
    months = (month_of_partition(name) for name in existing)
    return sorted(m for m in months if m is not None and is_retired(m, now, retention_months))
