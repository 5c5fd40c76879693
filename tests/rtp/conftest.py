"""Shared helpers for the RTP tests: loopback sinks and prompt material."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest_asyncio

from gateway.rtp.codecs import PromptCache
from gateway.rtp.ports import PortAllocator

PROMPTS = Path(__file__).parents[2] / "gateway" / "rtp" / "prompts"
CACHE = PromptCache()


@dataclass
class Sink(asyncio.DatagramProtocol):
    """A fake phone: records (loop time, datagram, source) of everything it gets."""

    received: list[tuple[float, bytes, tuple[str, int]]] = field(default_factory=list)
    transport: Any = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append((asyncio.get_running_loop().time(), data, (addr[0], addr[1])))
        self.arrived.set()

    @property
    def address(self) -> tuple[str, int]:
        sockname = self.transport.get_extra_info("sockname")
        return (sockname[0], sockname[1])

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(5.0):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()


async def open_sink(host: str = "127.0.0.1", port: int = 0) -> Sink:
    loop = asyncio.get_running_loop()
    _, sink = await loop.create_datagram_endpoint(Sink, local_addr=(host, port))
    return sink


@pytest_asyncio.fixture
async def sinks() -> AsyncIterator[list[Sink]]:
    opened: list[Sink] = []
    yield opened
    for sink in opened:
        sink.transport.close()
    await asyncio.sleep(0)


@pytest_asyncio.fixture
async def allocator() -> AsyncIterator[PortAllocator]:
    allocator = PortAllocator(41000, 41099)
    yield allocator
    assert allocator.leaked() == {}, "a test leaked RTP ports"


def s16(pcm: bytes) -> list[int]:
    import array

    samples = array.array("h")
    samples.frombytes(pcm)
    return list(samples)


def normalised_xcorr(a: list[int], b: list[int]) -> float:
    """Normalised cross-correlation at lag 0 of two equally long signals."""
    n = min(len(a), len(b))
    dot = sum(x * y for x, y in zip(a[:n], b[:n]))
    norm = math.sqrt(sum(x * x for x in a[:n]) * sum(y * y for y in b[:n]))
    return dot / norm if norm else 0.0


def no_other_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def open_pair(host: str = "127.0.0.1") -> tuple[Sink, Sink]:
    """A fake phone's RTP and RTCP sockets on ports p and p + 1 (RFC 3550 section 11)."""
    for port in range(42000, 43000, 2):
        try:
            rtp = await open_sink(host, port)
        except OSError:
            continue
        try:
            return rtp, await open_sink(host, port + 1)
        except OSError:
            rtp.transport.close()
    raise RuntimeError("no free port pair for a fake phone")
