"""Mutation fuzzer for the SIP parser, stream framer, transaction layer and B2BUA
(``make fuzz``).

Usage::

    python -m tests.fuzz [--seconds 120] [--max-inputs 1000000] [--workers 2] [--seed N]

Seeds a corpus from ``sip-fixtures/messages/**`` (plus the RFC 4475 messages in
``../shared`` when present), mutates it with plain ``random`` (byte flips,
truncation, insertion of SIP delimiters, deletion, duplication, splicing, huge
numbers) and feeds each input to ``parse_message`` (datagram and stream) and to
``StreamFramer`` in random chunks, then to a transaction layer with a B2BUA on top
(every new call routed to a fake next hop, a fake clock advanced so transactions and
calls expire). The contract is h11's: only ``ParseError`` may escape the parser, and
a ``ParseError`` carrying a ``__cause__`` came from the parser's last-resort
catch-all, so it counts as a crash too; the transaction layer and the B2BUA must
never raise at all.

A crash or a hang (one input over ``--hang-seconds``) saves the input under
``sip-fixtures/messages/crashes/`` and makes the exit status 1. Memory: each worker
compares its peak RSS before and after the run and fails past ``--max-rss-growth-mb``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import multiprocessing
import os
import random
import resource
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from gateway.b2bua import B2bua, Route, RouteNeeded
from gateway.sip.errors import ParseError
from gateway.sip.events import Endpoint
from gateway.sip.framing import StreamFramer
from gateway.sip.parser import parse_message
from gateway.sip.transaction_layer import TransactionLayer

ROOT = Path(__file__).parents[2]
FIXTURES = ROOT / "sip-fixtures" / "messages"
CRASHES = FIXTURES / "crashes"
RFC4475 = ROOT / ".." / "shared" / "conformance" / "rfc4475"

TOKENS = [
    b"\r\n",
    b"\r\n\r\n",
    b"\r\n ",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b";",
    b",",
    b":",
    b"<",
    b">",
    b'"',
    b"\\",
    b"%",
    b"%00",
    b"@",
    b"?",
    b"=",
    b"[",
    b"]",
    b"\x00",
    b"\xff",
    b"SIP/2.0",
    b"Content-Length: 99999",
    b"l: 0",
    b"Via: SIP/2.0/UDP h;branch=z9hG4bK",
    b"9" * 40,
    b"9" * 5000,
    b"sip:",
    b"tel:+",
    b"[::1]",
    b"\xc3\xa9",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerResult:
    """What one worker did.

    Attributes:
        inputs: inputs run.
        crashes: paths of saved crashing or hanging inputs.
        rss_growth_kb: peak RSS growth over the run, in KiB.
        slowest: slowest single input, in seconds.
    """

    inputs: int
    crashes: list[str]
    rss_growth_kb: int
    slowest: float


def load_corpus() -> list[bytes]:
    """Returns the seed inputs: every fixture message, plus RFC 4475 when present."""
    paths = sorted(FIXTURES.glob("**/*.sip")) + sorted(RFC4475.glob("*.dat"))
    return [p.read_bytes() for p in paths if p.is_file()]


def mutate(rng: random.Random, corpus: list[bytes]) -> bytes:
    """Returns a random mutation of a random corpus entry."""
    data = bytearray(rng.choice(corpus))
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(8)
        pos = rng.randint(0, len(data))
        if op == 0 and data:
            data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif op == 2:
            data[pos:pos] = rng.choice(TOKENS)
        elif op == 3:
            del data[pos : pos + rng.randint(1, 16)]
        elif op == 4:
            del data[pos:]
        elif op == 5:
            end = min(len(data), pos + rng.randint(1, 120))
            data[pos:pos] = data[pos:end] * rng.randint(1, 4)
        elif op == 6:
            other = rng.choice(corpus)
            data[pos:] = other[rng.randint(0, len(other)) :]
        else:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(data)


class Core:
    """A gateway core fed by the fuzzer: bad input must never raise out of it."""

    SOURCE = Endpoint("UDP", "127.0.0.2", 5062)
    NEXT_HOP = Endpoint("UDP", "127.0.0.3", 5080)

    def __init__(self) -> None:
        tokens = itertools.count()
        self.layer = TransactionLayer(
            local=[Endpoint("UDP", "127.0.0.1", 5060)], new_token=lambda: f"f{next(tokens)}"
        )
        self.b2bua = B2bua(self.layer, new_token=lambda: f"c{next(tokens)}")
        self.route = Route(targets=(self.NEXT_HOP,))
        self.now = 0.0
        self.fed = 0

    def feed(self, data: bytes) -> None:
        self.fed += 1
        if self.fed % 500 == 0:
            # Let timers fire so transactions and calls end (bounded memory).
            self.now += 40.0
            self.layer.handle_timer(self.now)
            self.b2bua.handle_timer(self.now)
            self._pump()
        source = self.NEXT_HOP if data.startswith(b"SIP/") else self.SOURCE
        self.layer.receive_message(data, source, self.now)
        self._pump()

    def _pump(self) -> None:
        while True:
            event = self.layer.next_event()
            if event is not None:
                self.b2bua.handle_sip_event(event, self.now)
                continue
            call_event = self.b2bua.next_event()
            if call_event is None:
                break
            if isinstance(call_event, RouteNeeded):
                self.b2bua.route_decided(call_event.call_uuid, self.route, self.now)
        self.layer.datagrams_to_send()


_CORE: Core | None = None


def run_one(data: bytes, rng: random.Random) -> None:
    """Runs one input through the parser and the framer; raises on a contract breach."""
    for stream in (False, True):
        try:
            parse_message(data, stream=stream)
        except ParseError as exc:
            if exc.__cause__ is not None:
                raise exc.__cause__ from None
    framer = StreamFramer(initiator=rng.random() < 0.2)
    # Byte-at-a-time framing costs ~100 times a whole feed: do it for one input in
    # 32 so the run still reaches its input budget.
    step = 1 if rng.random() < 1 / 32 else rng.choice((7, 64, 512, len(data) or 1))
    try:
        for i in range(0, len(data), step):
            framer.feed(data[i : i + step])
            while (message := framer.next_message()) is not None:
                try:
                    parse_message(message, stream=True)
                except ParseError as exc:
                    if exc.__cause__ is not None:
                        raise exc.__cause__ from None
            framer.pop_pings()
            framer.pop_pongs()
    except ParseError:
        pass
    global _CORE
    if _CORE is None:
        _CORE = Core()
    _CORE.feed(data)


def _save(data: bytes, kind: str) -> str:
    CRASHES.mkdir(parents=True, exist_ok=True)
    path = CRASHES / f"{kind}-{hashlib.sha1(data).hexdigest()[:16]}.sip"
    path.write_bytes(data)
    return str(path.relative_to(ROOT))


def _rss_kb() -> int:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def worker(seed: int, deadline: float, max_inputs: int, hang_seconds: float) -> WorkerResult:
    """Fuzzes until the deadline (a ``time.monotonic`` value) or ``max_inputs``."""
    rng = random.Random(seed)
    corpus = load_corpus()
    crashes: list[str] = []
    slowest = 0.0
    for data in corpus:  # warm-up: caches and regex compilation before measuring RSS
        run_one(data, rng)
    rss_before = _rss_kb()
    count = 0
    while count < max_inputs:
        if count % 256 == 0 and time.monotonic() >= deadline:
            break
        data = mutate(rng, corpus)
        start = time.perf_counter()
        try:
            run_one(data, rng)
        except Exception:
            crashes.append(_save(data, "crash"))
            traceback.print_exc(limit=4)
        elapsed = time.perf_counter() - start
        slowest = max(slowest, elapsed)
        if elapsed > hang_seconds:
            crashes.append(_save(data, "hang"))
            print(f"hang: {elapsed:.2f} s on one input", file=sys.stderr)
        count += 1
        if len(crashes) >= 20:
            break
    return WorkerResult(
        inputs=count, crashes=crashes, rss_growth_kb=_rss_kb() - rss_before, slowest=slowest
    )


def _worker_entry(args: tuple[int, float, int, float]) -> WorkerResult:
    return worker(*args)


def main(argv: list[str] | None = None) -> int:
    """Runs the fuzzer; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    # 1,000,000 inputs take about 150 s on two cores here; the bound leaves room.
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--max-inputs", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--hang-seconds", type=float, default=1.0)
    parser.add_argument("--max-rss-growth-mb", type=float, default=64.0)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    workers = max(1, args.workers)
    per_worker = -(-args.max_inputs // workers)
    deadline = time.monotonic() + args.seconds
    jobs = [(seed + i, deadline, per_worker, args.hang_seconds) for i in range(workers)]
    print(f"fuzzing with seed {seed}, {workers} worker(s), corpus {len(load_corpus())} inputs")
    started = time.monotonic()
    if workers == 1:
        results = [_worker_entry(jobs[0])]
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            results = pool.map(_worker_entry, jobs)
    elapsed = time.monotonic() - started
    inputs = sum(r.inputs for r in results)
    crashes = [c for r in results for c in r.crashes]
    growth_mb = max(r.rss_growth_kb for r in results) / 1024
    print(
        f"inputs: {inputs}  seconds: {elapsed:.1f}  inputs/s: {inputs / elapsed:,.0f}  "
        f"crashes: {len(crashes)}  slowest input: {max(r.slowest for r in results) * 1000:.1f} ms  "
        f"peak RSS growth: {growth_mb:.1f} MiB"
    )
    for path in crashes:
        print(f"saved {path}")
    if growth_mb > args.max_rss_growth_mb:
        print(f"memory grew by {growth_mb:.1f} MiB (limit {args.max_rss_growth_mb})")
        return 1
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
