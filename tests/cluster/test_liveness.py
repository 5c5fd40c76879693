"""Issue 16 part 2 against a real PostgreSQL: heartbeats, and the closure of a dead
instance's calls exactly once while several survivors race for it
(gateway/cluster/liveness.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from pathlib import Path

import asyncpg
import pytest

from cdr.record import CallDetailRecord, EndedBy
from gateway.cluster.liveness import Liveness
from gateway.config import ClusterConfig
from tests.cdr.factory import make_record
from tests.cdr.test_in_progress import replay_batches, up_until

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio]

DEAD = "gw-dead"
CALLS = 50
SURVIVORS = 4


def cluster(name: str) -> ClusterConfig:
    return ClusterConfig(
        instance=name, sip_uri="sip:127.0.0.1:5060", heartbeat_interval=0.2, dead_after=1.0
    )


def in_progress_calls(count: int) -> list[CallDetailRecord]:
    """``count`` answered calls of the dead instance, each up for 30 s so far."""
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    return [
        dataclasses.replace(
            up_until(make_record(started_at=start + dt.timedelta(seconds=i)), 30),
            gateway_instance=DEAD,
        )
        for i in range(count)
    ]


async def silent_since(pool: asyncpg.Pool, name: str, seconds: float) -> dt.datetime:
    """Registers ``name`` as an instance last seen ``seconds`` ago; returns then."""
    return await pool.fetchval(
        "INSERT INTO cluster_instances (instance, sip_uri, cdr_instance, started_at, last_seen)"
        " VALUES ($1, 'sip:127.0.0.9:5060', $1, now() - interval '1 hour',"
        " now() - make_interval(secs => $2)) RETURNING last_seen",
        name,
        seconds,
    )


async def test_several_survivors_racing_close_each_call_once(
    pg_pool: asyncpg.Pool, pg_dsn: str, tmp_path: Path
) -> None:
    calls = in_progress_calls(CALLS)
    await replay_batches(pg_pool, tmp_path / "spool", [calls])
    last_seen = await silent_since(pg_pool, DEAD, 10.0)
    # Each survivor on its own pool: separate connections, as separate processes have.
    pools = [await asyncpg.create_pool(pg_dsn, min_size=1) for _ in range(SURVIVORS)]
    try:
        survivors = [
            Liveness(pool, cluster(f"gw-{n}"), cdr_instance=f"gw-{n}")
            for n, pool in enumerate(pools)
        ]
        found = await asyncio.gather(*(s.reap() for s in survivors))
    finally:
        for pool in pools:
            await pool.close()
    declared = [dead for per_survivor in found for dead in per_survivor]
    assert [(d.instance, d.calls_closed) for d in declared] == [(DEAD, CALLS)]
    rows = await pg_pool.fetch(
        "SELECT ended_by::text, ended_at, answered_at FROM cdr WHERE gateway_instance = $1", DEAD
    )
    assert len(rows) == CALLS
    assert {row["ended_by"] for row in rows} == {EndedBy.INSTANCE_DEAD.value}
    # Closed at the last heartbeat (each call's own last interim update is older).
    assert {row["ended_at"] for row in rows} == {last_seen}
    state = await pg_pool.fetchrow(
        "SELECT declared_dead_by, calls_closed FROM cluster_instances WHERE instance = $1", DEAD
    )
    winner = next(s for s, f in zip(survivors, found, strict=True) if f)
    assert (state["declared_dead_by"], state["calls_closed"]) == (winner.config.instance, CALLS)
    # Asked again, nobody declares it twice.
    again = Liveness(pg_pool, cluster("gw-late"), cdr_instance="gw-late")
    assert await again.reap() == []


async def test_a_real_end_replayed_later_supersedes_the_closure(
    pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    calls = in_progress_calls(2)
    await replay_batches(pg_pool, tmp_path / "spool", [calls])
    await silent_since(pg_pool, DEAD, 10.0)
    survivor = Liveness(pg_pool, cluster("gw-1"), cdr_instance="gw-1")
    assert [d.calls_closed for d in await survivor.reap()] == [2]
    # The dead instance's spool, replayed later, held the first call's real end.
    ended = calls[0].extended_to(calls[0].ended_at + dt.timedelta(seconds=5), EndedBy.CALLER)
    await replay_batches(pg_pool, tmp_path / "spool", [[ended]])
    rows = dict(
        await pg_pool.fetch(
            "SELECT call_uuid, ended_by::text FROM cdr WHERE gateway_instance = $1", DEAD
        )
    )
    assert rows == {calls[0].call_uuid: "caller", calls[1].call_uuid: "instance-dead"}


async def test_live_instances_are_left_alone_and_a_return_clears_the_verdict(
    pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    await replay_batches(pg_pool, tmp_path / "spool", [in_progress_calls(3)])
    await silent_since(pg_pool, DEAD, 0.0)
    me = Liveness(pg_pool, cluster("gw-1"), cdr_instance="gw-1")
    await me.beat()
    assert await me.reap() == []  # gw-dead beat just now
    assert await me.live_instances() == 2
    await pg_pool.execute(
        "UPDATE cluster_instances SET last_seen = now() - interval '5 s' WHERE instance = $1",
        DEAD,
    )
    assert [d.instance for d in await me.reap()] == [DEAD]
    assert await me.live_instances() == 1
    # It comes back under its name: alive again, its next calls are its own.
    back = Liveness(pg_pool, cluster(DEAD), cdr_instance=DEAD)
    await back.beat()
    assert await me.live_instances() == 2
    assert (
        await pg_pool.fetchval(
            "SELECT declared_dead_at FROM cluster_instances WHERE instance = $1", DEAD
        )
        is None
    )


async def test_the_view_says_which_owner_is_gone_by_the_databases_clock(
    pg_pool: asyncpg.Pool,
) -> None:
    # silent_since gives the instance the address sip:127.0.0.9:5060.
    owner = "sip:127.0.0.9:5060"
    await silent_since(pg_pool, DEAD, 0.0)
    me = Liveness(pg_pool, cluster("gw-1"), cdr_instance="gw-1")
    assert not me.owner_gone(owner)  # nothing read yet: nobody is judged
    await me.read_view()
    assert not me.owner_gone(owner)
    await pg_pool.execute(
        "UPDATE cluster_instances SET last_seen = now() - interval '5 s' WHERE instance = $1",
        DEAD,
    )
    assert not me.owner_gone(owner)  # until the next read
    view = await me.read_view()
    assert [round(i.silent_for) for i in view.instances if i.sip_uri == owner] == [5]
    assert me.owner_gone(owner)
    # Declared dead and back under its name: alive from the next read.
    assert [d.instance for d in await me.reap()] == [DEAD]
    await me.read_view()
    assert me.owner_gone(owner)
    await pg_pool.execute(
        "UPDATE cluster_instances SET last_seen = now(), declared_dead_at = NULL"
        " WHERE instance = $1",
        DEAD,
    )
    await me.read_view()
    assert not me.owner_gone(owner)
    # A view this instance could not refresh for dead_after judges nobody.
    await pg_pool.execute(
        "UPDATE cluster_instances SET last_seen = now() - interval '5 s' WHERE instance = $1",
        DEAD,
    )
    await me.read_view()
    me.clock = lambda: view.read_at + 1e6
    assert not me.owner_gone(owner)


async def test_workers_beat_one_row_and_a_dead_machine_closes_every_workers_calls(
    pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    machine = "gw-workers"
    names = [f"{machine}-w1", f"{machine}-w2"]
    calls = [
        dataclasses.replace(record, gateway_instance=names[i % 2])
        for i, record in enumerate(in_progress_calls(6))
    ]
    await replay_batches(pg_pool, tmp_path / "spool", [calls])
    workers = [
        Liveness(
            pg_pool,
            dataclasses.replace(cluster(machine), worker_uri=f"sip:127.0.0.1:{5081 + i}"),
            cdr_instance=name,
        )
        for i, name in enumerate(names)
    ]
    for worker in workers:
        await worker.beat()
    row = await pg_pool.fetchrow(
        "SELECT cdr_instances, worker_uris FROM cluster_instances WHERE instance = $1", machine
    )
    assert sorted(row["cdr_instances"]) == names
    assert sorted(row["worker_uris"]) == ["sip:127.0.0.1:5081", "sip:127.0.0.1:5082"]
    assert await workers[0].live_instances() == 1
    view = await workers[0].read_view()
    assert not view.gone("sip:127.0.0.1:5082", view.read_at)
    # The machine goes silent: a survivor closes both workers' calls in one claim.
    await pg_pool.execute(
        "UPDATE cluster_instances SET last_seen = now() - interval '5 s' WHERE instance = $1",
        machine,
    )
    (dead,) = await Liveness(pg_pool, cluster("gw-survivor"), cdr_instance="gw-survivor").reap()
    assert (dead.instance, dead.calls_closed) == (machine, 6)
    ended = await pg_pool.fetch(
        "SELECT DISTINCT ended_by::text FROM cdr WHERE gateway_instance = ANY($1)", names
    )
    assert [r["ended_by"] for r in ended] == [EndedBy.INSTANCE_DEAD.value]
