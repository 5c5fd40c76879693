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

Rule 1 (young collections: often and small; no middle ones). A pause is as long as
the generation is large. The young threshold is :data:`YOUNG_THRESHOLD` net
allocations of container objects: pauses of about a millisecond while a load climbs.
Net is the catch: CPython counts allocations less deallocations of any generation, so
under a steady load the calls of 32 s ago, freed, offset the new ones, the count
seldom reaches the threshold and the young generation grows for seconds. At a
sustained 1,000 calls/s some young collections walked it after ~7 s, 84-100 ms each
(p99 of 599 young pauses 90 ms, ``gc.callbacks`` timing), the set-up p99 of those
steps 24-56 ms against 4 ms in the first 32 s. So :func:`run_collections` also runs
one every :data:`YOUNG_INTERVAL` (0.1 s): a tenth of a second of survivors per pause,
the same objects walked once in all. The same run with it: young pauses p99 4.1 ms,
longest 5.2 ms, 2.25 s of them in all against 2.16 s; set-up p99 4-8 ms in every step.
Idle, the clock costs 0.07-0.10 % of a core (an idle gateway beside one with
``VOIPGW_GC=previous``, 180 s, twice).
Cycles that die young, the usual ones (an exception and its traceback, a finished task), are found
there. The middle generation is never collected on its own (its threshold is
:data:`NO_AUTOMATIC`): what survives a young collection at 500 calls/s is the state
of transactions that linger 32 s for retransmissions (Timers J and L) and of calls in
progress, alive until it is freed by reference counting. A middle collection walked
each of those objects a second time and found almost nothing (333 objects in 39
collections of a 30 s run at 500 calls/s): with it, the collector took 4.8 % of the
gateway's CPU (``gc.callbacks`` timing), half of it in 8.5 ms middle pauses. The
full collections of Rule 2 walk the middle generation with the old one.

Rule 2 (full collections: when the heap doubled, else rarely). Automatic full
collections are off (the oldest generation's threshold is :data:`NO_AUTOMATIC`;
CPython compares it with the number of middle collections since the last full one,
and there are none). A full collection walks every object the young ones left, and
under load those are mostly alive (transactions lingering 32 s, calls in progress):
at 1,250 calls/s one paused the loop ~0.5 s and failed ~500 calls of the 10 s step
that held it (``bench_capacity --sustain``), once a minute while it ran on a
60 s clock. So :func:`run_collections` runs one

* when the Python heap (``sys.getallocatedblocks``) has grown by
  :data:`HEAP_GROWTH` (doubled) and at least :data:`MIN_HEAP_GROWTH` blocks since
  the last one: a garbage cycle keeps its blocks, so what cycles hold is bounded by
  the larger of the two (the rule of Go's GOGC=100 with a floor; CPython's own rule
  for its oldest generation is 25 % more long-lived objects). Not postponed: it is
  the memory bound. Under a steady load the heap stays level and this never fires;
  up to ~2,500 calls/s the floor keeps it from firing while a load climbs;
* and every :data:`FULL_INTERVAL` seconds, for cycles that hold little memory but
  something else (a socket), when the heap is **quiet**: at most :data:`QUIET_HEAP`
  blocks above the least a full collection left (start-up's, on a fresh start). The
  pause is as long as that excess, which is the state of the calls of the last 32 s:
  ~1.9 million blocks at 1,250 calls/s, where each 10-minute collection failed 575
  calls of the 12,500 of its 10 s step (p99 set-up 444 ms; the other steps 25-285,
  p99 56-148 ms; ``bench_capacity --sustain 68 --rates 1250``). Under a steady load
  it therefore waits for the load to fall (a business line's night), but never more
  than :data:`QUIET_POSTPONE_LIMIT` (a day), and a heap that doubled is collected by
  the first rule whatever the clock. A quiet heap's collection is also postponed
  while the gateway sheds load (a full pause then is time in which emergency INVITEs
  wait), but never more than :data:`FULL_POSTPONE_LIMIT` seconds.

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
import sys
import time
from collections.abc import Callable, Mapping

log = logging.getLogger("voipgw.gc")

__all__ = [
    "FULL_INTERVAL",
    "FULL_POSTPONE_LIMIT",
    "HEAP_GROWTH",
    "MIN_HEAP_GROWTH",
    "NO_AUTOMATIC",
    "PREVIOUS_YOUNG_THRESHOLD",
    "QUIET_HEAP",
    "QUIET_POSTPONE_LIMIT",
    "YOUNG_THRESHOLD",
    "FullCollectionPacer",
    "run_collections",
    "tune_garbage_collector",
]

#: Net container allocations between young collections (CPython's default: 700).
YOUNG_THRESHOLD = 2_000
#: The middle and oldest generations' threshold: never reached, so neither is
#: collected automatically (Rules 1 and 2).
NO_AUTOMATIC = 2**30
#: Growth of the Python heap, as a fraction of what the last full collection left,
#: that makes a full collection due (Rule 2).
HEAP_GROWTH = 1.0
#: ... and the least growth, in allocated blocks (pymalloc's, of at most 512 bytes:
#: ~250 MB at the gateway's mix). The heap grows for the first 32 s of a load (the
#: lingering transactions): at 1,250 calls/s from 0.3 to 2.2 million blocks, where
#: a 500,000-block minimum started two full collections in that climb, each failing
#: ~300 calls (the pause queued the loop past the shedding thresholds).
MIN_HEAP_GROWTH = 4_000_000
#: Seconds between full collections when the heap does not grow (Rule 2).
FULL_INTERVAL = 600.0
#: Seconds a due full collection may be postponed while the gateway sheds load.
FULL_POSTPONE_LIMIT = 300.0
#: Blocks above the least heap a full collection left under which the heap is quiet
#: (Rule 2): about a tenth of what 1,250 calls/s keeps, so a tenth of that pause.
QUIET_HEAP = 200_000
#: Seconds a clock-due full collection may wait for a quiet heap (Rule 2).
QUIET_POSTPONE_LIMIT = 86_400.0
#: Seconds between two young collections run by the clock, and between two looks at
#: whether a full one is due (Rule 1).
YOUNG_INTERVAL = 0.1
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
        gc.set_threshold(YOUNG_THRESHOLD, NO_AUTOMATIC, NO_AUTOMATIC)
    else:
        _, middle, old = gc.get_threshold()
        gc.set_threshold(PREVIOUS_YOUNG_THRESHOLD, middle, old)


class FullCollectionPacer:
    """Rule 2 as a pure decision: whether a full collection is due.

    Args:
        now: the time of the last full collection (start-up's), in seconds.
        heap: the heap that collection left, in allocated blocks.
        interval: seconds between full collections when the heap does not grow.
        postpone_limit: seconds one may be postponed while the gateway is busy.
        growth: heap growth (a fraction) that makes one due at once.
        min_growth: the least such growth, in blocks.
        quiet_heap: blocks above the floor (the least heap a full collection left)
            under which a clock-due collection runs.
        quiet_postpone_limit: seconds one may wait for that.
    """

    def __init__(
        self,
        now: float,
        heap: int,
        *,
        interval: float = FULL_INTERVAL,
        postpone_limit: float = FULL_POSTPONE_LIMIT,
        growth: float = HEAP_GROWTH,
        min_growth: int = MIN_HEAP_GROWTH,
        quiet_heap: int = QUIET_HEAP,
        quiet_postpone_limit: float = QUIET_POSTPONE_LIMIT,
    ) -> None:
        self.interval = interval
        self.postpone_limit = postpone_limit
        self.growth = growth
        self.min_growth = min_growth
        self.quiet_heap = quiet_heap
        self.quiet_postpone_limit = quiet_postpone_limit
        self.last = now
        self.heap = heap
        #: the least heap a full collection left: what a full collection does not
        #: walk, or little more (start-up's objects are frozen)
        self.floor = heap

    def due(self, now: float, *, busy: bool, heap: int) -> bool:
        """True when a full collection should run now.

        Args:
            now: current time in seconds.
            busy: whether the gateway is shedding load.
            heap: the heap now, in allocated blocks.
        """
        grown = heap - self.heap
        if grown >= self.min_growth and grown >= self.heap * self.growth:
            return True
        since = now - self.last
        if since < self.interval:
            return False
        if heap - self.floor > self.quiet_heap:
            return since >= self.interval + max(self.quiet_postpone_limit, self.postpone_limit)
        return not busy or since >= self.interval + self.postpone_limit

    def collected(self, now: float, heap: int) -> None:
        """Notes a full collection that ran at ``now`` and left ``heap`` blocks."""
        self.last = now
        self.heap = heap
        self.floor = min(self.floor, heap)


async def run_collections(
    busy: Callable[[], bool], *, pacer: FullCollectionPacer | None = None
) -> None:
    """Runs a young collection every :data:`YOUNG_INTERVAL` (Rule 1) and full ones as
    Rule 2 says, until cancelled.

    Args:
        busy: whether the gateway sheds load now (``LoadMonitor.shedding``).
        pacer: the schedule (default: the constants above, from the heap now).
    """
    if not paced():
        return  # CPython's own collections (VOIPGW_GC=previous)
    loop = asyncio.get_running_loop()
    pacer = pacer or FullCollectionPacer(loop.time(), sys.getallocatedblocks())
    while True:
        gc.collect(0)
        now = loop.time()
        if pacer.due(now, busy=busy(), heap=sys.getallocatedblocks()):
            started = time.perf_counter()
            found = gc.collect()
            pause = time.perf_counter() - started
            pacer.collected(loop.time(), sys.getallocatedblocks())
            log.debug("full collection: %d unreachable, %.0f ms", found, pause * 1000)
        await asyncio.sleep(YOUNG_INTERVAL)
