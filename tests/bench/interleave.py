"""Interleaved A/B of the gateway's CPU per call: both checkouts' gateways up at once,
the load alternated between them in short windows.

Why beside ``tests/bench/ab.py``: ab.py starts a fresh gateway per measurement (25 s
each) and compares rounds minutes apart; this machine's speed drifts by 20-40 % over
minutes (issue 17 saw one checkout read 0.63 and 0.99 ms per call within the hour), so
a 5 % change hid in its spread (min-max 0.73-1.14 over 8 rounds). Here BASE and HEAD
run side by side for the whole run and take the same load in turn, a few seconds each
(A,B,B,A,...), so that each pair of windows sees the same machine, and the verdict is
the median of many pairs with its interquartile range.

Each side is one ``voipgw run`` (its checkout's ``.venv``, its own compiled core, the
bench config of ``tests.bench.bench_gateway.gateway_toml``: uvloop, embedded
PostgreSQL, CDRs on, guard off) with a SIPp ``uas-answer`` of its own behind it,
driven by SIPp ``uac-basic-call`` over UDP on 127.0.0.1. After a warm-up of 1,500
calls each, every window offers ``--rate`` calls/s for ``--window`` seconds to one
side; its CPU per call is the gateway process's user+system time (all threads) over
the window divided by the calls completed. Every call must succeed.

``--kamailio`` adds a yardstick that no commit changes: Kamailio as a stateful proxy in
front of a SIPp UAS (``bench_capacity``'s configuration), up for the whole run and
taking its own window in every pair (BASE, HEAD, KAM, then KAM, HEAD, BASE); its CPU
is that of all its processes. Each side's ratio to it, pair by pair, lets figures of
different days be compared. Only roughly with issue 17's own table (Kamailio 0.23-0.29
ms per call, voipgw 1.37-1.52): that Kamailio was set up before this configuration
existed, and this one reads 0.45-0.6 here at 500 calls/s.

Run it inside one loopback-only network namespace (both gateways and SIPps), from the
checkout under test, with both checkouts set up (``make setup-test``)::

    deploy/loopback-only.sh .venv/bin/python -m tests.bench.interleave --base /work/bench-base
    # one checkout against itself, a setting changed on one side:
    deploy/loopback-only.sh .venv/bin/python -m tests.bench.interleave --base . \\
        --base-set 'cdr.fsync_interval=0'
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path

from tests.bench.ab import _describe, _gateway_cpu, _tree_cpu
from tests.bench.bench_capacity import KAMAILIO, kamailio_target
from tests.bench.bench_gateway import HOST, gateway_process
from tests.bench.sipp_rate import CALL_RECV_TIMEOUT
from tests.interop.sipp import SippUas, run_uac

WARM_UP_CALLS = 1500
#: The ``--kamailio`` side: its windows may fail a call (see :func:`_window`).
YARDSTICK = "KAM"


def _stale_core(root: Path, python: Path) -> str | None:
    """Why ``root``'s SIP core would not run compiled and current, or None."""
    check = (
        "import sys; sys.path.insert(0, '.'); from gateway.ops.native import core_build, "
        "stale_extensions; from pathlib import Path; b = core_build(); "
        "s = stale_extensions(Path('.')); print('ok' if b == 'compiled' and not s else f'{b} {s}')"
    )
    out = subprocess.run(
        [str(python), "-c", check], cwd=root, capture_output=True, text=True, check=False
    )
    verdict = out.stdout.strip() or out.stderr.strip()[-300:]
    return None if verdict == "ok" else verdict


def _gateway(
    root: Path, upstream: str, settings: str
) -> AbstractAsyncContextManager[tuple[str, int]]:
    """``voipgw run`` from the checkout ``root`` with its own ``.venv``; (host:port, pid)."""
    return gateway_process(
        upstream, settings=settings, checkout=root, python=str(root / ".venv" / "bin" / "python")
    )


async def _window(
    cpu: Callable[[], float], address: str, rate: float, seconds: float, *, strict: bool = True
) -> float:
    """CPU ms per call of one side (``cpu``: its CPU seconds so far) over one window.

    ``strict``: every call must succeed (voipgw). The Kamailio yardstick fails a call
    now and then at these rates, as in ``bench_capacity``'s ladder (SIPp's view of a
    retransmission race), so there a few failed calls in a window are only counted:
    its figure is per call completed.
    """
    before = cpu()
    result = await run_uac(
        "uac-basic-call",
        address,
        calls=round(rate * seconds),
        rate=rate,
        timeout=seconds + 30,
        extra_args=["-recv_timeout", f"{round(CALL_RECV_TIMEOUT * 1000)}ms"],
    )
    used = cpu() - before
    if not result.successful_calls or (strict and result.failed_calls):
        raise RuntimeError(f"{address}: {result.failed_calls} failed calls in a window")
    return 1000 * used / result.successful_calls


async def run(args: argparse.Namespace) -> int:
    roots = {"BASE": args.base.resolve(), "HEAD": args.head.resolve()}
    settings = {"BASE": args.base_set, "HEAD": args.head_set}
    if args.kamailio and not KAMAILIO.exists():
        print(
            f"--kamailio: {KAMAILIO} is not installed (apt-get install kamailio)",
            file=sys.stderr,
        )
        return 2
    for name, root in roots.items():
        problem = _stale_core(root, root / ".venv" / "bin" / "python")
        if problem is not None:
            print(
                f"{name} {root}: SIP core not compiled and current ({problem}):"
                " run make setup-test there",
                file=sys.stderr,
            )
            return 2
        print(
            f"{name} {root}: {_describe(root, subject=True)}"
            + (f" [{settings[name]}]" if settings[name] else "")
        )
    print(f"{args.pairs} pairs of {args.window:g} s windows at {args.rate:g} calls/s", flush=True)
    names = ("BASE", "HEAD", YARDSTICK) if args.kamailio else ("BASE", "HEAD")
    cost: dict[str, list[float]] = {name: [] for name in names}
    async with AsyncExitStack() as stack:
        sides: dict[str, tuple[str, Callable[[], float]]] = {}
        for name in ("BASE", "HEAD"):
            uas = await stack.enter_async_context(SippUas("uas-answer", host=HOST, timeout=36000))
            address, pid = await stack.enter_async_context(
                _gateway(roots[name], uas.uri, settings[name])
            )
            sides[name] = (address, functools.partial(_gateway_cpu, pid))
        if args.kamailio:
            address, pids = await stack.enter_async_context(kamailio_target())
            sides[YARDSTICK] = (address, functools.partial(_tree_cpu, pids))
        for name, (address, _cpu) in sides.items():
            warm = await run_uac(
                "uac-basic-call", address, calls=WARM_UP_CALLS, rate=args.rate, timeout=60
            )
            if warm.failed_calls and name != YARDSTICK:
                raise RuntimeError(f"{address}: {warm.failed_calls} failed warm-up calls")
        for i in range(args.pairs):
            pair: dict[str, float] = {}
            for name in names if i % 2 == 0 else reversed(names):
                address, cpu = sides[name]
                pair[name] = await _window(
                    cpu, address, args.rate, args.window, strict=name != YARDSTICK
                )
                cost[name].append(pair[name])
            print(
                f"pair {i + 1:2}: "
                + "  ".join(f"{name} {pair[name]:.3f}" for name in names)
                + f" ms/call  HEAD/BASE {pair['HEAD'] / pair['BASE']:.3f}",
                flush=True,
            )
    print(
        f"\nCPU ms/call at {args.rate:g} calls/s: "
        + ", ".join(
            f"{name} median {statistics.median(cost[name]):.3f}"
            f" ({min(cost[name]):.3f}-{max(cost[name]):.3f})"
            for name in names
        )
    )
    _print_ratio("HEAD", "BASE", cost)
    if args.kamailio:
        _print_ratio("HEAD", YARDSTICK, cost)
        _print_ratio("BASE", YARDSTICK, cost)
    return 0


def _print_ratio(top: str, bottom: str, cost: dict[str, list[float]]) -> None:
    """The pair-by-pair ratio of two sides' CPU per call: median, quartiles, range."""
    ratios = [a / b for a, b in zip(cost[top], cost[bottom], strict=True)]
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    print(
        f"{top}/{bottom} ratio: median {statistics.median(ratios):.3f}, interquartile"
        f" {quartiles[0]:.3f}-{quartiles[2]:.3f}, min {min(ratios):.3f}, max {max(ratios):.3f}"
        f" ({len(ratios)} pairs; lower is better)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.interleave", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--base", type=Path, required=True, help="checkout A (before)")
    parser.add_argument("--head", type=Path, default=Path.cwd(), help="checkout B (after)")
    parser.add_argument("--pairs", type=int, default=12, help="pairs of windows")
    parser.add_argument("--window", type=float, default=6.0, help="seconds of load per window")
    parser.add_argument("--rate", type=float, default=500.0, help="calls/s in a window")
    parser.add_argument("--base-set", default="", help="BASE config settings, table.key=value;...")
    parser.add_argument("--head-set", default="", help="HEAD config settings")
    parser.add_argument(
        "--kamailio", action="store_true", help="a third side: Kamailio, as a yardstick"
    )
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.window <= 0 or args.rate <= 0:
        parser.error("pairs, window and rate must be positive")
    if os.environ.get("CI"):
        print("note: a benchmark, not a test; figures from CI machines are not comparable")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
