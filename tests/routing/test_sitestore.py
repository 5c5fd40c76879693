"""The routing data in PostgreSQL: import/export round trip, all-or-nothing import."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress

import asyncpg
import pytest

from gateway.service.sitestore import export_sites, import_sites, load_directory
from routing.classify import classify_call
from routing.model import CallClass, CallContext, Customer, Subscriber
from routing.sites_export import dump_sites
from routing.sites_file import SitesData
from tests.held_copy import HELD_LOCK, copy_held, hold_inserts
from tests.routing.data import demo_data

pytestmark = pytest.mark.postgres


@pytest.mark.asyncio
async def test_import_export_round_trip(pg_pool: asyncpg.Pool) -> None:
    data = demo_data()
    async with pg_pool.acquire() as con:
        summary = await import_sites(con, data)
        exported = await export_sites(con)
    assert summary.sites == len(data.sites)
    assert summary.networks == sum(len(s.networks) for s in data.sites)
    assert exported == data.sorted()
    assert dump_sites(exported, "toml") == dump_sites(data, "toml")
    # Network column is a real cidr: the database can answer containment too.
    async with pg_pool.acquire() as con:
        site = await con.fetchval(
            "SELECT site_id FROM routing_site_networks WHERE $1::inet <<= network",
            ipaddress.ip_address("fd00:5060:10::7"),
        )
    assert site == "setera-espoo"


@pytest.mark.asyncio
async def test_reimport_replaces_everything(pg_pool: asyncpg.Pool) -> None:
    data = demo_data()
    smaller = dataclasses.replace(
        data,
        subscribers=tuple(s for s in data.subscribers if s.sip_user != "frank"),
    )
    async with pg_pool.acquire() as con:
        await import_sites(con, data)
        await import_sites(con, smaller)
        exported = await export_sites(con)
    assert {s.sip_user for s in exported.subscribers} == {s.sip_user for s in smaller.subscribers}


@pytest.mark.asyncio
async def test_failing_import_changes_nothing(pg_pool: asyncpg.Pool) -> None:
    data = demo_data()
    # Bypasses file validation: a subscriber of a customer that does not exist, listed
    # after valid rows, so a non-transactional import would have written those.
    broken = dataclasses.replace(
        data,
        customers=(*data.customers, Customer(id="zz-new", company="New")),
        subscribers=(
            *data.subscribers,
            Subscriber(e164="+358409999999", sip_user="zz-ghost", customer_id="nobody"),
        ),
    )
    async with pg_pool.acquire() as con:
        await import_sites(con, data)
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await import_sites(con, broken)
        exported = await export_sites(con)
    assert exported == data.sorted()


@pytest.mark.asyncio
async def test_load_directory_classifies(pg_pool: asyncpg.Pool) -> None:
    async with pg_pool.acquire() as con:
        await import_sites(con, demo_data())
        directory = await load_directory(con)
    call = CallContext(
        dialled="112",
        source=ipaddress.ip_address("127.0.20.9"),
        subscriber=directory.subscribers["alice"],
    )
    result = classify_call(call, directory)
    assert result.call_class is CallClass.OFFICE
    assert result.site is not None and result.site.id == "setera-espoo"


@pytest.mark.asyncio
async def test_empty_database_exports_empty(pg_pool: asyncpg.Pool) -> None:
    async with pg_pool.acquire() as con:
        assert await export_sites(con) == SitesData()


@pytest.mark.asyncio
async def test_security_desk_column(pg_pool: asyncpg.Pool) -> None:
    """cdr/migrations/0500_security_desk.sql: nullable, loaded into the directory, and
    what is plainly no SIP URI refused by the database itself."""
    async with pg_pool.acquire() as con:
        await import_sites(con, demo_data())
        directory = await load_directory(con)
        assert directory.customers["setera"].security_desk == "sip:desk@127.0.70.1:5070"
        assert directory.customers["esimerkki"].security_desk is None
        with pytest.raises(asyncpg.CheckViolationError):
            await con.execute(
                "UPDATE routing_customers SET security_desk = 'https://x' WHERE id = 'setera'"
            )


@pytest.mark.asyncio
async def test_an_import_whose_connection_is_lost_mid_copy_fails_at_once(
    pg_dsn: str, pg_pool: asyncpg.Pool
) -> None:
    # asyncpg alone left this COPY waiting for ever (cdr.db.bounded_by_connection).
    # Subscriber rows are held (tests/held_copy.py): the backend stops reading at the
    # first of 30,000.
    data = demo_data()
    model = data.subscribers[0]
    many = tuple(
        dataclasses.replace(model, e164=f"+35890{i:07d}", sip_user=f"user{i}")
        for i in range(30_000)
    )
    async with pg_pool.acquire() as con:
        await import_sites(con, data)
        await hold_inserts(con, "routing_subscribers")
        await con.execute("SELECT pg_advisory_lock($1)", HELD_LOCK)
        importer = await asyncpg.connect(pg_dsn)
        backend = await importer.fetchval("SELECT pg_backend_pid()")
        task = asyncio.create_task(
            import_sites(importer, dataclasses.replace(data, subscribers=many))
        )
        await copy_held(con, backend)
        await con.execute("SELECT pg_terminate_backend($1)", backend)
        async with asyncio.timeout(5):
            with pytest.raises(asyncpg.ConnectionDoesNotExistError):
                await task
        await con.execute("SELECT pg_advisory_unlock($1)", HELD_LOCK)
        assert await export_sites(con) == data.sorted()
