"""Sends every RFC 4475 torture message over UDP to a running gateway and reports
what came back, as JSON on stdout: ``{"results": {file: [status, ...]}, "alive": bool}``.

Run inside a loopback-only network namespace (``deploy/loopback-only.sh``): the
messages name hosts in 192.0.2.0/24, this machine's own LAN. The test
(tests/interop/test_rfc4475_udp.py) runs this module that way and judges the results.

The torture messages carry Via sent-by ports 5060 (mostly, often implied) and 5050;
responses go to the source address and that port (RFC 3261 18.2.2), so the probe
sends from 127.0.0.1:5060 and also listens on 127.0.0.1:5050. The gateway's next hop
is a stateless responder answering every request with 404, so valid INVITEs get a
normal final answer quickly.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
from pathlib import Path

from gateway.sip.builders import build_response
from gateway.sip.errors import ParseError
from gateway.sip.message import Request
from gateway.sip.parser import parse_message
from tests.interop.gateway import gateway_config, running_gateway

TORTURE_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "rfc4475"
LISTEN_PORTS = (5060, 5050)


#: Call-ID of a raw message (long or compact form), read without the parser so a
#: response the parser rejects is still attributed to its message.
CALL_ID_RE = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
STATUS_RE = re.compile(rb"^SIP/2\.0 (\d{3}) ")


def call_id_of(data: bytes) -> bytes:
    match = CALL_ID_RE.search(data)
    return match.group(1) if match else b""


class Collector(asyncio.DatagramProtocol):
    """Records the status of every response, by Call-ID; sets ``got_final`` when a
    final response for ``expecting`` arrives."""

    def __init__(self) -> None:
        self.by_call_id: dict[bytes, list[int]] = {}
        self.got_final = asyncio.Event()
        self.expecting = b""
        self.unparsable = 0

    def datagram_received(self, data: bytes, addr: object) -> None:
        match = STATUS_RE.match(data)
        if match is None:
            return  # a request (the gateway's BYE/ACK ...): not a response to us
        try:
            parse_message(data)
        except ParseError:
            self.unparsable += 1  # what the gateway sent must itself be valid SIP
        status = int(match.group(1))
        call_id = call_id_of(data)
        self.by_call_id.setdefault(call_id, []).append(status)
        if status >= 200 and call_id == self.expecting:
            self.got_final.set()


class Upstream(asyncio.DatagramProtocol):
    """A stateless PBX stand-in: 404 to every request except ACK."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            message = parse_message(data)
        except ParseError:
            return
        if isinstance(message, Request) and message.method != "ACK":
            response = build_response(message, 404, to_tag="pbx")
            self.transport.sendto(response.serialize(), addr)


async def _answers_options(gateway, sender, collectors) -> bool:  # type: ignore[no-untyped-def]
    """The gateway still answers an OPTIONS after a torture message."""
    target = next(e for e in gateway.transports.local if e.transport == "UDP")
    collector = collectors[0][1]
    collector.expecting = b"alive@probe"
    collector.got_final.clear()
    options = (
        b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKalive\r\n"
        b"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:127.0.0.1>\r\n"
        b"Call-ID: alive@probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    sender.sendto(options, (target.host, target.port))
    try:
        await asyncio.wait_for(collector.got_final.wait(), 2.0)
    except TimeoutError:
        return False
    return 200 in collector.by_call_id.pop(b"alive@probe", [])


async def probe() -> dict[str, object]:
    loop = asyncio.get_running_loop()
    collectors = []
    for port in LISTEN_PORTS:
        transport, collector = await loop.create_datagram_endpoint(
            Collector, local_addr=("127.0.0.1", port), family=socket.AF_INET
        )
        collectors.append((transport, collector))
    upstream_transport, _ = await loop.create_datagram_endpoint(
        Upstream, local_addr=("127.0.0.1", 0), family=socket.AF_INET
    )
    upstream_port = upstream_transport.get_extra_info("sockname")[1]
    upstream = f"sip:127.0.0.1:{upstream_port}"
    results: dict[str, list[int]] = {}
    alive = True
    stats: dict[str, int] = {}
    sender = collectors[0][0]
    for path in sorted(TORTURE_DIR.glob("*.dat")):
        # A fresh gateway per message: several torture messages share a Via branch
        # and sent-by, which RFC 3261 17.2.3 matches to one transaction.
        doc = gateway_config(host="127.0.0.1", upstream=upstream)
        async with running_gateway(doc) as (gateway, _):
            target = next(e for e in gateway.transports.local if e.transport == "UDP")
            data = path.read_bytes()
            call_id = call_id_of(data)  # b"" for insuf.dat, which has none
            for _, collector in collectors:
                collector.expecting = call_id
                collector.got_final.clear()
            sender.sendto(data, (target.host, target.port))
            waits = [asyncio.ensure_future(c.got_final.wait()) for _, c in collectors]
            await asyncio.wait(waits, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            for wait in waits:
                wait.cancel()
            await asyncio.sleep(0.05)
            statuses = [s for _, c in collectors for s in c.by_call_id.pop(call_id, [])]
            # Retransmissions of the same final (the probe never ACKs) count once.
            results[path.name] = sorted(set(statuses))
            alive = alive and await _answers_options(gateway, sender, collectors)
            for key, value in (gateway.layer.stats if gateway.layer else {}).items():
                stats[key] = stats.get(key, 0) + value
    for transport, _ in collectors:
        transport.close()
    upstream_transport.close()
    unparsable = sum(c.unparsable for _, c in collectors)
    return {"results": results, "alive": alive, "stats": stats, "unparsable": unparsable}


if __name__ == "__main__":
    json.dump(asyncio.run(probe()), sys.stdout)
    sys.stdout.write("\n")
