"""Registrar.handle and BindingStore against the real (embedded) PostgreSQL."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from gateway.registrar import BindingStore, Registrar, route_to_binding
from gateway.registrar.digest import Algorithm, compute_ha1
from gateway.sip.events import Endpoint
from gateway.sip.headers import all_contacts, parse_auth
from gateway.sip.message import Request, Response
from tests.registrar.helpers import (
    REALM,
    SOURCE,
    Clock,
    authorize,
    config,
    event,
    header_shape,
    load_rfc4475,
    register,
)

pytestmark = pytest.mark.postgres


@pytest_asyncio.fixture
async def store(pg_pool: asyncpg.Pool) -> AsyncIterator[BindingStore]:
    store = BindingStore(pg_pool)
    await store.set_password("alice", REALM, "s3cret")
    await store.set_password("bob", REALM, "b0b")
    await store.set_password("watson", "example.com", "elementary")
    await store.set_password("user", "example.com", "pw")
    yield store


def _registrar(store: BindingStore, **overrides: object) -> Registrar:
    return Registrar(config(**overrides), store)


async def _auth_register(
    registrar: Registrar,
    request: Request,
    *,
    source: Endpoint = SOURCE,
    **kwargs: object,
) -> Response:
    """REGISTER, take the 401, answer it, return the final response."""
    challenge = await registrar.handle(event(request, source))
    assert challenge.status == 401, challenge
    authed = authorize(request, challenge, **kwargs)  # type: ignore[arg-type]
    return await registrar.handle(event(authed, source))


@pytest.mark.asyncio
async def test_credentials_are_stored_as_ha1(store: BindingStore, pg_pool: asyncpg.Pool) -> None:
    rows = await pg_pool.fetch(
        "SELECT algorithm, ha1 FROM registrar_credentials WHERE username = 'alice'"
    )
    assert {r["algorithm"]: r["ha1"] for r in rows} == {
        "SHA-256": compute_ha1("alice", REALM, "s3cret", Algorithm.SHA_256),
        "MD5": compute_ha1("alice", REALM, "s3cret", Algorithm.MD5),
    }
    assert not any("s3cret" in r["ha1"] for r in rows)
    assert await store.get_ha1("nobody", REALM, Algorithm.MD5) is None
    with pytest.raises(asyncpg.CheckViolationError):
        await store.set_ha1("eve", REALM, {Algorithm.MD5: "not-hex"})
    assert await store.delete_credentials("bob", REALM) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
async def test_register_challenge_then_200_with_binding(
    store: BindingStore, algorithm: str
) -> None:
    registrar = _registrar(store)
    request = register(
        contacts=(
            '"Alice" <sip:alice@192.0.2.10:5070;transport=udp>;q=0.7;'
            '+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1',
        ),
        extra=(("User-Agent", "TestPhone/1.0"),),
    )
    challenge = await registrar.handle(event(request))
    assert challenge.status == 401
    schemes = [parse_auth(v) for v in challenge.headers.get_lines("WWW-Authenticate")]
    assert [p["algorithm"] for _, p in schemes] == ["SHA-256", "MD5"]
    ok = await registrar.handle(event(authorize(request, challenge, algorithm=algorithm)))
    assert ok.status == 200, ok
    assert ok.headers.get("Date", "").endswith("GMT")
    (contact,) = ok.headers.get_lines("Contact")
    parsed = all_contacts(ok.headers)
    assert parsed != "*"
    assert parsed[0].uri == "sip:alice@192.0.2.10:5070;transport=udp"
    assert parsed[0].param("q") == "0.7"
    assert parsed[0].param("reg-id") == "1"
    assert 595 <= int(parsed[0].param("expires") or 0) <= 600
    (binding,) = await registrar.lookup("sip:alice@voip.example.fi;user=phone")
    assert binding.aor == "sip:alice@voip.example.fi"
    assert binding.contact == "sip:alice@192.0.2.10:5070;transport=udp"
    assert binding.display_name == "Alice"
    assert binding.received == SOURCE
    assert binding.user_agent == "TestPhone/1.0"
    assert binding.instance_id == "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"
    assert binding.reg_id == 1
    assert binding.q == pytest.approx(0.7)
    assert (binding.call_id, binding.cseq) == ("call-1", 1)
    route = route_to_binding(binding)
    assert route.targets == (SOURCE,)
    assert route.request_uri == "sip:alice@192.0.2.10:5070;transport=udp"


@pytest.mark.asyncio
async def test_wrong_password_and_unknown_user_get_the_same_answer(store: BindingStore) -> None:
    registrar = _registrar(store)
    wrong = await _auth_register(registrar, register(), password="guess")
    unknown = await _auth_register(
        registrar, register("mallory", contacts=("<sip:mallory@192.0.2.66>",)), username="mallory"
    )
    assert wrong.status == unknown.status == 403
    assert (wrong.reason, header_shape(wrong)) == (
        unknown.reason,
        [(n, v.replace("mallory", "alice")) for n, v in header_shape(unknown)],
    )
    assert "WWW-Authenticate" not in wrong.headers
    assert await registrar.lookup("sip:alice@voip.example.fi") == []


@pytest.mark.asyncio
async def test_regaut01_unknown_scheme_gets_a_digest_challenge(store: BindingStore) -> None:
    response = await _registrar(store, realm="example.com").handle(
        event(load_rfc4475("regaut01.dat"))
    )
    assert response.status == 401
    assert all(v.startswith("Digest ") for v in response.headers.get_lines("WWW-Authenticate"))


@pytest.mark.asyncio
async def test_unksm2_to_not_sip_is_400_before_authentication(store: BindingStore) -> None:
    response = await _registrar(store).handle(event(load_rfc4475("unksm2.dat")))
    assert response.status == 400
    assert "WWW-Authenticate" not in response.headers


@pytest.mark.asyncio
async def test_rfc4475_contacts_are_stored_as_written(store: BindingStore) -> None:
    registrar = _registrar(store, realm="example.com")
    # regescrt: escaped URI headers stay in the URI.
    ok = await _auth_register(
        registrar, load_rfc4475("regescrt.dat"), username="user", password="pw"
    )
    assert ok.status == 200, ok
    # L:0 plus no Expires: the default interval applies.
    (binding,) = await registrar.lookup("sip:user@example.com")
    assert binding.contact == "sip:user@example.com?Route=%3Csip:sip.example.com%3E"
    assert ok.headers.get("Contact", "").startswith(
        "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>;expires="
    )
    # The routing helper drops URI headers from the Request-URI (RFC 3261 19.1.1).
    assert route_to_binding(binding).request_uri == "sip:user@example.com"
    # cparam01 (addr-spec form): ";unknownparam" is a Contact header parameter.
    ok = await _auth_register(
        registrar, load_rfc4475("cparam01.dat"), username="watson", password="elementary"
    )
    assert ok.status == 200, ok
    (b1,) = await registrar.lookup("sip:watson@example.com")
    assert (b1.contact, b1.params) == ("sip:+19725552222@gw1.example.net", ";unknownparam")
    # cparam02 (name-addr form): ";unknownparam" is a URI parameter. RFC 3261 19.1.4:
    # a parameter in one URI only is ignored, so it is the same binding, refreshed.
    ok = await _auth_register(
        registrar, load_rfc4475("cparam02.dat"), username="watson", password="elementary"
    )
    assert ok.status == 200, ok
    (b2,) = await registrar.lookup("sip:watson@example.com")
    assert (b2.contact, b2.params) == ("sip:+19725552222@gw1.example.net;unknownparam", "")
    assert b2.id == b1.id
    assert ok.headers.get("Contact", "").startswith(
        "<sip:+19725552222@gw1.example.net;unknownparam>;expires="
    )


@pytest.mark.asyncio
async def test_interval_too_brief_and_cap(store: BindingStore) -> None:
    registrar = _registrar(store, min_expires=120, max_expires=1800, default_expires=900)
    brief = await _auth_register(registrar, register(expires=30))
    assert brief.status == 423
    assert brief.headers.get("Min-Expires") == "120"
    capped = await _auth_register(registrar, register(expires=99999, cseq=2))
    assert capped.status == 200
    (binding,) = await registrar.lookup("sip:alice@voip.example.fi")
    assert 1795 <= binding.expires <= 1800
    # The Contact's expires parameter wins over the Expires header (RFC 3261 10.2.1.1).
    param = await _auth_register(
        registrar,
        register(contacts=("<sip:alice@192.0.2.10:5070>;expires=300",), expires=1000, cseq=3),
    )
    assert param.status == 200
    assert all_contacts(param.headers)[0].param("expires") in {"300", "299"}


@pytest.mark.asyncio
async def test_call_id_and_cseq_ordering(store: BindingStore) -> None:
    registrar = _registrar(store)
    assert (await _auth_register(registrar, register(cseq=5))).status == 200
    # Same Call-ID, CSeq not higher: "the update MUST be aborted" (RFC 3261 10.3 step 7).
    stale = await _auth_register(registrar, register(cseq=5, expires=0))
    assert stale.status == 400
    assert len(await registrar.lookup("sip:alice@voip.example.fi")) == 1
    # Another Call-ID (the phone rebooted) may update whatever its CSeq.
    rebooted = await _auth_register(registrar, register(call_id="call-2", cseq=1, expires=900))
    assert rebooted.status == 200
    (binding,) = await registrar.lookup("sip:alice@voip.example.fi")
    assert (binding.call_id, binding.cseq) == ("call-2", 1)
    assert binding.expires > 600


@pytest.mark.asyncio
async def test_several_contacts_query_and_wildcard_removal(store: BindingStore) -> None:
    registrar = _registrar(store)
    two = register(contacts=("<sip:alice@192.0.2.10:5070>;q=0.2", "<sip:alice@192.0.2.11>;q=0.9"))
    assert (await _auth_register(registrar, two)).status == 200
    bindings = await registrar.lookup("sip:alice@voip.example.fi")
    assert [b.contact for b in bindings] == ["sip:alice@192.0.2.11", "sip:alice@192.0.2.10:5070"]
    # A REGISTER without Contact is a query: it lists the bindings and changes none.
    query = await _auth_register(registrar, register(contacts=(), expires=None, cseq=2))
    assert query.status == 200
    assert len(query.headers.get_lines("Contact")) == 2
    # "*" needs Expires: 0: a syntax rule, so checked before authentication.
    bad = await registrar.handle(event(register(contacts=("*",), expires=60, cseq=3)))
    assert bad.status == 400
    # "*" with a stale CSeq of the same Call-ID fails and removes nothing.
    old = await _auth_register(registrar, register(contacts=("*",), expires=0, cseq=1))
    assert old.status == 400
    assert len(await registrar.lookup("sip:alice@voip.example.fi")) == 2
    gone = await _auth_register(registrar, register(contacts=("*",), expires=0, cseq=4))
    assert gone.status == 200
    assert "Contact" not in gone.headers
    assert await registrar.lookup("sip:alice@voip.example.fi") == []


@pytest.mark.asyncio
async def test_user_may_register_only_its_own_aor(store: BindingStore) -> None:
    registrar = _registrar(store)
    request = register("bob", contacts=("<sip:bob@192.0.2.12>",))
    response = await _auth_register(registrar, request, username="alice", password="s3cret")
    assert response.status == 403
    assert await registrar.lookup("sip:bob@voip.example.fi") == []


@pytest.mark.asyncio
async def test_domains_are_enforced(store: BindingStore) -> None:
    registrar = _registrar(store, domains=("voip.example.fi",))
    response = await registrar.handle(event(register(domain="other.example")))
    assert response.status == 404
    assert (await _auth_register(registrar, register())).status == 200


@pytest.mark.asyncio
async def test_expired_nonce_gets_stale_true(store: BindingStore) -> None:
    clock = Clock()
    registrar = Registrar(config(nonce_lifetime=30), store, clock=clock)
    request = register()
    challenge = await registrar.handle(event(request))
    clock.now += 31
    stale = await registrar.handle(event(authorize(request, challenge)))
    assert stale.status == 401
    assert all(
        parse_auth(v)[1].get("stale") == "true" for v in stale.headers.get_lines("WWW-Authenticate")
    )
    ok = await registrar.handle(event(authorize(request, stale)))
    assert ok.status == 200


@pytest.mark.asyncio
async def test_replayed_credentials_are_not_accepted_twice(store: BindingStore) -> None:
    registrar = _registrar(store)
    request = register()
    challenge = await registrar.handle(event(request))
    authed = authorize(request, challenge)
    assert (await registrar.handle(event(authed))).status == 200
    replay = await registrar.handle(event(authed))
    assert replay.status == 401
    assert "stale=true" in (replay.headers.get("WWW-Authenticate") or "")


@pytest.mark.asyncio
async def test_nat_rebinding_with_instance_and_reg_id_replaces_binding(
    store: BindingStore,
) -> None:
    registrar = _registrar(store)
    instance = '+sip.instance="<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>";reg-id=1'
    first = register(contacts=(f"<sip:alice@10.0.0.5:5060>;{instance}",))
    assert (await _auth_register(registrar, first)).status == 200
    moved = Endpoint("UDP", "127.0.0.1", 40001)
    second = register(contacts=(f"<sip:alice@10.0.0.5:6060>;{instance}",), cseq=2)
    assert (await _auth_register(registrar, second, source=moved)).status == 200
    (binding,) = await registrar.lookup("sip:alice@voip.example.fi")
    assert binding.contact == "sip:alice@10.0.0.5:6060"
    assert binding.received == moved


@pytest.mark.asyncio
async def test_expired_bindings_are_invisible_then_purged(
    store: BindingStore, pg_pool: asyncpg.Pool
) -> None:
    registrar = _registrar(store, min_expires=1)
    assert (await _auth_register(registrar, register(expires=1))).status == 200
    assert len(await registrar.lookup("sip:alice@voip.example.fi")) == 1
    await asyncio.sleep(1.2)
    assert await registrar.lookup("sip:alice@voip.example.fi") == []
    assert await pg_pool.fetchval("SELECT count(*) FROM registrar_bindings") == 1
    assert await store.purge_expired() == 1
    assert await pg_pool.fetchval("SELECT count(*) FROM registrar_bindings") == 0


@pytest.mark.asyncio
async def test_purging_task_runs_and_stops(store: BindingStore, pg_pool: asyncpg.Pool) -> None:
    registrar = _registrar(store, min_expires=1, purge_interval=1.0)
    assert (await _auth_register(registrar, register(expires=1))).status == 200
    async with registrar.purging():
        for _ in range(40):
            await asyncio.sleep(0.1)
            if await pg_pool.fetchval("SELECT count(*) FROM registrar_bindings") == 0:
                break
    assert await pg_pool.fetchval("SELECT count(*) FROM registrar_bindings") == 0


@pytest.mark.asyncio
async def test_concurrent_registers_of_one_contact_make_one_binding(
    store: BindingStore,
) -> None:
    registrar = _registrar(store)
    # Two "instances" (two Registrar objects on one database) race on the same AoR.
    other = _registrar(store)
    requests = [register(call_id=f"race-{i}") for i in range(6)]
    challenges = [await registrar.handle(event(r)) for r in requests]
    authed = [authorize(r, c) for r, c in zip(requests, challenges, strict=True)]
    responses = await asyncio.gather(
        *((registrar if i % 2 else other).handle(event(a)) for i, a in enumerate(authed))
    )
    assert [r.status for r in responses] == [200] * 6
    assert len(await registrar.lookup("sip:alice@voip.example.fi")) == 1


@pytest.mark.asyncio
async def test_database_failure_is_503(store: BindingStore, pg_pool: asyncpg.Pool) -> None:
    registrar = _registrar(store)
    request = register()
    challenge = await registrar.handle(event(request))
    await pg_pool.execute("ALTER TABLE registrar_bindings RENAME TO registrar_bindings_x")
    response = await registrar.handle(event(authorize(request, challenge)))
    assert response.status == 503
    assert response.headers.get("Retry-After") == "5"


@pytest.mark.asyncio
async def test_lookup_rejects_non_sip(store: BindingStore) -> None:
    with pytest.raises(ValueError, match="not a SIP URI"):
        await _registrar(store).lookup("tel:+358401234567")


TRUSTED = (ipaddress.ip_network("127.0.0.0/29"),)
PBX = Endpoint("UDP", "127.0.0.2", 5060)


@pytest.mark.asyncio
async def test_register_from_a_trusted_peer_is_403_unless_configured(
    store: BindingStore, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 19: a REGISTER from the PBX's address is password guessing (or a spoofed
    # source), never a phone: 403, not a challenge, and no authentication failure.
    failures: list[str] = []
    refusing = Registrar(
        config(),
        store,
        trusted_peers=TRUSTED,
        on_auth_failure=lambda source, user: failures.append(source.host),
    )
    with caplog.at_level("INFO", logger="voipgw.registrar"):
        refused = await refusing.handle(event(register(), PBX))
    assert (refused.status, refused.reason) == (403, "Forbidden (trusted peer address)")
    assert "WWW-Authenticate" not in refused.headers
    assert "REGISTER from 127.0.0.2:5060 refused: a trusted peer's address" in caplog.text
    # A phone outside the trusted networks is challenged as ever.
    outside = Endpoint("UDP", "127.0.0.9", 5060)
    assert (await refusing.handle(event(register(), outside))).status == 401
    allowing = Registrar(config(register_from_trusted_peers=True), store, trusted_peers=TRUSTED)
    assert (await _auth_register(allowing, register(), source=PBX)).status == 200
    assert failures == []
