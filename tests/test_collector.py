"""gateway.ops.collector: small young collections, full ones on a clock."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Iterator

import pytest

from gateway.ops.collector import (
    NO_AUTOMATIC,
    QUIET_HEAP,
    QUIET_POSTPONE_LIMIT,
    YOUNG_INTERVAL,
    YOUNG_THRESHOLD,
    FullCollectionPacer,
    run_collections,
    tune_garbage_collector,
)


@pytest.fixture
def collector_settings() -> Iterator[None]:
    """Puts back the test process's thresholds and unfreezes what a test froze."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("collector_settings")
def _collections_while_allocating(objects: int) -> tuple[int, int, int]:
    """Young, middle and full collections CPython starts by itself while ``objects``
    containers are allocated and kept alive (as the state of calls in progress is)."""
    before = [generation["collections"] for generation in gc.get_stats()]
    kept: list[list[int]] = [[] for _ in range(objects)]
    after = [generation["collections"] for generation in gc.get_stats()]
    del kept
    young, middle, full = (now - then for now, then in zip(after, before, strict=True))
    return young, middle, full


@pytest.mark.usefixtures("collector_settings")
def test_tuning_freezes_start_up_and_leaves_only_young_collections_automatic() -> None:
    tune_garbage_collector()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, NO_AUTOMATIC, NO_AUTOMATIC)
    assert gc.get_freeze_count() > 0
    # Far more than the 10 ** 2 young collections after which CPython's default
    # middle and old thresholds (10, 10) start a full collection ...
    allocations = 4 * YOUNG_THRESHOLD * 10 * 10
    young, middle, full = _collections_while_allocating(allocations)
    assert young >= allocations // YOUNG_THRESHOLD - 1
    assert (middle, full) == (0, 0)
    # ... as they do with those thresholds.
    gc.set_threshold(YOUNG_THRESHOLD, 10, 10)
    young, middle, full = _collections_while_allocating(allocations)
    assert middle > 0 and full > 0


def test_a_full_collection_is_due_every_interval_when_calm() -> None:
    pacer = FullCollectionPacer(100.0, 1_000_000, interval=60.0, postpone_limit=300.0)
    assert not pacer.due(159.0, busy=False, heap=1_000_000)
    assert pacer.due(160.0, busy=False, heap=1_000_000)
    pacer.collected(160.0, 1_000_000)
    assert not pacer.due(200.0, busy=False, heap=1_000_000)
    assert pacer.due(220.0, busy=False, heap=1_000_000)


def test_shedding_postpones_it_but_never_past_the_limit() -> None:
    pacer = FullCollectionPacer(0.0, 1_000_000, interval=60.0, postpone_limit=300.0)
    assert not pacer.due(60.0, busy=True, heap=1_000_000)
    assert not pacer.due(359.0, busy=True, heap=1_000_000)
    assert pacer.due(360.0, busy=True, heap=1_000_000)  # memory stays bounded
    assert pacer.due(100.0, busy=False, heap=1_000_000)  # the moment the shedding stops


def test_under_load_the_clock_waits_for_a_quiet_heap() -> None:
    # At 1,250 calls/s the calls of the last 32 s keep ~1.9 million blocks above what
    # start-up left; a full collection walks them all (~0.5 s), and failed 575 calls.
    pacer = FullCollectionPacer(
        0.0, 300_000, interval=600.0, postpone_limit=300.0, min_growth=4_000_000
    )
    loaded = 2_200_000
    assert not pacer.due(600.0, busy=False, heap=loaded)
    assert not pacer.due(900.0, busy=False, heap=loaded)  # past the shedding limit too
    assert not pacer.due(40_000.0, busy=True, heap=loaded)
    # The load falls (the night): the heap is back within QUIET_HEAP of the floor.
    assert not pacer.due(40_000.0, busy=False, heap=300_001 + QUIET_HEAP)
    assert pacer.due(40_000.0, busy=False, heap=300_000 + QUIET_HEAP)


def test_a_heap_never_quiet_is_still_collected_once_a_day() -> None:
    pacer = FullCollectionPacer(0.0, 300_000, interval=600.0, min_growth=4_000_000)
    assert not pacer.due(600.0 + QUIET_POSTPONE_LIMIT - 1, busy=True, heap=2_200_000)
    assert pacer.due(600.0 + QUIET_POSTPONE_LIMIT, busy=True, heap=2_200_000)


def test_the_floor_is_the_least_heap_a_collection_left() -> None:
    pacer = FullCollectionPacer(0.0, 1_000_000, interval=600.0, quiet_heap=100_000)
    pacer.collected(10.0, 700_000)
    assert pacer.floor == 700_000
    pacer.collected(20.0, 900_000)  # collected under load: the floor stays
    assert pacer.floor == 700_000
    assert not pacer.due(620.0, busy=False, heap=800_001)
    assert pacer.due(620.0, busy=False, heap=800_000)


def test_a_heap_that_doubled_is_collected_at_once_even_while_shedding() -> None:
    pacer = FullCollectionPacer(0.0, 1_000_000, interval=600.0, growth=1.0, min_growth=500_000)
    # A steady load: the heap goes up and down, and no collection pauses the loop.
    assert not pacer.due(30.0, busy=False, heap=1_900_000)
    assert pacer.due(30.0, busy=True, heap=2_000_000)
    pacer.collected(31.0, 1_200_000)
    assert not pacer.due(40.0, busy=False, heap=2_300_000)
    assert pacer.due(40.0, busy=False, heap=2_400_000)
    # A small heap needs the least growth: six times as large, but by few blocks.
    pacer.collected(50.0, 100_000)
    assert not pacer.due(51.0, busy=False, heap=599_999)
    assert pacer.due(51.0, busy=False, heap=600_000)


@pytest.mark.asyncio
async def test_the_task_collects_when_due_and_not_while_busy() -> None:
    loop = asyncio.get_running_loop()
    pacer = FullCollectionPacer(
        loop.time() - 61.0, sys.getallocatedblocks(), interval=60.0, postpone_limit=300.0
    )
    busy = [True]
    task = asyncio.create_task(run_collections(lambda: busy[0], pacer=pacer))
    try:
        full_before = gc.get_stats()[2]["collections"]
        await asyncio.sleep(0.05)
        assert gc.get_stats()[2]["collections"] == full_before  # shedding: postponed
        busy[0] = False
        for _ in range(40):  # it looks again every YOUNG_INTERVAL
            await asyncio.sleep(0.05)
            if gc.get_stats()[2]["collections"] > full_before:
                break
        assert gc.get_stats()[2]["collections"] == full_before + 1
        assert pacer.last >= loop.time() - 3
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.asyncio
@pytest.mark.usefixtures("collector_settings")
async def test_the_task_runs_a_young_collection_on_its_clock() -> None:
    # Under a steady load the net count seldom reaches the threshold (deallocations of
    # old objects offset new ones): the clock bounds how long the young generation grows.
    gc.set_threshold(2**30, NO_AUTOMATIC, NO_AUTOMATIC)  # no automatic collection at all
    loop = asyncio.get_running_loop()
    pacer = FullCollectionPacer(loop.time(), sys.getallocatedblocks(), interval=3600.0)
    young_before, full_before = gc.get_stats()[0]["collections"], gc.get_stats()[2]["collections"]
    task = asyncio.create_task(run_collections(lambda: False, pacer=pacer))
    try:
        await asyncio.sleep(3.5 * YOUNG_INTERVAL)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert gc.get_stats()[0]["collections"] - young_before >= 3
    assert gc.get_stats()[2]["collections"] == full_before
