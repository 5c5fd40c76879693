"""Capacity and overload (issue 17): voipgw beside SIPp direct and Kamailio, then flooded.

One run prints, on this machine:

1. the same fixed-rate ladder (``--rates``, ``--step-seconds`` each, SIPp
   ``uac-basic-call``) offered to SIPp UAC -> SIPp UAS direct (the loopback ceiling),
   to voipgw (``voipgw run`` with the gateway bench's config: uvloop, embedded
   PostgreSQL, CDRs on, guard off) and, when ``/usr/sbin/kamailio`` is installed, to
   a minimal Kamailio stateful proxy (``tests/bench/kamailio-proxy.cfg``): calls
   answered, failed, set-up p50/p99 and, for voipgw and Kamailio, CPU per call (the
   process tree's user+system time over the step divided by the calls answered);
2. voipgw's zero-failure rate R0: the highest ladder rate it completed with no failed
   call (as coarse as the ladder; ``bench_gateway`` bisects for the RFC 7502 figure);
3. overload at 1x, 1.5x and 2x R0 (2x for ``--flood-seconds``, the others half as
   long), each on a fresh gateway: a flood of ordinary calls (SIPp
   ``uac-call-or-503``: answered or shed with 503) with emergency calls to 112 mixed
   in (``--emergency-rate``): ordinary calls answered per second and as % of R0 (the
   issue's goal at 2x: >= 90 %), 503s and their INVITE -> 503 p99 at SIPp (goal <= 50
   ms), failed (timed-out) calls, emergency calls lost (goal 0) and their INVITE ->
   200 p99 (goal <= 100 ms), and what load shedding reported (its metrics).

Every step is bounded (SIPp ``-m`` and ``-timeout``); the whole run took five to six
minutes with the defaults (less when no voipgw step passes: the floods are skipped). The machine is shared: figures move from run to
run, so quote several runs.

``python -m tests.bench.bench_capacity`` (inside ``deploy/loopback-only.sh``; ``make
bench`` runs it with the others).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.ops.native import core_build
from tests.bench.ab import _tree_cpu
from tests.bench.bench_gateway import HOST, gateway_process
from tests.interop.sipp import SippResult, SippUas, free_port, run_uac

HERE = Path(__file__).resolve().parent
KAMAILIO = Path("/usr/sbin/kamailio")
KAMAILIO_CONFIG = HERE / "kamailio-proxy.cfg"
KAMAILIO_MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules")
FLOOD_SCENARIO = HERE.parent / "security" / "sipp" / "uac-call-or-503.xml"
#: Seconds a call may wait for any answer before SIPp fails it.
RECV_TIMEOUT_MS = "5000"
#: A ladder step whose achieved rate is below this share of the offered one fails.
MIN_OFFERED_FRACTION = 0.85

#: (address, pids whose CPU is the target's) of a running target.
Target = tuple[str, list[int]]
MakeTarget = Callable[[], contextlib.AbstractAsyncContextManager[Target]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One fixed-rate step of the ladder."""

    rate: float
    result: SippResult
    cpu: float | None
    """CPU seconds of the target over the step (None: not measured)."""

    @property
    def passed(self) -> bool:
        r = self.result
        return (
            r.failed_calls == 0
            and r.successful_calls == r.expected_calls
            and r.call_rate >= MIN_OFFERED_FRACTION * self.rate
        )

    @property
    def cpu_ms_per_call(self) -> float | None:
        if self.cpu is None or not self.result.successful_calls:
            return None
        return 1000 * self.cpu / self.result.successful_calls

    def row(self) -> str:
        r = self.result
        cpu = self.cpu_ms_per_call
        return (
            f"  {self.rate:6.0f}/s  answered {r.successful_calls:6d}  failed "
            f"{r.failed_calls:5d}  achieved {r.call_rate:6.0f}/s  p50/p99 {_ms(r.percentile(0.5))}"
            f" / {_ms(r.percentile(0.99))}  CPU {'n/a' if cpu is None else f'{cpu:.3f} ms/call'}"
            f"  {'pass' if self.passed else 'FAIL'}"
        )


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


@contextlib.asynccontextmanager
async def direct_target() -> AsyncIterator[Target]:
    async with SippUas("uas-answer", host=HOST, timeout=900) as uas:
        yield uas.target, []


@contextlib.asynccontextmanager
async def voipgw_target() -> AsyncIterator[Target]:
    async with (
        SippUas("uas-answer", host=HOST, timeout=900) as uas,
        gateway_process(uas.uri) as (address, pid),
    ):
        yield address, [pid]


@contextlib.asynccontextmanager
async def kamailio_target() -> AsyncIterator[Target]:
    """Kamailio as a stateful proxy in front of a SIPp UAS, in the foreground."""
    async with SippUas("uas-answer", host=HOST, timeout=900) as uas:
        port = free_port(HOST)
        with tempfile.TemporaryDirectory(prefix="voipgw-bench-kamailio-") as run_dir:
            log_path = Path(run_dir) / "kamailio.log"
            with log_path.open("wb") as log:
                proc = subprocess.Popen(  # noqa: ASYNC220 (a plain child, as bench_gateway)
                    [
                        str(KAMAILIO),
                        "-DD",
                        "-E",
                        "-f",
                        str(KAMAILIO_CONFIG),
                        "-L",
                        str(KAMAILIO_MODULES),
                        "-Y",
                        run_dir,
                        "-l",
                        f"udp:{HOST}:{port}",
                        "-A",
                        f'UAS="sip:{uas.target}"',
                        "-m",
                        "256",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            try:
                # Ready when it answers an OPTIONS-free probe: a call through it.
                deadline = time.monotonic() + 30
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError("kamailio exited:\n" + log_path.read_text()[-2000:])
                    probe = await run_uac("uac-basic-call", f"{HOST}:{port}", calls=1, timeout=5)
                    if probe.ok:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError("kamailio not relaying after 30 s")
                yield f"{HOST}:{port}", [proc.pid]
            finally:
                proc.terminate()
                try:
                    await asyncio.to_thread(proc.wait, 30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


async def ladder(make: MakeTarget, rates: list[float], seconds: float) -> list[Step]:
    """The fixed-rate steps on one target (warmed up with 200 calls first)."""
    steps: list[Step] = []
    async with make() as (address, pids):
        await run_uac("uac-basic-call", address, calls=200, rate=200, timeout=30)
        for rate in rates:
            await asyncio.sleep(2)
            before = _tree_cpu(pids) if pids else None
            result = await run_uac(
                "uac-basic-call",
                address,
                calls=round(rate * seconds),
                rate=rate,
                timeout=seconds + 30,
                extra_args=["-recv_timeout", RECV_TIMEOUT_MS],
            )
            cpu = _tree_cpu(pids) - before if before is not None else None
            steps.append(Step(rate=rate, result=result, cpu=cpu))
            print(steps[-1].row(), flush=True)
    return steps


@dataclass(frozen=True, slots=True, kw_only=True)
class Flood:
    """One overload run: ordinary flood plus emergency calls, on a fresh gateway."""

    factor: float
    rate: float
    seconds: float
    flood: SippResult
    emergency: SippResult
    metrics: dict[str, float]

    @property
    def shed(self) -> int:
        return len(self.flood.response_times.get(1, ()))

    @property
    def answered(self) -> int:
        return self.flood.successful_calls - self.shed

    @property
    def emergency_lost(self) -> int:
        return (self.emergency.expected_calls or 0) - self.emergency.successful_calls

    def report(self, zero_failure_rate: float) -> str:
        goodput = self.answered / self.seconds
        f, e = self.flood, self.emergency
        return (
            f"  {self.factor:.1f}x = {self.rate:.0f}/s for {self.seconds:.0f} s: answered "
            f"{self.answered} = {goodput:.0f}/s = {100 * goodput / zero_failure_rate:.0f} % of R0;"
            f" 503 {self.shed} (p50 {_ms(f.percentile(0.5))}, p99 {_ms(f.percentile(0.99))});"
            f" failed {f.failed_calls}; achieved {f.call_rate:.0f}/s\n"
            f"        emergency {e.successful_calls}/{e.expected_calls} connected, lost "
            f"{self.emergency_lost}, set-up p50 {_ms(e.percentile(0.5))} p99 "
            f"{_ms(e.percentile(0.99))}; shedding: "
            + ", ".join(f"{k} {v:g}" for k, v in sorted(self.metrics.items()))
        )


def _scrape(url: str) -> dict[str, float]:
    """The overload figures of the gateway's /metrics."""
    wanted = (
        "voipgw_overload_shed_total",
        "voipgw_overload_state_changes_total",
        "voipgw_overload_loop_lag_seconds_count",
    )
    found: dict[str, float] = {}
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return found
    for line in text.splitlines():
        for name in wanted:
            if line.startswith(name):
                key = name.removeprefix("voipgw_overload_") + line[len(name) :].split(" ")[0]
                found[key] = found.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


async def flood(
    factor: float,
    zero_failure_rate: float,
    seconds: float,
    emergency_rate: float,
    *,
    overload: str = "",
    environ: dict[str, str] | None = None,
) -> Flood:
    """Offers ``factor`` x R0 ordinary calls and ``emergency_rate`` 112 calls/s
    (``overload``: TOML lines added to the gateway's ``[overload]``; ``environ``:
    added to the gateway's environment)."""
    rate = factor * zero_failure_rate
    async with (
        SippUas("uas-answer", host=HOST, timeout=seconds + 120) as uas,
        gateway_process(uas.uri, overload=overload, environ=environ) as (address, pid),
    ):
        await run_uac("uac-basic-call", address, calls=200, rate=200, timeout=30)
        ordinary, emergency = await asyncio.gather(
            run_uac(
                FLOOD_SCENARIO,
                address,
                calls=round(rate * seconds),
                rate=rate,
                timeout=seconds + 40,
                service="0501234567",
                extra_args=["-recv_timeout", RECV_TIMEOUT_MS, "-max_recv_loops", "10000"],
            ),
            run_uac(
                "uac-basic-call",
                address,
                local_ip="127.0.0.2",
                calls=max(1, round(emergency_rate * seconds)),
                rate=emergency_rate,
                timeout=seconds + 40,
                service="112",
                extra_args=["-recv_timeout", RECV_TIMEOUT_MS],
            ),
        )
        metrics_port = _metrics_port(pid)
        scraped = (
            await asyncio.to_thread(_scrape, f"http://{HOST}:{metrics_port}/metrics")
            if metrics_port
            else {}
        )
    return Flood(
        factor=factor,
        rate=rate,
        seconds=seconds,
        flood=ordinary,
        emergency=emergency,
        metrics=scraped,
    )


#: The garbage-collector settings compared by --gc-ab (gateway.ops.collector).
GC_SETTINGS = {"previous": {"VOIPGW_GC": "previous"}, "paced": {"VOIPGW_GC": "paced"}}


async def gc_ab(args: argparse.Namespace, zero_failure: float, overload: str) -> None:
    """The largest factor's flood, alternately with the collector as voipgw had it
    and paced (gateway.ops.collector), ``--gc-ab`` times each."""
    factor = max(args.factors)
    print(f"\n-- garbage collector A/B at {factor:g}x R0, alternating", flush=True)
    rows: dict[str, list[Flood]] = {name: [] for name in GC_SETTINGS}
    for _ in range(args.gc_ab):
        for name, environ in GC_SETTINGS.items():
            result = await flood(
                factor,
                zero_failure,
                args.flood_seconds,
                args.emergency_rate,
                overload=overload,
                environ=environ,
            )
            rows[name].append(result)
            print(f"  [{name}]", result.report(zero_failure).strip(), flush=True)
    for name, results in rows.items():
        print(
            f"  {name:8s} 503 p99 "
            + ", ".join(_ms(r.flood.percentile(0.99)) for r in results)
            + "; emergency p99 "
            + ", ".join(_ms(r.emergency.percentile(0.99)) for r in results)
            + "; answered % of R0 "
            + ", ".join(f"{100 * r.answered / r.seconds / zero_failure:.0f}" for r in results)
            + "; emergency lost "
            + ", ".join(str(r.emergency_lost) for r in results)
        )


def _metrics_port(pid: int) -> int | None:
    """The metrics port from the gateway's config file (its command line names it)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        config = Path(argv[argv.index(b"--config") + 1].decode())
        return int(tomllib.loads(config.read_text())["metrics"]["port"])
    except (OSError, ValueError, KeyError, IndexError, tomllib.TOMLDecodeError):
        return None


async def sustain(rate: float, steps: int, seconds: float) -> int:
    """``--sustain N``: N steps at one rate on one voipgw, back to back.

    Why: the ladder runs all its steps on one gateway, and a step that spans a full
    garbage collection pauses with it (gateway.ops.collector). The same rate held
    for a minute or more shows whether a step failed for the rate or for a pause:
    in session 8, with full collections on a 60 s clock, 1250/s passed the steps
    before the first one and failed ~500 calls (p99 ~600 ms) in the step that held
    it. Since session 9 a full collection runs when the heap doubled (while the load
    climbs) or every 10 minutes.
    """
    print(f"\n-- voipgw, {steps} steps at {rate:g}/s on one gateway", flush=True)
    held = await ladder(voipgw_target, [rate] * steps, seconds)
    failed = [i + 1 for i, step in enumerate(held) if not step.passed]
    print(f"failed steps: {failed or 'none'} of {steps}")
    return 0


async def run(args: argparse.Namespace) -> int:
    rates: list[float] = args.rates
    print(
        f"SIP core {core_build()}; ladder {', '.join(f'{r:g}' for r in rates)} calls/s x "
        f"{args.step_seconds:g} s; load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    if args.sustain:
        return await sustain(rates[0], args.sustain, args.step_seconds)
    targets: list[tuple[str, MakeTarget]] = [
        ("SIPp direct", direct_target),
        ("voipgw", voipgw_target),
    ]
    if shutil.which(str(KAMAILIO)):
        targets.append(("Kamailio", kamailio_target))
    else:
        print("(Kamailio not installed: its ladder is skipped)")
    if args.zero_failure_rate:
        # --zero-failure-rate: the overload runs alone, against a rate found before.
        targets, rates = [], []
    ladders: dict[str, list[Step]] = {}
    for name, make in targets:
        print(f"\n-- {name}", flush=True)
        ladders[name] = await ladder(make, rates, args.step_seconds)

    passed = [s.rate for s in ladders.get("voipgw", []) if s.passed]
    zero_failure = max(passed) if passed else args.zero_failure_rate
    print("\n==== same rates, three targets ====")
    header = "  rate/s  " + "".join(f"{name:>28}" for name in ladders)
    print(header)
    for i, rate in enumerate(rates):
        cells = []
        for steps in ladders.values():
            s = steps[i]
            cpu = s.cpu_ms_per_call
            cells.append(
                f"{'ok ' if s.passed else 'FAIL'} {s.result.failed_calls:5d} fail "
                f"{'' if cpu is None else f'{cpu:5.2f} ms'}".rjust(28)
            )
        print(f"  {rate:6.0f}  " + "".join(cells))
    print(f"voipgw zero-failure rate R0 (ladder): {zero_failure or 0:.0f} calls/s")
    if zero_failure is None:
        print("no passing voipgw step: overload runs skipped")
        return 1

    overload = "\n".join(args.overload)
    print(
        f"\n-- overload, emergency calls at {args.emergency_rate:g}/s mixed in"
        + (f"; [overload] {'; '.join(args.overload)}" if overload else ""),
        flush=True,
    )
    floods = []
    for factor in args.factors:
        seconds = args.flood_seconds if factor == max(args.factors) else args.flood_seconds / 2
        result = await flood(factor, zero_failure, seconds, args.emergency_rate, overload=overload)
        floods.append(result)
        print(result.report(zero_failure), flush=True)

    if args.gc_ab:
        await gc_ab(args, zero_failure, overload)
    worst = max(floods, key=lambda f: f.factor)
    goodput = worst.answered / worst.seconds / zero_failure
    print(
        f"\n==== overload at {worst.factor:g}x R0 ({worst.rate:.0f}/s for {worst.seconds:.0f} s) ===="
    )
    print(f"answered calls/s as % of R0:     {100 * goodput:.0f} %  (goal >= 90 %)")
    print(f"503 p99 at SIPp:                 {_ms(worst.flood.percentile(0.99))}  (goal <= 50 ms)")
    print(f"emergency calls lost:            {worst.emergency_lost}  (goal 0)")
    print(
        f"emergency set-up p99:            {_ms(worst.emergency.percentile(0.99))}  (goal <= 100 ms)"
    )
    return 0


def _rates(text: str) -> list[float]:
    return [float(r) for r in text.split(",") if r.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_capacity", description=__doc__.split("\n")[0])
    parser.add_argument("--rates", type=_rates, default=_rates("250,500,750,1000,1250"))
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--flood-seconds", type=float, default=30.0)
    parser.add_argument("--emergency-rate", type=float, default=5.0)
    parser.add_argument(
        "--factors",
        type=_rates,
        default=_rates("1,1.5,2"),
        help="overload runs at these multiples of R0 (the largest for --flood-seconds,"
        " the others half as long)",
    )
    parser.add_argument(
        "--gc-ab",
        type=int,
        default=0,
        metavar="N",
        help="then N pairs of floods at the largest factor, alternating the garbage"
        " collector as voipgw had it (VOIPGW_GC=previous) and paced",
    )
    parser.add_argument(
        "--overload",
        action="append",
        default=[],
        metavar="TOML",
        help="a line for the gateway's [overload] section, e.g. 'shed_receive_queue = 32768'"
        " (repeatable)",
    )
    parser.add_argument(
        "--zero-failure-rate",
        type=float,
        default=None,
        help="skip the ladders: the overload runs at multiples of this rate",
    )
    parser.add_argument(
        "--sustain",
        type=int,
        default=0,
        metavar="N",
        help="only voipgw: N steps at the first of --rates on one gateway (what the"
        " full garbage collection does to a rate), nothing else",
    )
    args = parser.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["Flood", "Step", "flood", "ladder", "main"]
