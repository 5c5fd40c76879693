"""Find the highest call rate a SIP target completes with no failed call (RFC 7502 style).

RFC 7502 (SIP benchmarking methodology) measures the Session Establishment Rate:
offer calls at a fixed rate for a fixed time and count the attempts that fail; the
rate is the highest one with none failed. :func:`find_max_rate` does that with SIPp's
``uac-basic-call`` scenario (INVITE, 200, ACK, BYE):

1. ramp: start at ``start`` calls/s and multiply by ``factor`` (or add ``step``) after
   every passing step, until a step fails or ``max_steps`` steps have run;
2. bisect between the last passing and the first failing rate for the remaining steps,
   until the bracket is narrower than ``resolution`` (relative).

A step passes when SIPp exits 0 with every call successful and it actually offered at
least :data:`MIN_OFFERED_FRACTION` of the asked rate (otherwise SIPp, not the target,
was the bottleneck and the figure would be a lie). Each step reports the INVITE->200
set-up delay p50/p99 from SIPp's ``-trace_rtt`` samples (response time 1 of the
scenario, millisecond resolution).

``make_target`` is entered once per step, so every step starts with a fresh target:
it yields the ``host:port`` the UAC dials. For the gateway, make it start (or reuse)
the gateway and a ``SippUas("uas-answer")`` behind it; :func:`direct_uas` is the
no-gateway version, and ``main()`` (``python -m tests.bench.sipp_rate``) measures it:
SIPp straight to SIPp over loopback, the ceiling any gateway figure compares with.

Step length: ``duration_per_step`` seconds (RFC 7502 suggests long trials; default
30), overridden by the ``VOIPGW_BENCH_STEP_SECONDS`` environment variable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from tests.interop.sipp import SippResult, SippUas, run_uac

#: Default seconds per step, before ``VOIPGW_BENCH_STEP_SECONDS``.
DEFAULT_STEP_SECONDS = 30.0

#: A step whose achieved rate is below this fraction of the offered one is a failure.
MIN_OFFERED_FRACTION = 0.85

#: Seconds a single call may wait for any response before SIPp fails it (-recv_timeout).
CALL_RECV_TIMEOUT = 5.0

MakeTarget = Callable[[], AbstractAsyncContextManager[str]]


@dataclass(frozen=True, slots=True, kw_only=True)
class StepResult:
    """One fixed-rate trial."""

    rate: float
    """Offered rate, in calls per second."""
    calls: int
    """Calls offered (rate x duration)."""
    successful: int
    failed: int
    retransmissions: int
    achieved_rate: float
    """Rate SIPp reports it reached, in calls per second."""
    setup_p50: float | None
    """Median INVITE -> 200 delay, in seconds."""
    setup_p99: float | None
    """99th percentile INVITE -> 200 delay, in seconds."""
    elapsed: float
    """Wall-clock length of the trial, in seconds."""
    passed: bool
    reason: str
    """Why the step failed ("" if it passed)."""
    interrupted: bool = False
    """SIPp was stopped from outside (see ``SippResult.stopped_early``): the step
    says nothing about the target and is run again once."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RateResult:
    """Outcome of a rate search."""

    max_rate: float | None
    """Highest offered rate with no failed call, in calls per second (None: none)."""
    setup_p50: float | None
    """Median set-up delay at ``max_rate``, in seconds."""
    setup_p99: float | None
    """99th percentile set-up delay at ``max_rate``, in seconds."""
    duration_per_step: float
    """Seconds each step offered calls for."""
    steps: tuple[StepResult, ...]

    def table(self) -> str:
        """The steps as a plain-text table, then the result line."""
        lines = [
            f"{'rate/s':>9} {'calls':>7} {'ok':>7} {'failed':>6} {'retrans':>7} "
            f"{'achieved':>9} {'p50 ms':>7} {'p99 ms':>7}  result"
        ]
        for s in self.steps:
            lines.append(
                f"{s.rate:9.1f} {s.calls:7d} {s.successful:7d} {s.failed:6d} "
                f"{s.retransmissions:7d} {s.achieved_rate:9.1f} {_ms(s.setup_p50):>7} "
                f"{_ms(s.setup_p99):>7}  {'pass' if s.passed else 'FAIL: ' + s.reason}"
            )
        best = "none" if self.max_rate is None else f"{self.max_rate:.1f} calls/s"
        lines.append(
            f"max rate with 0 failed calls ({self.duration_per_step:g} s steps): {best}; "
            f"set-up p50 {_ms(self.setup_p50)} ms, p99 {_ms(self.setup_p99)} ms"
        )
        return "\n".join(lines)


def _ms(seconds: float | None) -> str:
    # SIPp measures response times in whole milliseconds of its scheduler clock, so a
    # 0 means "under a millisecond", not "no time".
    if seconds is None:
        return "-"
    return "<1" if seconds == 0 else f"{seconds * 1000:.0f}"


def step_seconds(default: float = DEFAULT_STEP_SECONDS) -> float:
    """Seconds per step: ``VOIPGW_BENCH_STEP_SECONDS`` if set, else ``default``.

    Raises:
        ValueError: the variable is not a positive number.
    """
    raw = os.environ.get("VOIPGW_BENCH_STEP_SECONDS")
    if raw is None or raw == "":
        return default
    value = float(raw)
    if value <= 0:
        raise ValueError(f"VOIPGW_BENCH_STEP_SECONDS must be > 0, not {raw!r}")
    return value


def judge(result: SippResult, rate: float) -> tuple[bool, str]:
    """Decide whether one trial passed, and say why not.

    Args:
        result: the SIPp UAC run.
        rate: offered rate, in calls per second.

    Returns:
        ``(passed, reason)``.
    """
    if result.timed_out:
        return False, "SIPp overran its timeout"
    if result.stopped_early:
        return False, (
            f"SIPp stopped early ({result.successful_calls}/{result.expected_calls} calls, "
            "none failed): signalled from outside"
        )
    if result.failed_calls:
        return False, f"{result.failed_calls} failed calls"
    if not result.ok:
        return False, (
            f"rc={result.returncode}, {result.successful_calls}/{result.expected_calls} "
            "calls completed"
        )
    if result.call_rate < MIN_OFFERED_FRACTION * rate:
        return False, f"SIPp offered only {result.call_rate:.1f}/s"
    return True, ""


async def run_step(
    make_target: MakeTarget,
    rate: float,
    *,
    duration: float,
    transport: str = "u1",
    scenario: str = "uac-basic-call",
    call_duration: float = 0.0,
    extra_args: Sequence[str] = (),
) -> StepResult:
    """Offer ``rate`` calls/s for ``duration`` seconds to a fresh target.

    Args:
        make_target: factory of an async context manager yielding ``host:port``.
        rate: calls per second.
        duration: seconds to offer calls for.
        transport: SIPp transport (``"u1"``/``"udp"``, ``"t1"``/``"tcp"``).
        scenario: the UAC scenario (response time 1 must be the set-up delay).
        call_duration: hold time of each call, in seconds (SIPp ``-d``).
        extra_args: more SIPp options for the UAC.

    Returns:
        The step's figures.
    """
    calls = max(1, round(rate * duration))
    async with make_target() as target:
        result = await run_uac(
            scenario,
            target,
            transport=transport,
            calls=calls,
            rate=rate,
            # Room for the last calls to finish and fail on their own recv timeout.
            timeout=duration + call_duration + 2 * CALL_RECV_TIMEOUT + 5,
            call_duration=call_duration,
            extra_args=["-recv_timeout", f"{round(CALL_RECV_TIMEOUT * 1000)}ms", *extra_args],
        )
    passed, reason = judge(result, rate)
    return StepResult(
        rate=rate,
        calls=calls,
        successful=result.successful_calls,
        failed=result.failed_calls,
        retransmissions=result.retransmissions,
        achieved_rate=result.call_rate,
        setup_p50=result.percentile(0.5),
        setup_p99=result.percentile(0.99),
        elapsed=result.elapsed,
        passed=passed,
        reason=reason,
        interrupted=result.stopped_early,
    )


async def find_max_rate_async(
    make_target: MakeTarget,
    *,
    start: float = 100.0,
    factor: float = 2.0,
    step: float | None = None,
    duration_per_step: float | None = None,
    max_steps: int = 8,
    resolution: float = 0.05,
    transport: str = "u1",
    scenario: str = "uac-basic-call",
    call_duration: float = 0.0,
    extra_args: Sequence[str] = (),
    on_step: Callable[[StepResult], None] | None = None,
) -> RateResult:
    """Search the highest rate with no failed call (ramp, then bisect).

    Args:
        make_target: factory of an async context manager yielding the ``host:port``
            the UAC dials; entered once per step.
        start: first rate, in calls per second.
        factor: ramp multiplier after a passing step (ignored if ``step`` is set).
        step: ramp increment in calls per second, instead of ``factor``.
        duration_per_step: seconds per step; default :func:`step_seconds`.
        max_steps: upper bound on the number of trials.
        resolution: stop bisecting when (fail - pass) / pass is below this.
        transport: SIPp transport.
        scenario: UAC scenario whose response time 1 is INVITE -> 200.
        call_duration: hold time of each call, in seconds.
        extra_args: more SIPp options for the UAC.
        on_step: called with each step as it finishes (for progress output).

    Returns:
        The best rate, its set-up delay percentiles, and every step.

    Raises:
        ValueError: bad search parameters.
    """
    if (
        start <= 0
        or max_steps < 1
        or (step is None and factor <= 1)
        or (step is not None and step <= 0)
    ):
        raise ValueError("need start > 0, max_steps >= 1, and factor > 1 or step > 0")
    duration = duration_per_step if duration_per_step is not None else step_seconds()
    steps: list[StepResult] = []
    best: StepResult | None = None
    failing: float | None = None

    async def trial(rate: float) -> StepResult:
        result = await run_step(
            make_target,
            rate,
            duration=duration,
            transport=transport,
            scenario=scenario,
            call_duration=call_duration,
            extra_args=extra_args,
        )
        steps.append(result)
        if on_step is not None:
            on_step(result)
        if result.interrupted and len(steps) < max_steps:
            return await trial(rate)
        return result

    rate = start
    while len(steps) < max_steps and failing is None:
        result = await trial(rate)
        if result.passed:
            best = result
            rate = rate + step if step is not None else rate * factor
        else:
            failing = rate
    while failing is not None and len(steps) < max_steps:
        low = best.rate if best is not None else 0.0
        if best is not None and (failing - low) / low < resolution:
            break
        mid = (low + failing) / 2
        if mid < 1.0 and best is None:
            break
        result = await trial(mid)
        if result.passed:
            best = result
        else:
            failing = mid
    return RateResult(
        max_rate=best.rate if best is not None else None,
        setup_p50=best.setup_p50 if best is not None else None,
        setup_p99=best.setup_p99 if best is not None else None,
        duration_per_step=duration,
        steps=tuple(steps),
    )


def find_max_rate(
    make_target: MakeTarget,
    *,
    start: float = 100.0,
    factor: float = 2.0,
    step: float | None = None,
    duration_per_step: float | None = None,
    max_steps: int = 8,
    **kwargs: object,
) -> RateResult:
    """Synchronous :func:`find_max_rate_async` (runs its own event loop).

    Call :func:`find_max_rate_async` instead from inside a running event loop.
    Arguments and return value are those of :func:`find_max_rate_async`.
    """
    return asyncio.run(
        find_max_rate_async(
            make_target,
            start=start,
            factor=factor,
            step=step,
            duration_per_step=duration_per_step,
            max_steps=max_steps,
            **kwargs,  # type: ignore[arg-type]
        )
    )


def direct_uas(
    *, transport: str = "u1", host: str = "127.0.0.1", lifetime: float = 600.0
) -> MakeTarget:
    """A ``make_target`` for SIPp UAC -> SIPp UAS with nothing between them.

    Args:
        transport: SIPp transport of the UAS.
        host: loopback address (``"::1"`` for IPv6).
        lifetime: upper bound on one UAS's life, in seconds (its ``-timeout``).

    Returns:
        A factory whose context yields the UAS's ``host:port``.
    """

    @asynccontextmanager
    async def target() -> AsyncIterator[str]:
        async with SippUas("uas-answer", host=host, transport=transport, timeout=lifetime) as uas:
            yield uas.target

    return target


def main(argv: Sequence[str] | None = None) -> None:
    """Measure the SIPp UAC -> UAS loopback ceiling and print the steps and figures."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.sipp_rate",
        description="Highest call rate SIPp UAC -> SIPp UAS completes on loopback "
        "with no failed call (the ceiling for gateway figures).",
    )
    parser.add_argument("--start", type=float, default=200.0, help="first rate, calls/s")
    parser.add_argument("--factor", type=float, default=2.0, help="ramp multiplier")
    parser.add_argument("--step", type=float, default=None, help="ramp increment instead")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per step")
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--transport", choices=["udp", "tcp"], default="udp")
    parser.add_argument("--ipv6", action="store_true", help="use ::1 instead of 127.0.0.1")
    args = parser.parse_args(argv)
    duration = args.seconds if args.seconds is not None else step_seconds()
    host = "::1" if args.ipv6 else "127.0.0.1"
    print(
        f"SIPp uac-basic-call -> uas-answer direct over {args.transport.upper()} {host}, "
        f"{duration:g} s per step, at most {args.max_steps} steps",
        flush=True,
    )
    result = find_max_rate(
        direct_uas(transport=args.transport, host=host, lifetime=duration * 2 + 120),
        start=args.start,
        factor=args.factor,
        step=args.step,
        duration_per_step=duration,
        max_steps=args.max_steps,
        transport=args.transport,
        on_step=lambda s: print(
            f"  {s.rate:.1f}/s: {'pass' if s.passed else 'FAIL ' + s.reason} "
            f"(p50 {_ms(s.setup_p50)} ms, p99 {_ms(s.setup_p99)} ms, {s.elapsed:.1f} s)",
            flush=True,
        ),
    )
    print(result.table())


if __name__ == "__main__":
    main()
