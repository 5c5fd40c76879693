"""The emergency callback check's cost on an ordinary call (issue 16).

With the windows shared through PostgreSQL, every call to a number asks whether it
comes from an emergency centre before the database could be asked; the centres'
addresses are resolved once per :data:`gateway.service.router.CENTRE_ADDRESSES_TTL`.
Prints the cost per ordinary call with a memory-only store (as before the issue) and
with a shared store (a real asyncpg pool with no connection opened: an ordinary call
never reaches the database), as the median of 5 runs with the spread.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import asyncpg

from gateway.cluster.callbacks import EmergencyCallbacks
from gateway.sip.events import Endpoint
from tests.interop.sipp import free_port
from tests.test_callrouter import invite, make_router

CALLS = 5000
RUNS = 5


async def per_call(store: EmergencyCallbacks) -> list[float]:
    router, _ = make_router()
    router.callbacks = store
    event = invite("sip:0401234567@voipgw", "bob", Endpoint("UDP", "127.0.10.5", 5062))
    directory = router.directory()
    runs = []
    for _ in range(RUNS):
        started = time.perf_counter()
        for _ in range(CALLS):
            assert await router._callback_route(event, directory) is None
        runs.append((time.perf_counter() - started) / CALLS * 1e6)
    return runs


async def main() -> None:
    nobody = f"postgresql://postgres@127.0.0.1:{free_port()}/voipgw"
    async with asyncpg.create_pool(nobody, min_size=0) as pool:
        for label, store in (
            ("memory-only store", EmergencyCallbacks()),
            ("shared store (PostgreSQL pool)", EmergencyCallbacks(pool, instance="bench")),
        ):
            runs = await per_call(store)
            print(
                f"callback check, {label}: {statistics.median(runs):.2f} us per ordinary call"
                f" (min {min(runs):.2f}, max {max(runs):.2f}; {RUNS} runs x {CALLS})"
            )


if __name__ == "__main__":
    asyncio.run(main())
