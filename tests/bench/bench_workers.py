"""Worker processes: 1 worker against 2 on this machine, in one run (issue 17 part 3).

Two gateways run side by side, each a real ``voipgw run`` with its own embedded
PostgreSQL and SIPp UAS: one with ``[server] workers = 1`` (the single process), one
with ``workers = 2`` (a supervisor and two workers sharing the SIP port through
SO_REUSEPORT). Both are offered the same ladder of fixed rates, interleaved (the
1-worker step, then the 2-worker step at the same rate), so a change in the load of
this shared machine hits both alike. SIPp places every call from its own socket
(``-t un``): the kernel spreads UDP by source address and port, so one SIPp socket
would land every call on one worker.

Per gateway it prints, per step, pass or fail (RFC 7502: every call completed, none
failed, SIPp offered at least 85 % of the rate) and the gateway's CPU per call (its
processes' user + system time over the step divided by the calls: for 2 workers the
supervisor and both workers), then the highest zero-failure rate of each, their
ratio, and the CPU per call at the highest rate both passed. Rounds:
``VOIPGW_BENCH_ROUNDS`` (default 2), each round a fresh pair of gateways; the
summary gives each round's figures and their spread.

On a 2-core machine the gain is bounded: SIPp alone takes a large share of a core
at these rates, PostgreSQL (CDRs) another, and they all share the two cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from gateway.ops.native import core_build
from tests.bench.ab import _stat, _ticks
from tests.bench.bench_gateway import gateway_process
from tests.bench.sipp_rate import judge, step_seconds
from tests.interop.sipp import SippUas, run_uac

HOST = "127.0.0.1"
#: Offered rates, calls per second, the same for both gateways.
LADDER = (200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0, 1000.0, 1200.0)
#: Default seconds per step here (shorter than bench_gateway's: 2 gateways x 8 steps).
DEFAULT_STEP_SECONDS = 10.0
#: SIPp -t un opens a socket per call; its default limit (50,000) exceeds ulimit -n.
MAX_SOCKETS = "4000"
#: Seconds one call may wait for a response before SIPp fails it.
RECV_TIMEOUT = 5.0


@dataclass(slots=True)
class Gateway:
    """One running gateway under test."""

    workers: int
    address: str
    pid: int

    def cpu_seconds(self) -> float:
        """CPU (user + system) of the supervisor and its worker children, or of the
        single process."""
        pids = [self.pid]
        if self.workers > 1:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
            pids += [int(p) for p in children if _is_worker(int(p))]
            assert len(pids) == 1 + self.workers, f"workers missing: {pids}"
        total = 0
        for pid in pids:
            got = _stat(pid)
            assert got is not None, f"process {pid} gone"
            total += _ticks(got[1], children=False)
        return total / os.sysconf("SC_CLK_TCK")


def _is_worker(pid: int) -> bool:
    try:
        return b"--worker" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


@contextlib.asynccontextmanager
async def gateway(workers: int, upstream: str) -> AsyncIterator[Gateway]:
    """``voipgw run`` with ``workers`` workers; yields once its /readyz answers 200."""

    def workers_table() -> str:
        if workers == 1:
            return ""
        return (
            f"\n[server]\nworkers = {workers}\n"
            f"worker_sip_port = {_free_run(workers)}\n"
            f"worker_metrics_port = {_free_run(workers)}\n"
        )

    # A supervisor starts its workers one after another: more time than one process.
    async with gateway_process(upstream, extra_toml=workers_table, ready_within=120) as (
        address,
        pid,
    ):
        yield Gateway(workers=workers, address=address, pid=pid)


def _free_run(count: int) -> int:
    from tests.ops.harness import free_port_run

    return free_port_run(count)


@dataclass(frozen=True, slots=True)
class Step:
    rate: float
    passed: bool
    reason: str
    cpu_ms_per_call: float


async def step(target: Gateway, rate: float, seconds: float) -> Step:
    """Offers ``rate`` calls/s for ``seconds`` from a socket per call."""
    calls = max(1, round(rate * seconds))
    before = target.cpu_seconds()
    result = await run_uac(
        "uac-basic-call",
        target.address,
        transport="un",
        calls=calls,
        rate=rate,
        timeout=seconds + 2 * RECV_TIMEOUT + 5,
        extra_args=[
            *("-recv_timeout", f"{round(RECV_TIMEOUT * 1000)}ms"),
            *("-max_socket", MAX_SOCKETS),
        ],
    )
    spent = target.cpu_seconds() - before
    passed, reason = judge(result, rate)
    done = max(1, result.successful_calls)
    return Step(rate, passed, reason, 1000 * spent / done)


@dataclass(frozen=True, slots=True)
class Round:
    steps: dict[int, list[Step]]

    def best(self, workers: int) -> Step | None:
        passed = [s for s in self.steps[workers] if s.passed]
        return passed[-1] if passed else None


async def one_round(seconds: float) -> Round:
    steps: dict[int, list[Step]] = {1: [], 2: []}
    async with (
        SippUas("uas-answer", host=HOST, timeout=3600) as uas_1,
        SippUas("uas-answer", host=HOST, timeout=3600) as uas_2,
        gateway(1, uas_1.uri) as single,
        gateway(2, uas_2.uri) as double,
    ):
        failed: set[int] = set()
        for rate in LADDER:
            for target in (single, double):
                if target.workers in failed:
                    continue
                result = await step(target, rate, seconds)
                steps[target.workers].append(result)
                verdict = "pass" if result.passed else "FAIL " + result.reason
                print(
                    f"  {target.workers} worker{'s' if target.workers > 1 else ' '}"
                    f" {rate:6.0f}/s {verdict}; {result.cpu_ms_per_call:.2f} ms CPU/call",
                    flush=True,
                )
                if not result.passed:
                    failed.add(target.workers)
            if failed == {1, 2}:
                break
    return Round(steps)


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"median {statistics.median(values):.2f}, min {min(values):.2f}, max {max(values):.2f}"


async def run() -> None:
    seconds = step_seconds(DEFAULT_STEP_SECONDS)
    rounds = int(os.environ.get("VOIPGW_BENCH_ROUNDS", "2"))
    print(
        f"1 vs 2 workers, SIPp -t un, steps of {seconds:g} s, {rounds} rounds;"
        f" {os.cpu_count()} CPUs; SIP core {core_build()}",
        flush=True,
    )
    results: list[Round] = []
    for n in range(rounds):
        print(f"\n-- round {n + 1}", flush=True)
        results.append(await one_round(seconds))

    print(f"\n==== voipgw worker processes (SIP core {core_build()}) ====")
    ratios: list[float] = []
    cpu_ratios: list[float] = []
    for n, result in enumerate(results, 1):
        one, two = result.best(1), result.best(2)
        line = (
            f"round {n}: max 0-failure rate 1 worker {one.rate if one else 0:.0f}/s,"
            f" 2 workers {two.rate if two else 0:.0f}/s"
        )
        if one and two:
            ratios.append(two.rate / one.rate)
            line += f", ratio {two.rate / one.rate:.2f}"
            # CPU per call at the highest rate both passed: the same load for both.
            common = min(one.rate, two.rate)
            cpu_1 = next(s for s in result.steps[1] if s.rate == common).cpu_ms_per_call
            cpu_2 = next(s for s in result.steps[2] if s.rate == common).cpu_ms_per_call
            cpu_ratios.append(cpu_2 / cpu_1)
            line += (
                f"; CPU/call at {common:.0f}/s: 1 worker {cpu_1:.2f} ms,"
                f" 2 workers {cpu_2:.2f} ms (ratio {cpu_2 / cpu_1:.2f})"
            )
        print(line)
    print(f"max-rate ratio 2 workers / 1:     {_spread(ratios)}")
    print(f"CPU-per-call ratio 2 workers / 1: {_spread(cpu_ratios)}")


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
