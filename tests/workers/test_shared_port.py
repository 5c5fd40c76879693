"""Two workers' transports on one machine: the shared port and each one's own
(gateway.transport.manager with ``ListenSpec(shared=True)``), real sockets on loopback.

A request that starts something arrives on the shared port at whichever worker the
kernel picks; its response must leave from that shared port (a NATed phone answers
only to where it sent), and so must a request that worker sends to that phone later
(a call to a phone registered through it): the phone's answer, sent to the shared
port from the same socket (RFC 3581), reaches the same worker again. A request to a
peer that never sent to the worker leaves from its own port, so that the peer's
response (to the source, RFC 3581) reaches that worker and no other.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from gateway.sip.events import Endpoint
from gateway.transport.manager import ListenSpec, TransportManager
from tests.ops.harness import free_port_run

HOST = "127.0.0.1"
REQUEST = b"OPTIONS sip:gw SIP/2.0\r\nCall-ID: %d\r\n\r\n"
RESPONSE = b"SIP/2.0 200 OK\r\nCall-ID: %d\r\n\r\n"


class Worker:
    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, Endpoint]] = asyncio.Queue()
        self.transports = TransportManager(self._on_messages, lambda _: None)

    def _on_messages(self, batch: list[tuple[bytes, Endpoint]]) -> None:
        for item in batch:
            self.received.put_nowait(item)


async def first_received(workers: list[Worker]) -> tuple[int, tuple[bytes, Endpoint]]:
    """(worker index from 1, the message) of the one worker that received it."""
    gets = [asyncio.ensure_future(w.received.get()) for w in workers]
    done, pending = await asyncio.wait(gets, timeout=2, return_when=asyncio.FIRST_COMPLETED)
    for get in pending:
        get.cancel()
    await asyncio.sleep(0.05)  # a second copy would show up in the other queue now
    assert len(done) == 1 and all(w.received.empty() for w in workers), "received twice"
    get = done.pop()
    return gets.index(get) + 1, get.result()


@pytest.mark.asyncio
async def test_requests_spread_what_goes_to_a_sender_leaves_shared_port_others_own_port() -> None:
    shared_port = free_port_run(3)
    workers = [Worker(), Worker()]
    for index, worker in enumerate(workers, 1):
        await worker.transports.listen(ListenSpec("UDP", HOST, shared_port + index))
        await worker.transports.listen(ListenSpec("UDP", HOST, shared_port, shared=True))
    loop = asyncio.get_running_loop()
    phones = []
    try:
        served: dict[int, int] = {1: 0, 2: 0}
        for n in range(40):
            # A phone per source port: the kernel hashes each to one worker.
            phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            phone.bind((HOST, 0))
            phone.setblocking(False)
            phones.append(phone)
            phone.sendto(REQUEST % n, (HOST, shared_port))
            index, (data, source) = await first_received(workers)
            assert data == REQUEST % n
            assert source == Endpoint("UDP", HOST, phone.getsockname()[1])
            workers[index - 1].transports.send(RESPONSE % n, source)
            served[index] += 1
            answer, where = await loop.sock_recvfrom(phone, 2048)
            assert answer == RESPONSE % n
            assert where == (HOST, shared_port), "a response left from another port"
            # The same worker's own request to that phone leaves from the shared
            # port too, and the phone's answer to it comes back to that worker.
            workers[index - 1].transports.send(REQUEST % (n + 100), source)
            request, where = await loop.sock_recvfrom(phone, 2048)
            assert (request, where) == (REQUEST % (n + 100), (HOST, shared_port))
            phone.sendto(RESPONSE % (n + 100), where)
            assert await first_received(workers) == (index, (RESPONSE % (n + 100), source))
        assert served[1] > 0 and served[2] > 0, served
        # A peer that never sent to the shared port gets requests from the own port.
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        phones.append(stranger)
        stranger.bind((HOST, 0))
        stranger.setblocking(False)
        for index, worker in enumerate(workers, 1):
            worker.transports.send(REQUEST % index, Endpoint("UDP", *stranger.getsockname()))
            _, where = await loop.sock_recvfrom(stranger, 2048)
            assert where == (HOST, shared_port + index)
    finally:
        for phone in phones:
            phone.close()
        for worker in workers:
            await worker.transports.close()
