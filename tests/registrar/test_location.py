"""The location service with PostgreSQL up and away (gateway/registrar/location.py).

The database is the real (embedded) PostgreSQL; "away" is a store whose every call
fails as a refused connection does, so the same store comes back afterwards.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg
import pytest
import pytest_asyncio

from gateway.registrar import BindingStore, Registrar
from gateway.registrar.bindings import ExpiresPolicy, parse_register
from gateway.registrar.digest import Algorithm
from gateway.registrar.location import (
    BindingCache,
    LocationService,
    LocationUnavailable,
    aged,
)
from gateway.sip.events import Endpoint
from tests.registrar.helpers import REALM, Clock, authorize, config, event, register

pytestmark = pytest.mark.postgres

AOR = f"sip:alice@{REALM}"
PHONE_A = Endpoint("UDP", "127.0.0.1", 40001)
PHONE_B = Endpoint("UDP", "127.0.0.1", 40002)


class Switchable:
    """A store that fails like an unreachable server while ``up`` is False."""

    def __init__(self, store: BindingStore) -> None:
        self.store = store
        self.up = True

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if not self.up:
                raise ConnectionRefusedError(111, "Connection refused")
            return await method(*args, **kwargs)

        return call


@pytest_asyncio.fixture
async def store(pg_pool: asyncpg.Pool) -> AsyncIterator[BindingStore]:
    store = BindingStore(pg_pool)
    await store.set_password("alice", REALM, "s3cret")
    yield store


def service(switch: Switchable, **kwargs: Any) -> LocationService:
    # retry_interval 0: the first call after the database returns goes to it.
    return LocationService(cast(BindingStore, switch), retry_interval=0.0, **kwargs)


def update(contact: str, *, call_id: str, cseq: int = 1, expires: int = 600) -> Any:
    request = register(contacts=(f"<{contact}>",), call_id=call_id, cseq=cseq, expires=expires)
    return parse_register(request, policy=ExpiresPolicy())


CONTACT_A = "sip:alice@192.0.2.10:5070"
CONTACT_B = "sip:alice@192.0.2.11:5070"


# (database at lookup, this instance registered alice before the outage, alice
# registered again through this instance during the outage) -> contacts the lookup
# returns, or None for LocationUnavailable.
CASES = [
    ("down", "known", "no", [CONTACT_A]),
    ("down", "known", "yes", [CONTACT_B, CONTACT_A]),
    ("down", "unknown", "no", None),
    ("down", "unknown", "yes", [CONTACT_B]),
    ("back", "known", "no", [CONTACT_A]),
    ("back", "known", "yes", [CONTACT_B, CONTACT_A]),
    ("back", "unknown", "no", [CONTACT_A]),
    ("back", "unknown", "yes", [CONTACT_B, CONTACT_A]),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("database", "memory", "during", "expected"), CASES)
async def test_lookup_table(
    store: BindingStore,
    database: str,
    memory: str,
    during: str,
    expected: list[str] | None,
) -> None:
    switch = Switchable(store)
    location = service(switch)
    # Before the outage alice registers A: through this instance ("known"), or
    # through another instance on the same database, so this one never saw her.
    other = service(Switchable(store))
    first = location if memory == "known" else other
    await first.apply(update(CONTACT_A, call_id="before"), PHONE_A)

    switch.up = False
    if during == "yes":
        accepted = await location.apply(update(CONTACT_B, call_id="during"), PHONE_B)
        assert CONTACT_B in [b.contact for b in accepted]
        assert location.cache.has_pending(AOR)
    if database == "back":
        switch.up = True
        written = await location.write_through()
        assert written == (1 if during == "yes" else 0)
        assert not location.cache.has_pending(AOR)

    if expected is None:
        with pytest.raises(LocationUnavailable):
            await location.lookup(AOR)
    else:
        found = await location.lookup(AOR)
        assert [b.contact for b in found] == expected
        if CONTACT_B in expected:
            (b,) = [b for b in found if b.contact == CONTACT_B]
            assert b.received == PHONE_B
    # What PostgreSQL holds: A always; B once written through.
    in_db = sorted(b.contact for b in await store.lookup(AOR))
    written_b = during == "yes" and database == "back"
    assert in_db == sorted([CONTACT_A] + ([CONTACT_B] if written_b else []))


@pytest.mark.asyncio
async def test_expiry_is_honoured_in_memory(store: BindingStore) -> None:
    clock = Clock(time.time())
    switch = Switchable(store)
    location = service(switch, clock=clock)
    await location.apply(update(CONTACT_A, call_id="c", expires=120), PHONE_A)
    switch.up = False
    clock.now += 100
    (binding,) = await location.lookup(AOR)
    # expires_at came from the database's clock, a moment after ours.
    assert binding.expires in (20, 21)
    clock.now += 22
    with pytest.raises(LocationUnavailable):
        await location.lookup(AOR)


@pytest.mark.asyncio
async def test_write_through_counts_the_wait_against_the_expiry(store: BindingStore) -> None:
    clock = Clock(time.time())
    switch = Switchable(store)
    location = service(switch, clock=clock)
    switch.up = False
    await location.apply(update(CONTACT_A, call_id="c", expires=600), PHONE_A)
    clock.now += 100  # the database comes back 100 s later
    switch.up = True
    assert await location.write_through() == 1
    (row,) = await store.lookup(AOR)
    assert 490 <= row.expires <= 500  # 600 - 100, as the phone was told


@pytest.mark.asyncio
async def test_out_of_order_register_from_the_outage_is_dropped(store: BindingStore) -> None:
    switch = Switchable(store)
    location = service(switch)
    await location.apply(update(CONTACT_A, call_id="same", cseq=1), PHONE_A)
    switch.up = False
    await location.apply(update(CONTACT_A, call_id="same", cseq=2, expires=300), PHONE_B)
    # Meanwhile another instance took CSeq 3 of the same Call-ID.
    await service(Switchable(store)).apply(update(CONTACT_A, call_id="same", cseq=3), PHONE_A)
    switch.up = True
    assert await location.write_through() == 1
    (row,) = await store.lookup(AOR)
    assert row.cseq == 3
    assert row.received == PHONE_A


@pytest.mark.asyncio
async def test_a_hanging_database_is_waited_on_only_for_the_bound(store: BindingStore) -> None:
    location = LocationService(store, db_timeout=0.05)
    await location.apply(update(CONTACT_A, call_id="c"), PHONE_A)
    never = asyncio.Event()

    async def hang(*_: object) -> object:
        await never.wait()
        raise AssertionError("unreachable")

    store.lookup = hang  # type: ignore[method-assign,assignment]
    (binding,) = await location.lookup(AOR)
    assert binding.contact == CONTACT_A
    assert not location.database_available


@pytest.mark.asyncio
async def test_credentials_are_remembered_for_the_outage(store: BindingStore) -> None:
    switch = Switchable(store)
    location = service(switch)
    ha1 = await location.get_ha1("alice", REALM, Algorithm.MD5)
    assert ha1 is not None
    switch.up = False
    assert await location.get_ha1("alice", REALM, Algorithm.MD5) == ha1
    with pytest.raises(LocationUnavailable):
        await location.get_ha1("bob", REALM, Algorithm.MD5)


@pytest.mark.asyncio
async def test_a_refused_query_is_not_an_outage(store: BindingStore, pg_pool: asyncpg.Pool) -> None:
    location = LocationService(store)
    await pg_pool.execute("ALTER TABLE registrar_bindings RENAME TO registrar_bindings_x")
    with pytest.raises(asyncpg.UndefinedTableError):
        await location.lookup(AOR)
    assert location.database_available


@pytest.mark.asyncio
async def test_registrar_accepts_a_known_user_during_the_outage(store: BindingStore) -> None:
    switch = Switchable(store)
    registrar = Registrar(config(), cast(BindingStore, switch))
    registrar.location.retry_interval = 0.0
    request = register(call_id="r1")
    challenge = await registrar.handle(event(request))
    assert (await registrar.handle(event(authorize(request, challenge)))).status == 200

    switch.up = False
    again = register(call_id="r2", contacts=(f"<{CONTACT_B}>",))
    challenge = await registrar.handle(event(again))
    accepted = await registrar.handle(event(authorize(again, challenge)))
    assert accepted.status == 200
    assert len(accepted.headers.get_lines("Contact")) == 2
    assert {b.contact for b in await registrar.lookup(AOR)} == {CONTACT_A, CONTACT_B}

    # A user this instance never authenticated: it cannot tell, so 503, never 403.
    await store.set_password("bob", REALM, "b0b")
    stranger = register("bob", call_id="r3")
    challenge = await registrar.handle(event(stranger))
    refused = await registrar.handle(
        event(authorize(stranger, challenge, username="bob", password="b0b"))
    )
    assert refused.status == 503
    assert refused.headers.get("Retry-After") == "5"

    switch.up = True
    assert await registrar.location.write_through() == 1
    assert {b.contact for b in await store.lookup(AOR)} == {CONTACT_A, CONTACT_B}


def test_aged_shortens_each_expiry_and_removes_what_ran_out() -> None:
    request = register(
        contacts=("<sip:a@192.0.2.1>;expires=600", "<sip:b@192.0.2.2>;expires=60"),
        expires=None,
    )
    late = aged(parse_register(request, policy=ExpiresPolicy()), 90.5)
    assert [c.expires for c in late.contacts] == [510, 0]


def test_memory_never_claims_a_user_is_not_registered() -> None:
    cache = BindingCache()
    cache.remember(AOR, [], now=0.0)
    assert cache.current(AOR, 0.0) is None
    assert cache.remembered_aors() == []


@pytest.mark.asyncio
async def test_a_register_taken_during_the_outage_names_this_instance_as_flow_owner(
    pg_pool: asyncpg.Pool,
) -> None:
    owner = "sip:127.0.0.1:5071"
    store = BindingStore(pg_pool, flow_owner=owner)
    switch = Switchable(store)
    location = service(switch, flow_owner=owner)
    switch.up = False
    (remembered,) = await location.apply(update(CONTACT_A, call_id="o"), PHONE_A)
    assert remembered.flow_owner == owner
    switch.up = True
    assert await location.write_through() == 1
    (row,) = await store.lookup(AOR)
    assert row.flow_owner == owner
    # Written while the database is up, too; a store of another instance would name it.
    other = BindingStore(pg_pool, flow_owner="sip:127.0.0.1:5072")
    (row,) = await other.apply(update(CONTACT_A, call_id="o", cseq=2), PHONE_A)
    assert row.flow_owner == "sip:127.0.0.1:5072"
