"""TransportManager.read_ahead: a loop that is behind takes what the kernel queued in
one batch (load shedding sets it, gateway.edge.overload Rule 3)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from gateway.sip.events import Endpoint
from gateway.transport.manager import ListenSpec, TransportManager

pytestmark = pytest.mark.asyncio

HOST = "127.0.0.1"
#: Datagrams queued while the loop is held: more than the loop reads per turn (32).
QUEUED = 100


async def first_batch(read_ahead: int) -> list[tuple[bytes, Endpoint]]:
    """The first batch handed to the core after ``QUEUED`` datagrams arrived while
    the loop was held."""
    batches: list[list[tuple[bytes, Endpoint]]] = []
    manager = TransportManager(batches.append, lambda _: None)
    manager.read_ahead = read_ahead
    local = await manager.listen(ListenSpec("UDP", HOST, 0))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
            caller.bind((HOST, 0))
            # No await: the loop reads nothing while the datagrams are queued (a
            # loopback sendto has put its datagram in the receive queue on return).
            for n in range(QUEUED):
                caller.sendto(f"OPTIONS sip:{n}@x SIP/2.0\r\n\r\n".encode(), (HOST, local.port))
            for _ in range(100):
                await asyncio.sleep(0.01)
                if sum(len(b) for b in batches) >= QUEUED:
                    break
            source = Endpoint("UDP", HOST, caller.getsockname()[1])
    finally:
        await manager.close()
    assert sum(len(b) for b in batches) == QUEUED
    assert all(src == source for batch in batches for _, src in batch)
    return batches[0]


async def test_read_ahead_takes_the_whole_kernel_queue_in_one_batch() -> None:
    batch = await first_batch(read_ahead=256)
    assert [data.split(b"@")[0] for data, _ in batch] == [
        f"OPTIONS sip:{n}".encode() for n in range(QUEUED)
    ]


async def test_without_it_the_loop_reads_a_few_per_turn() -> None:
    assert len(await first_batch(read_ahead=0)) < QUEUED


async def test_it_reads_no_more_than_asked() -> None:
    assert len(await first_batch(read_ahead=10)) <= 10 + 32
