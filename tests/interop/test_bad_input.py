"""Bad input over the wire: truncated, oversized and binary datagrams, and a broken
TCP stream, get 400/513 or are dropped, are counted, and never stop the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

import pytest

from tests.interop.gateway import gateway_config, running_gateway

pytestmark = pytest.mark.interop

GOOD = (
    "OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{tag};rport\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag={tag}\r\nTo: <sip:127.0.0.1>\r\n"
    "Call-ID: {tag}@probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


class Probe(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.event = asyncio.Event()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.received.append(data)
        self.event.set()


async def exchange(transport, probe: Probe, data: bytes, target: tuple[str, int]) -> bytes | None:
    probe.received.clear()
    probe.event.clear()
    transport.sendto(data, target)
    try:
        await asyncio.wait_for(probe.event.wait(), 1.0)
    except TimeoutError:
        return None
    return probe.received[0]


@pytest.mark.asyncio
async def test_bad_datagrams_are_answered_or_dropped_and_counted() -> None:
    doc = gateway_config(host="127.0.0.1", upstream="sip:127.0.0.1:9")
    async with running_gateway(doc) as (gateway, _):
        target_endpoint = next(e for e in gateway.transports.local if e.transport == "UDP")
        target = (target_endpoint.host, target_endpoint.port)
        loop = asyncio.get_running_loop()
        transport, probe = await loop.create_datagram_endpoint(
            Probe, local_addr=("127.0.0.1", 0), family=socket.AF_INET
        )
        port = transport.get_extra_info("sockname")[1]
        good = GOOD.format(port=port, tag="ok1").encode()
        try:
            # Truncated: the header section never ends -> 400 (Via is readable).
            truncated = good[: good.index(b"Content-Length")]
            answer = await exchange(transport, probe, truncated, target)
            assert answer is not None and answer.startswith(b"SIP/2.0 400 ")
            # Oversized header section (> MAX_HEAD_SIZE) -> 513 Message Too Large.
            filler = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"b" * 1000) for i in range(40))
            oversized = good.replace(b"Content-Length", filler + b"Content-Length")
            answer = await exchange(transport, probe, oversized, target)
            assert answer is not None and answer.startswith(b"SIP/2.0 513 "), answer
            # Binary garbage: nothing to answer -> dropped.
            assert await exchange(transport, probe, os.urandom(600), target) is None
            # A response nobody asked for: dropped.
            stray = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKx\r\n\r\n"
            assert await exchange(transport, probe, stray, target) is None
            # Still up: a good OPTIONS gets 200.
            answer = await exchange(
                transport, probe, GOOD.format(port=port, tag="ok2").encode(), target
            )
            assert answer is not None and answer.startswith(b"SIP/2.0 200 ")
        finally:
            transport.close()
        stats = gateway.layer.stats
        assert stats["parse_error"] >= 3
        assert stats["stateless_400"] >= 1
        assert stats["stateless_513"] >= 1
        assert stats["dropped_unparsable"] + stats["dropped_bad_response"] >= 1


@pytest.mark.asyncio
async def test_broken_tcp_stream_is_closed_and_gateway_stays_up() -> None:
    doc = gateway_config(host="127.0.0.1", upstream="sip:127.0.0.1:9")
    async with running_gateway(doc) as (gateway, _):
        tcp = next(e for e in gateway.transports.local if e.transport == "TCP")
        reader, writer = await asyncio.open_connection(tcp.host, tcp.port)
        # A head with no Content-Length on a stream: framing is lost, the gateway
        # closes the connection (RFC 3261 18.3).
        writer.write(
            b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKa\r\n\r\n"
        )
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        # A well-framed OPTIONS on a new connection is answered.
        reader, writer = await asyncio.open_connection(tcp.host, tcp.port)
        writer.write(GOOD.format(port=5060, tag="tcp").replace("UDP", "TCP").encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 5)
        assert line.startswith(b"SIP/2.0 200 ")
        writer.close()
        assert gateway.transports.stats["stream_framing_error"] == 1


@pytest.mark.asyncio
async def test_call_to_a_closed_upstream_port_fails_at_once() -> None:
    # The PBX is down (nothing listens on its port): the kernel's ICMP port
    # unreachable is a transport error (RFC 3261 8.1.3.1), so the caller gets the
    # B2BUA's 502 for an unreachable next hop at once instead of a 408 after Timer B.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe_port:
        probe_port.bind(("127.0.0.1", 0))
        closed = probe_port.getsockname()[1]
    doc = gateway_config(host="127.0.0.1", upstream=f"sip:127.0.0.1:{closed}")
    async with running_gateway(doc) as (gateway, ended):
        target_endpoint = next(e for e in gateway.transports.local if e.transport == "UDP")
        loop = asyncio.get_running_loop()
        transport, probe = await loop.create_datagram_endpoint(
            Probe, local_addr=("127.0.0.1", 0), family=socket.AF_INET
        )
        port = transport.get_extra_info("sockname")[1]
        invite = (
            "INVITE sip:bob@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKdown;rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\n"
            "To: <sip:bob@127.0.0.1>\r\nCall-ID: down@probe\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:alice@127.0.0.1:{port}>\r\nContent-Length: 0\r\n\r\n"
        )
        try:
            started = loop.time()
            transport.sendto(invite.encode(), (target_endpoint.host, target_endpoint.port))
            final = None
            while final is None and loop.time() - started < 5:
                probe.event.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(probe.event.wait(), 0.5)
                for data in probe.received:
                    status = int(data.split(b" ", 2)[1])
                    if status >= 200:
                        final = (status, loop.time() - started)
            assert final is not None, probe.received
            status, seconds = final
            assert status == 502, probe.received[-1][:200]
            assert seconds < 1.0, seconds
            assert gateway.transports.stats["udp_unreachable"] >= 1
        finally:
            transport.close()
    assert [call.final_status for call in ended] == [502]


@pytest.mark.asyncio
@pytest.mark.parametrize("received", ["::1", "[::1]"])
async def test_via_received_ipv6_without_brackets_is_valid(received: str) -> None:
    """RFC 5118 4.5/4.6: ``received=::1`` (RFC 3261's own grammar, IPv6address) and
    ``received=[::1]`` are both valid; the first was answered 400. Without rport the
    answer goes to the received address and the sent-by port (RFC 3261 18.2.2)."""
    doc = gateway_config(host="::1", upstream="sip:[::1]:9")
    async with running_gateway(doc) as (gateway, _):
        local = next(e for e in gateway.transports.local if e.transport == "UDP")
        loop = asyncio.get_running_loop()
        transport, probe = await loop.create_datagram_endpoint(
            Probe, local_addr=("::1", 0), family=socket.AF_INET6
        )
        port = transport.get_extra_info("sockname")[1]
        request = (
            f"OPTIONS sip:[::1]:{local.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP [::1]:{port};received={received};branch=z9hG4bKrx{port}\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:probe@[::1]>;tag=rx\r\nTo: <sip:[::1]>\r\n"
            f"Call-ID: rx{port}@probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        try:
            answer = await exchange(transport, probe, request, (local.host, local.port))
        finally:
            transport.close()
    assert answer is not None and answer.startswith(b"SIP/2.0 200 "), answer
    assert f"received={received}".encode() in answer
