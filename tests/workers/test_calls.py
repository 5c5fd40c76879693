"""gateway.workers.calls: each worker publishes its calls in progress in its slot and
reads its siblings' (two mappings of one file, as two worker processes have)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.workers.calls import FILE_NAME, MachineCalls


def test_each_worker_reads_the_others_calls_not_its_own(tmp_path: Path) -> None:
    one, two, three = (MachineCalls(tmp_path, 3, index) for index in (1, 2, 3))
    try:
        one.publish(5)
        two.publish(7)
        assert (one.siblings(), two.siblings(), three.siblings()) == (7, 5, 12)
        assert (tmp_path / FILE_NAME).stat().st_size == 3 * 8
    finally:
        for worker in (one, two, three):
            worker.close()


def test_a_restarted_worker_clears_what_its_previous_run_left(tmp_path: Path) -> None:
    one, two = MachineCalls(tmp_path, 2, 1), MachineCalls(tmp_path, 2, 2)
    two.publish(9)  # ... and dies without closing (SIGKILL)
    assert one.siblings() == 9
    again = MachineCalls(tmp_path, 2, 2)
    try:
        assert one.siblings() == 0
    finally:
        for worker in (one, two, again):
            worker.close()


def test_a_stopped_worker_counts_nothing_and_the_index_is_checked(tmp_path: Path) -> None:
    one, two = MachineCalls(tmp_path, 2, 1), MachineCalls(tmp_path, 2, 2)
    two.publish(3)
    two.close()
    try:
        assert one.siblings() == 0
    finally:
        one.close()
    with pytest.raises(ValueError, match="worker 3 of 2"):
        MachineCalls(tmp_path, 2, 3)
