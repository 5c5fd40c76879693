"""gateway.ops.collector: small young and middle collections, full ones on a clock."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from gateway.ops.collector import (
    MIDDLE_THRESHOLD,
    NO_AUTOMATIC_FULL,
    YOUNG_THRESHOLD,
    FullCollectionPacer,
    run_full_collections,
    tune_garbage_collector,
)


@pytest.fixture
def collector_settings() -> Iterator[None]:
    """Puts back the test process's thresholds and unfreezes what a test froze."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def _full_collections_while_allocating(objects: int) -> int:
    """Full collections CPython starts by itself while ``objects`` containers are
    allocated and kept alive (as the state of calls in progress is)."""
    before = gc.get_stats()[2]["collections"]
    kept: list[list[int]] = [[] for _ in range(objects)]
    started: int = gc.get_stats()[2]["collections"] - before
    del kept
    return started


@pytest.mark.usefixtures("collector_settings")
def test_tuning_freezes_start_up_and_turns_automatic_full_collections_off() -> None:
    tune_garbage_collector()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, MIDDLE_THRESHOLD, NO_AUTOMATIC_FULL)
    assert gc.get_freeze_count() > 0
    # Far more than the MIDDLE_THRESHOLD ** 2 young collections after which CPython's
    # third threshold (10 by default) starts a full collection ...
    allocations = 4 * YOUNG_THRESHOLD * MIDDLE_THRESHOLD * 10
    assert _full_collections_while_allocating(allocations) == 0
    # ... as it does with that threshold.
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, 10)
    assert _full_collections_while_allocating(allocations) > 0


def test_a_full_collection_is_due_every_interval_when_calm() -> None:
    pacer = FullCollectionPacer(100.0, interval=60.0, postpone_limit=300.0)
    assert not pacer.due(159.0, busy=False)
    assert pacer.due(160.0, busy=False)
    pacer.collected(160.0)
    assert not pacer.due(200.0, busy=False)
    assert pacer.due(220.0, busy=False)


def test_shedding_postpones_it_but_never_past_the_limit() -> None:
    pacer = FullCollectionPacer(0.0, interval=60.0, postpone_limit=300.0)
    assert not pacer.due(60.0, busy=True)
    assert not pacer.due(359.0, busy=True)
    assert pacer.due(360.0, busy=True)  # memory stays bounded under a long overload
    assert pacer.due(100.0, busy=False)  # the moment the shedding stops


@pytest.mark.asyncio
async def test_the_task_collects_when_due_and_not_while_busy() -> None:
    loop = asyncio.get_running_loop()
    pacer = FullCollectionPacer(loop.time() - 61.0, interval=60.0, postpone_limit=300.0)
    busy = [True]
    task = asyncio.create_task(run_full_collections(lambda: busy[0], pacer=pacer))
    try:
        full_before = gc.get_stats()[2]["collections"]
        await asyncio.sleep(0.05)
        assert gc.get_stats()[2]["collections"] == full_before  # shedding: postponed
        busy[0] = False
        for _ in range(40):  # it looks again once a second (CALM_CHECK)
            await asyncio.sleep(0.05)
            if gc.get_stats()[2]["collections"] > full_before:
                break
        assert gc.get_stats()[2]["collections"] == full_before + 1
        assert pacer.last >= loop.time() - 3
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
