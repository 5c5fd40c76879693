"""When CPython's cyclic garbage collector runs in the gateway (issue 17).

Theory of operation
-------------------

The collector stops the event loop for as long as it walks the objects of the
generation it collects. Under a flood the live heap is mostly call state (calls,
dialogs, transactions of the thousands of calls in progress): it is freed by
reference counting when a call ends, and the collector finds nothing in it (every
collection in ``bench_capacity``'s floods freed 0 objects). Its pauses, measured with
``gc.callbacks`` in a 2x R0 flood with the thresholds voipgw had (young 20,000, then
CPython's 10 and 10), were 20-50 ms for the young generation about twice a second,
100-170 ms for the middle one every 8 s and 230-280 ms for a full collection every
20 s: the tail of both the 503 and the emergency set-up delays (their p99 were 136 and
204 ms in that run).

Rule 1 (young and middle generations: often and small). A pause is as long as the
generation is large. The young threshold is :data:`YOUNG_THRESHOLD` net allocations
of container objects, the middle generation is collected every
:data:`MIDDLE_THRESHOLD` young collections: pauses of a few ms and 20-40 ms, ten times
as often as before, for about the same CPU in total (each object is still walked once
per generation it passes through). Cycles that die young, the usual ones (an
exception and its traceback, a finished task), are found as before.

Rule 2 (full collections: on a clock, not while shedding). Automatic full
collections are off (the oldest generation's threshold is :data:`NO_AUTOMATIC_FULL`;
CPython compares it with the number of middle collections since the last full one).
:func:`run_full_collections` runs one every :data:`FULL_INTERVAL` seconds instead,
postponed while the gateway sheds load (a full pause then is a few hundred ms in which
emergency INVITEs wait), but never more than :data:`FULL_POSTPONE_LIMIT` seconds: a
cycle that reached the old generation is freed within ``FULL_INTERVAL +
FULL_POSTPONE_LIMIT`` seconds whatever the load, so memory stays bounded.

Start-up's objects (configuration, sites, modules) are frozen (``gc.freeze``) and
never walked again.

``VOIPGW_GC=previous`` in the environment keeps the thresholds voipgw had before
(young :data:`PREVIOUS_YOUNG_THRESHOLD`, CPython's automatic full collections, no
clock), so that ``bench_capacity --gc-ab`` can compare the two in one run.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Callable, Mapping

log = logging.getLogger("voipgw.gc")

__all__ = [
    "FULL_INTERVAL",
    "FULL_POSTPONE_LIMIT",
    "MIDDLE_THRESHOLD",
    "NO_AUTOMATIC_FULL",
    "PREVIOUS_YOUNG_THRESHOLD",
    "YOUNG_THRESHOLD",
    "FullCollectionPacer",
    "run_full_collections",
    "tune_garbage_collector",
]

#: Net container allocations between young collections (CPython's default: 700).
YOUNG_THRESHOLD = 2_000
#: Young collections between middle collections (CPython's default).
MIDDLE_THRESHOLD = 10
#: The oldest generation's threshold: never reached, so no automatic full collection
#: (Rule 2).
NO_AUTOMATIC_FULL = 2**30
#: Seconds between full collections run by :func:`run_full_collections`.
FULL_INTERVAL = 60.0
#: Seconds a due full collection may be postponed while the gateway sheds load.
FULL_POSTPONE_LIMIT = 300.0
#: Seconds between two looks at whether a postponed collection may run.
CALM_CHECK = 1.0
#: The young threshold before Rules 1 and 2 (``VOIPGW_GC=previous``).
PREVIOUS_YOUNG_THRESHOLD = 20_000


def paced(environ: Mapping[str, str] = os.environ) -> bool:
    """False when ``VOIPGW_GC=previous`` asks for the thresholds voipgw had before."""
    return environ.get("VOIPGW_GC") != "previous"


def tune_garbage_collector() -> None:
    """Rules 1 and 2 from now on; freezes what start-up built (call once, when up)."""
    gc.collect()
    gc.freeze()
    if paced():
        gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, NO_AUTOMATIC_FULL)
    else:
        _, middle, old = gc.get_threshold()
        gc.set_threshold(PREVIOUS_YOUNG_THRESHOLD, middle, old)


class FullCollectionPacer:
    """Rule 2 as a pure decision: whether a full collection is due at ``now``.

    Args:
        now: the time of the last full collection (start-up's), in seconds.
        interval: seconds between full collections.
        postpone_limit: seconds one may be postponed while the gateway is busy.
    """

    def __init__(
        self,
        now: float,
        *,
        interval: float = FULL_INTERVAL,
        postpone_limit: float = FULL_POSTPONE_LIMIT,
    ) -> None:
        self.interval = interval
        self.postpone_limit = postpone_limit
        self.last = now

    def due(self, now: float, *, busy: bool) -> bool:
        """True when a full collection should run now.

        Args:
            now: current time in seconds.
            busy: whether the gateway is shedding load.
        """
        since = now - self.last
        if since < self.interval:
            return False
        return not busy or since >= self.interval + self.postpone_limit

    def collected(self, now: float) -> None:
        """Notes a full collection that ran at ``now``."""
        self.last = now


async def run_full_collections(
    busy: Callable[[], bool], *, pacer: FullCollectionPacer | None = None
) -> None:
    """Runs full collections as Rule 2 says, until cancelled.

    Args:
        busy: whether the gateway sheds load now (``LoadMonitor.shedding``).
        pacer: the schedule (default: :data:`FULL_INTERVAL`, :data:`FULL_POSTPONE_LIMIT`).
    """
    if not paced():
        return  # CPython's own full collections (VOIPGW_GC=previous)
    loop = asyncio.get_running_loop()
    pacer = pacer or FullCollectionPacer(loop.time())
    while True:
        now = loop.time()
        if pacer.due(now, busy=busy()):
            started = time.perf_counter()
            found = gc.collect()
            pause = time.perf_counter() - started
            pacer.collected(loop.time())
            log.debug("full collection: %d unreachable, %.0f ms", found, pause * 1000)
        await asyncio.sleep(CALM_CHECK)
