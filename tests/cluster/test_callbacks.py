"""gateway/cluster/callbacks.py against a real PostgreSQL: windows written behind the
call, found by another instance, reloaded on start, and a database that is away
never failing a call (Rules 1-3 of the module)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from gateway.cluster.callbacks import CALLBACK_WINDOW, EmergencyCallbacks
from gateway.sip.events import Endpoint
from tests.interop.sipp import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio]

ALICE = "358401000001"
PHONE = Endpoint("UDP", "127.0.10.5", 5062)
#: Generous bound on a write-behind the test waits for (the retry back-off is 0.2-5 s).
WRITTEN_WITHIN = 30.0


def open_window(store: EmergencyCallbacks) -> None:
    store.opened(
        ALICE,
        contact="sip:alice@127.0.10.5:5062",
        endpoint=PHONE,
        aor="sip:alice@voipgw.demo",
        call_id="e1@127.0.10.5",
    )


async def written(store: EmergencyCallbacks) -> None:
    async with asyncio.timeout(WRITTEN_WITHIN):
        await store.written_behind()


async def test_a_window_written_behind_is_found_by_another_instance(
    pg_pool: asyncpg.Pool,
) -> None:
    a = EmergencyCallbacks(pg_pool, instance="gw-a")
    b = EmergencyCallbacks(pg_pool, instance="gw-b")
    writer = asyncio.create_task(a.write_behind_forever())
    try:
        open_window(a)
        a.call_ended(ALICE, centre="kerava")
        await written(a)
    finally:
        writer.cancel()
    assert b.local(ALICE) is None
    found = await b.find(ALICE)
    assert found is not None
    assert (found.endpoint, found.contact, found.centre, found.instance, found.call_id) == (
        PHONE,
        "sip:alice@127.0.10.5:5062",
        "kerava",
        "gw-a",
        "e1@127.0.10.5",
    )
    assert CALLBACK_WINDOW - 60 < found.expires_at - a.clock() <= CALLBACK_WINDOW
    assert b.local(ALICE) == found  # remembered from then on
    assert await b.find("358409999999") is None


async def test_writes_are_retried_until_the_database_takes_them(pg_pool: asyncpg.Pool) -> None:
    await pg_pool.execute("ALTER TABLE emergency_callbacks RENAME TO away")
    store = EmergencyCallbacks(pg_pool, instance="gw-a")
    writer = asyncio.create_task(store.write_behind_forever())
    try:
        open_window(store)
        assert store.local(ALICE) is not None  # memory at once, whatever the database
        async with asyncio.timeout(WRITTEN_WITHIN):
            # Two failed attempts: the store retries by itself (a counter, no event).
            while store.write_failures < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await pg_pool.execute("ALTER TABLE away RENAME TO emergency_callbacks")
        await written(store)
    finally:
        writer.cancel()
    assert (
        await pg_pool.fetchval(
            "SELECT instance FROM emergency_callbacks WHERE callback_number = $1", ALICE
        )
        == "gw-a"
    )


async def test_a_database_that_is_away_never_fails_the_lookup() -> None:
    nobody = f"postgresql://postgres@127.0.0.1:{free_port()}/voipgw"
    async with asyncpg.create_pool(nobody, min_size=0) as pool:
        store = EmergencyCallbacks(pool, instance="gw-a")
        assert await store.find(ALICE) is None  # refused: an ordinary call
        open_window(store)
        # Memory first: no database needed for a window this instance holds.
        found = await store.find(ALICE)
        assert found is not None and found.in_call


async def test_a_restart_reloads_open_windows_only(pg_pool: asyncpg.Pool) -> None:
    rows = [
        ("358401000001", "now() + interval '10 minutes'"),
        ("358401000002", "now() - interval '1 minute'"),
    ]
    for number, expires in rows:
        await pg_pool.execute(
            "INSERT INTO emergency_callbacks (callback_number, contact, transport, host, port,"
            f" instance, expires_at) VALUES ($1, 'sip:x@127.0.10.5', 'UDP', '127.0.10.5', 5062,"
            f" 'gw-old', {expires})",
            number,
        )
    store = EmergencyCallbacks(pg_pool, instance="gw-new")
    assert await store.load() == 1
    assert store.local("358401000001") is not None
    assert store.local("358401000002") is None


async def test_closed_windows_are_forgotten() -> None:
    now = [1000.0]
    store = EmergencyCallbacks(clock=lambda: now[0])
    open_window(store)
    store.call_ended(ALICE)
    now[0] += CALLBACK_WINDOW - 1
    assert store.local(ALICE) is not None
    now[0] += 2
    store.opened("358401000002", contact="sip:bob@127.0.10.6", endpoint=PHONE)
    assert len(store) == 1  # Alice's closed window went when Bob's opened
    assert store.local(ALICE) is None


async def test_a_call_still_up_keeps_its_shared_window_open(pg_pool: asyncpg.Pool) -> None:
    now = [1_000_000.0]
    store = EmergencyCallbacks(
        pg_pool, instance="gw-a", clock=lambda: now[0], refresh_interval=0.05
    )
    writer = asyncio.create_task(store.write_behind_forever())
    try:
        open_window(store)
        await written(store)
        # An hour into the emergency call: the next refresh writes now + the window.
        now[0] += 3600
        async with asyncio.timeout(WRITTEN_WITHIN):
            while store.written < 2:  # noqa: ASYNC110 - a counter, no event to wait on
                await asyncio.sleep(0.02)
        await written(store)
    finally:
        writer.cancel()
    expires = await pg_pool.fetchval(
        "SELECT extract(epoch FROM expires_at) FROM emergency_callbacks WHERE callback_number = $1",
        ALICE,
    )
    assert float(expires) == now[0] + CALLBACK_WINDOW
