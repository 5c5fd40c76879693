"""Every log line written while a call is routed carries that call's Call-ID."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket

import pytest

from gateway.b2bua import Reject, RouteNeeded
from gateway.ops.logs import LoggingConfig, configure_logging
from tests.interop.gateway import gateway_config, running_gateway

INVITE = (
    "INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKlog;rport\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=l\r\nTo: <sip:bob@127.0.0.1>\r\n"
    "Call-ID: log-test-call@probe\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:{port}>\r\n"
    "Content-Length: 0\r\n\r\n"
)


@pytest.mark.asyncio
async def test_routing_log_lines_carry_the_call_id() -> None:
    stream = io.StringIO()
    handler = configure_logging(LoggingConfig(level="info", format="json"), stream=stream)
    decided = asyncio.Event()

    async def router(event: RouteNeeded) -> Reject:
        await asyncio.sleep(0)  # a real lookup would await here
        logging.getLogger("voipgw.router").info("deciding")
        decided.set()
        return Reject(status=404)

    try:
        doc = gateway_config(host="127.0.0.1", upstream="sip:127.0.0.1:9", transports=("UDP",))
        async with running_gateway(doc) as (gateway, _):
            gateway.router = router
            target = next(e for e in gateway.transports.local if e.transport == "UDP")
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.sendto(
                INVITE.format(port=sock.getsockname()[1]).encode(), (target.host, target.port)
            )
            await asyncio.wait_for(decided.wait(), 5)
            sock.close()
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    deciding = [line for line in lines if line["msg"] == "deciding"]
    assert deciding
    assert deciding[0]["call_id"] == "log-test-call@probe"
