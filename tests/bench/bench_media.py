"""Media benchmark: concurrent announcement pacing and relay throughput, on loopback.

Run: ``.venv/bin/python -m tests.bench.bench_media`` (one run, prints figures).

1. N concurrent prompts (200, 400, 800): each call is a real MediaSession with its own
   socket pair, playing the 3 s Swedish recording notice (the longest notice) as PCMU to
   a sink in a separate process. Call start times are spread uniformly over one 20 ms
   frame, as independent calls would be. Prints send lateness (actual send time minus
   the frame's due time) p50/p99/max and the CPU share used. Target: p99 <= 5 ms at 200.
2. Relay: a generator process blasts RTP at a B-leg socket; the relay rewrites it
   (SSRC/sequence/timestamp continuation) and forwards it to a sink process. Prints
   relayed packets per CPU-second of the gateway process (= packets/s per core).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from gateway.rtp.codecs import EncodedPrompt, PromptCache
from gateway.rtp.ports import PortAllocator
from gateway.rtp.session import MediaSession

PROMPT = Path(__file__).parents[2] / "gateway" / "rtp" / "prompts" / "recording-notice.sv.wav"
STEPS = (200, 400, 800)
RELAY_SECONDS = 3.0

# Drains one UDP socket and prints how many datagrams arrived when stdin closes.
_SINK = """
import socket, sys, threading
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
count = 0
def drain():
    global count
    while True:
        s.recv(2048)
        count += 1
threading.Thread(target=drain, daemon=True).start()
sys.stdin.read()
print(count, flush=True)
"""

# Sends RTP as fast as it can to argv[1] for argv[2] seconds, from one socket.
_BLASTER = """
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dest = ("127.0.0.1", int(sys.argv[1]))
end = time.monotonic() + float(sys.argv[2])
seq = 0
payload = b"\\xd5" * 160
sent = 0
while time.monotonic() < end:
    for _ in range(100):
        header = struct.pack("!BBHLL", 0x80, 0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, 1)
        s.sendto(header + payload, dest)
        seq += 1
    sent += 100
print(sent, flush=True)
"""


class Child:
    """A helper process speaking one line at start and one at the end."""

    def __init__(self, code: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def readline(self) -> int:
        assert self.proc.stdout is not None
        return int(self.proc.stdout.readline())

    def finish(self) -> int:
        out, _ = self.proc.communicate("", timeout=30)
        return int(out.strip().splitlines()[-1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def concurrent_prompts(calls: int, cache: PromptCache) -> None:
    sink = Child(_SINK)
    sink_port = sink.readline()
    allocator = PortAllocator(30000, 30000 + 2 * calls + 10)
    prompt = cache.get(PROMPT, "PCMU")
    sessions = [MediaSession(allocator, call_id=f"bench-{i}") for i in range(calls)]
    try:
        for session in sessions:
            await session.open_leg("a", "127.0.0.1", expected=("127.0.0.1", sink_port))
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.2
        cpu0, wall0 = time.process_time(), time.perf_counter()
        results = await asyncio.gather(
            *(s.play("a", prompt, 0, start=t0 + random.uniform(0, 0.02)) for s in sessions)
        )
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        lateness = [x for s in sessions if s.player for x in s.player.lateness]
    finally:
        for session in sessions:
            await session.close()
    received = sink.finish()
    sent = sum(r.frames_sent for r in results)
    print(
        f"prompts {calls:4d} concurrent: {sent} packets sent, {received} received by sink; "
        f"lateness p50 {1000 * statistics.median(lateness):.3f} ms, "
        f"p99 {1000 * percentile(lateness, 0.99):.3f} ms, max {1000 * max(lateness):.3f} ms; "
        f"CPU {100 * cpu / wall:.0f}% of one core ({1e6 * cpu / sent:.1f} us/packet)"
    )


async def relay_throughput() -> None:
    sink = Child(_SINK)
    sink_port = sink.readline()
    allocator = PortAllocator(31000, 31010)
    async with MediaSession(allocator, call_id="bench-relay") as session:
        await session.open_leg("a", "127.0.0.1", expected=("127.0.0.1", sink_port))
        b = await session.open_leg("b", "127.0.0.1")
        one_frame = EncodedPrompt(path=PROMPT, encoding_name="PCMU", frames=(b"\xff" * 160,))
        result = await session.play("a", one_frame, 0)
        relay = session.start_relay(continue_to_a=result.stream)
        blaster = Child(_BLASTER, str(b.port), str(RELAY_SECONDS))
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.to_thread(blaster.proc.wait)
        await asyncio.sleep(0.1)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        blasted = blaster.finish()
        relayed = relay.b_to_a.packets
    received = sink.finish()
    print(
        f"relay (B->A with SSRC/seq/ts rewrite): generator sent {blasted}, relayed {relayed} "
        f"({relayed / wall:.0f}/s wall), sink got {received}; "
        f"{relayed / cpu:.0f} packets per CPU-second = packets/s per core "
        f"(~{relayed / cpu / 100:.0f} two-way 20 ms G.711 calls per core)"
    )


async def run() -> None:
    cache = PromptCache()
    for calls in STEPS:
        await concurrent_prompts(calls, cache)
    await relay_throughput()


def main() -> None:
    """Runs the benchmark once and prints the figures."""
    asyncio.run(run())


if __name__ == "__main__":
    main()
