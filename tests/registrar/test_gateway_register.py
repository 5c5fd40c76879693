"""End to end: the gateway on loopback with the registrar attached, real SIP clients.

SIPp registers with digest authentication (uac-register*.xml); a raw UDP client
compares the wire responses for a wrong password and an unknown user; a short
registration expires and disappears from lookups.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
import pytest_asyncio

from gateway.config import parse_config
from gateway.registrar import Algorithm, BindingStore, Registrar
from gateway.service.server import Gateway
from gateway.sip.events import Endpoint
from gateway.sip.message import Response
from gateway.sip.parser import parse_message
from tests.interop.sipp import run_uac
from tests.registrar.helpers import REALM, authorize, config, header_shape, register

pytestmark = [pytest.mark.postgres]

HOST = "127.0.0.1"


@dataclass
class Running:
    gateway: Gateway
    registrar: Registrar
    store: BindingStore
    endpoint: Endpoint


@pytest_asyncio.fixture
async def running(pg_pool: asyncpg.Pool) -> AsyncIterator[Running]:
    store = BindingStore(pg_pool)
    await store.set_password("alice", REALM, "s3cret")
    # SIPp 3.6 only answers MD5 and reads the algorithm of the first challenge.
    registrar = Registrar(
        config(algorithms=(Algorithm.MD5, Algorithm.SHA_256), min_expires=1), store
    )
    gateway_config = parse_config(
        {
            "sip": {"listen": [{"transport": "UDP", "host": HOST, "port": 0}]},
            "upstream": {"uri": "sip:127.0.0.1:9"},
        }
    )
    gateway = Gateway(gateway_config, services={"REGISTER": registrar.handle})
    (endpoint,) = await gateway.start()
    try:
        yield Running(gateway, registrar, store, endpoint)
    finally:
        await gateway.close()


async def _sipp(running: Running, scenario: str, user: str, password: str, expires: int) -> str:
    result = await run_uac(
        scenario,
        (HOST, running.endpoint.port),
        service=user,
        timeout=10,
        extra_args=[
            "-au",
            user,
            "-ap",
            password,
            # SIPp's digest-uri defaults to sip:remote_ip:remote_port, not the
            # Request-URI; the registrar checks it names the Request-URI's resource
            # (RFC 7616 3.4.6), so tell SIPp the real one.
            "-auth_uri",
            REALM,
            "-set",
            "domain",
            REALM,
            "-set",
            "expires",
            str(expires),
        ],
    )
    assert result.ok, result.describe()
    return result.describe()


@pytest.mark.sipp
@pytest.mark.asyncio
async def test_sipp_registers_with_md5_digest(running: Running) -> None:
    await _sipp(running, "uac-register", "alice", "s3cret", 600)
    (binding,) = await running.registrar.lookup(f"sip:alice@{REALM}")
    assert binding.received.transport == "UDP"
    assert binding.received.host == HOST
    assert binding.contact == f"sip:alice@{HOST}:{binding.received.port};transport=UDP"
    assert binding.user_agent == "SIPp uac-register"
    assert 590 <= binding.expires <= 600


@pytest.mark.sipp
@pytest.mark.asyncio
async def test_sipp_wrong_password_and_unknown_user_are_refused(running: Running) -> None:
    await _sipp(running, "uac-register-expect-403", "alice", "wrong", 600)
    await _sipp(running, "uac-register-expect-403", "nobody", "whatever", 600)
    assert await running.registrar.lookup(f"sip:alice@{REALM}") == []
    assert await running.registrar.lookup(f"sip:nobody@{REALM}") == []


@pytest.mark.sipp
@pytest.mark.asyncio
async def test_sipp_short_registration_expires(running: Running) -> None:
    await _sipp(running, "uac-register", "alice", "s3cret", 1)
    assert len(await running.registrar.lookup(f"sip:alice@{REALM}")) == 1
    await asyncio.sleep(1.3)
    assert await running.registrar.lookup(f"sip:alice@{REALM}") == []
    assert await running.store.purge_expired() == 1


class UdpClient:
    """A bare UDP socket speaking SIP to the gateway."""

    def __init__(self, target: Endpoint) -> None:
        self.target = (target.host, target.port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)

    async def exchange(self, data: bytes) -> Response:
        loop = asyncio.get_running_loop()
        await loop.sock_sendto(self.sock, data, self.target)
        while True:
            reply = await asyncio.wait_for(loop.sock_recv(self.sock, 65535), 5)
            message = parse_message(reply)
            assert isinstance(message, Response)
            if message.status >= 200:
                return message

    def close(self) -> None:
        self.sock.close()


async def _register_over_udp(
    client: UdpClient, user: str, password: str
) -> tuple[Response, Response]:
    hostport = f"{HOST}:{client.sock.getsockname()[1]}"
    request = register(user, contacts=(f"<sip:{user}@{hostport}>",), via=hostport)
    challenge = await client.exchange(request.serialize())
    authed = authorize(request, challenge, username=user, password=password, algorithm="MD5")
    return challenge, await client.exchange(authed.serialize())


@pytest.mark.asyncio
async def test_wire_responses_for_wrong_password_and_unknown_user_are_identical(
    running: Running,
) -> None:
    client = UdpClient(running.endpoint)
    try:
        challenge_a, wrong = await _register_over_udp(client, "alice", "wrong")
        challenge_b, unknown = await _register_over_udp(client, "mallory", "whatever")
        _, ok = await _register_over_udp(client, "alice", "s3cret")
    finally:
        client.close()
    assert challenge_a.status == challenge_b.status == 401
    assert header_shape(challenge_a) == [
        (n, v.replace("mallory", "alice")) for n, v in header_shape(challenge_b)
    ]
    assert (wrong.status, wrong.reason) == (unknown.status, unknown.reason) == (403, "Forbidden")
    assert header_shape(wrong) == [
        (n, v.replace("mallory", "alice")) for n, v in header_shape(unknown)
    ]
    # Same length on the wire too, user names aside ("mallory" is two letters longer).
    assert len(wrong.serialize()) == len(unknown.serialize()) - 2 * 2
    assert ok.status == 200


@pytest.mark.interop
@pytest.mark.asyncio
async def test_pyvoip_phone_registers(pg_pool: asyncpg.Pool) -> None:
    # pyVoIP (GPLv3, tests only) answers MD5 without qop (RFC 2069 form) and keeps the
    # last WWW-Authenticate it parsed: MD5 must be offered, and accept_rfc2069 on.
    from pyVoIP.VoIP import PhoneStatus, VoIPPhone

    from tests.interop.sipp import free_port

    store = BindingStore(pg_pool)
    await store.set_password("carol", REALM, "c4rol")
    registrar = Registrar(config(accept_rfc2069=True), store)
    gateway_config = parse_config(
        {
            "sip": {"listen": [{"transport": "UDP", "host": HOST, "port": 0}]},
            "upstream": {"uri": "sip:127.0.0.1:9"},
        }
    )
    gateway = Gateway(gateway_config, services={"REGISTER": registrar.handle})
    (endpoint,) = await gateway.start()
    phone_port = free_port(HOST)
    rtp_port = free_port(HOST)
    phone = VoIPPhone(
        HOST,
        endpoint.port,
        "carol",
        "c4rol",
        myIP=HOST,
        sipPort=phone_port,
        rtpPortLow=rtp_port,
        rtpPortHigh=rtp_port + 1,
    )
    try:
        await asyncio.to_thread(phone.start)
        for _ in range(50):
            if phone.get_status() == PhoneStatus.REGISTERED:
                break
            await asyncio.sleep(0.1)
        assert phone.get_status() == PhoneStatus.REGISTERED
        # pyVoIP registers To: sip:carol@<server>, the gateway's address.
        (binding,) = await registrar.lookup(f"sip:carol@{HOST}")
        assert binding.received == Endpoint("UDP", HOST, phone_port)
        assert binding.instance_id is not None
        assert binding.user_agent is not None
        assert binding.user_agent.startswith("pyVoIP")
    finally:
        await asyncio.to_thread(phone.stop)
        await gateway.close()
