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
import os
import statistics
import subprocess
import sys
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from tests.bench.ab import _describe, _gateway_cpu
from tests.bench.bench_gateway import HOST, gateway_process
from tests.bench.sipp_rate import CALL_RECV_TIMEOUT
from tests.interop.sipp import SippUas, run_uac

WARM_UP_CALLS = 1500


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


async def _window(pid: int, address: str, rate: float, seconds: float) -> float:
    """CPU ms per call of the gateway ``pid`` over one window of load."""
    before = _gateway_cpu(pid)
    result = await run_uac(
        "uac-basic-call",
        address,
        calls=round(rate * seconds),
        rate=rate,
        timeout=seconds + 30,
        extra_args=["-recv_timeout", f"{round(CALL_RECV_TIMEOUT * 1000)}ms"],
    )
    cpu = _gateway_cpu(pid) - before
    if result.failed_calls or not result.successful_calls:
        raise RuntimeError(f"{address}: {result.failed_calls} failed calls in a window")
    return 1000 * cpu / result.successful_calls


async def run(args: argparse.Namespace) -> int:
    sides = {"BASE": args.base.resolve(), "HEAD": args.head.resolve()}
    settings = {"BASE": args.base_set, "HEAD": args.head_set}
    for name, root in sides.items():
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
    cost: dict[str, list[float]] = {"BASE": [], "HEAD": []}
    ratios: list[float] = []
    async with (
        SippUas("uas-answer", host=HOST, timeout=36000) as base_uas,
        SippUas("uas-answer", host=HOST, timeout=36000) as head_uas,
        _gateway(sides["BASE"], base_uas.uri, settings["BASE"]) as base,
        _gateway(sides["HEAD"], head_uas.uri, settings["HEAD"]) as head,
    ):
        gateways = {"BASE": base, "HEAD": head}
        for address, _pid in gateways.values():
            warm = await run_uac(
                "uac-basic-call", address, calls=WARM_UP_CALLS, rate=args.rate, timeout=60
            )
            if warm.failed_calls:
                raise RuntimeError(f"{address}: {warm.failed_calls} failed warm-up calls")
        for i in range(args.pairs):
            pair: dict[str, float] = {}
            for name in ("BASE", "HEAD") if i % 2 == 0 else ("HEAD", "BASE"):
                address, pid = gateways[name]
                pair[name] = await _window(pid, address, args.rate, args.window)
                cost[name].append(pair[name])
            ratios.append(pair["HEAD"] / pair["BASE"])
            print(
                f"pair {i + 1:2}: BASE {pair['BASE']:.3f}  HEAD {pair['HEAD']:.3f} ms/call"
                f"  HEAD/BASE {ratios[-1]:.3f}",
                flush=True,
            )
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    print(
        f"\nCPU ms/call at {args.rate:g} calls/s: BASE median {statistics.median(cost['BASE']):.3f}"
        f" ({min(cost['BASE']):.3f}-{max(cost['BASE']):.3f}), HEAD median"
        f" {statistics.median(cost['HEAD']):.3f} ({min(cost['HEAD']):.3f}-{max(cost['HEAD']):.3f})"
    )
    print(
        f"HEAD/BASE ratio: median {statistics.median(ratios):.3f}, interquartile"
        f" {quartiles[0]:.3f}-{quartiles[2]:.3f}, min {min(ratios):.3f}, max {max(ratios):.3f}"
        f" ({len(ratios)} pairs; lower is better)"
    )
    return 0


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
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.window <= 0 or args.rate <= 0:
        parser.error("pairs, window and rate must be positive")
    if os.environ.get("CI"):
        print("note: a benchmark, not a test; figures from CI machines are not comparable")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
