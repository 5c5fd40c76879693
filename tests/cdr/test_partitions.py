"""Pure partition arithmetic."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdr.partitions import (
    Month,
    create_partition_sql,
    is_retired,
    month_of_partition,
    months_to_create,
    months_to_retire,
    retention_cutoff,
)

UTC = dt.UTC


def test_month_bounds_and_name() -> None:
    m = Month(year=2026, month=11)
    assert m.partition_name == "cdr_2026_11"
    assert m.start == dt.datetime(2026, 11, 1, tzinfo=UTC)
    assert m.end == dt.datetime(2026, 12, 1, tzinfo=UTC)
    assert Month(year=2026, month=12).end == dt.datetime(2027, 1, 1, tzinfo=UTC)
    assert str(m) == "2026-11"


def test_month_of_uses_utc() -> None:
    helsinki = dt.timezone(dt.timedelta(hours=2))
    # 1 December 01:00 in Helsinki is still November in UTC.
    assert Month.of(dt.datetime(2026, 12, 1, 1, 0, tzinfo=helsinki)) == Month(year=2026, month=11)
    with pytest.raises(ValueError, match="naive"):
        Month.of(dt.datetime(2026, 1, 1))


def test_parse() -> None:
    assert Month.parse("2026-10") == Month(year=2026, month=10)
    for bad in ("2026-13", "2026-1", "26-10", "2026/10"):
        with pytest.raises(ValueError):
            Month.parse(bad)


def test_create_sql() -> None:
    sql = create_partition_sql(Month(year=2026, month=11))
    assert sql == (
        "CREATE TABLE IF NOT EXISTS cdr_2026_11 PARTITION OF cdr FOR VALUES FROM "
        "('2026-11-01T00:00:00+00:00') TO ('2026-12-01T00:00:00+00:00')"
    )


def test_months_to_create_includes_current_and_three_ahead() -> None:
    now = dt.datetime(2026, 11, 22, tzinfo=UTC)
    names = [m.partition_name for m in months_to_create(now, ahead=3)]
    assert names == ["cdr_2026_11", "cdr_2026_12", "cdr_2027_01", "cdr_2027_02"]
    with pytest.raises(ValueError):
        months_to_create(now, ahead=-1)


def test_retention_cutoff_clamps_day() -> None:
    assert retention_cutoff(dt.datetime(2027, 5, 31, 10, tzinfo=UTC), 15) == dt.datetime(
        2026, 2, 28, 10, tzinfo=UTC
    )
    with pytest.raises(ValueError):
        retention_cutoff(dt.datetime(2027, 5, 31, tzinfo=UTC), 0)


def test_retire_only_whole_months_past_retention() -> None:
    now = dt.datetime(2027, 4, 15, tzinfo=UTC)  # cutoff 2026-01-15
    existing = ["cdr_2025_11", "cdr_2025_12", "cdr_2026_01", "cdr_2026_02", "cdr_other", "x"]
    retired = months_to_retire(existing, now, 15)
    # cdr_2026_01 still holds rows from after 2026-01-15, so it stays.
    assert [m.partition_name for m in retired] == ["cdr_2025_11", "cdr_2025_12"]


def test_month_of_partition() -> None:
    assert month_of_partition("cdr_2026_02") == Month(year=2026, month=2)
    assert month_of_partition("cdr_2026_13") is None
    assert month_of_partition("cdr_monthly_aggregate") is None


@given(
    st.datetimes(
        min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    st.integers(min_value=1, max_value=60),
)
def test_retention_never_drops_a_row_younger_than_retention(now: dt.datetime, months: int) -> None:
    # Any partition judged retired ends no later than the cutoff: all its rows are older.
    cutoff = retention_cutoff(now, months)
    current = Month.of(now)
    for back in range(0, months + 3):
        m = current.plus(-back)
        if is_retired(m, now, months):
            assert m.end <= cutoff
        else:
            assert m.end > cutoff
    # The month containing the cutoff is never retired; the month before it always is.
    assert not is_retired(Month.of(cutoff), now, months)
    assert is_retired(Month.of(cutoff).plus(-1), now, months)


@given(st.integers(min_value=-2000, max_value=2000))
def test_plus_roundtrip(n: int) -> None:
    m = Month(year=2026, month=5)
    assert m.plus(n).plus(-n) == m
    assert m.plus(n).start > m.start if n > 0 else m.plus(n).start <= m.start
