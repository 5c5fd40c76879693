"""Emergency call set-up latency added by the gateway (target: p99 <= 20 ms).

One run, two legs at the same rate with the same SIPp scenario (uac-emergency.xml):

1. direct: SIPp caller -> SIPp centre (uas-answer.xml);
2. through the gateway: SIPp caller in the Espoo office LAN (127.0.10.5) -> voipgw
   (running_app: PostgreSQL routing data, classification, PIDF-LO, CDR writer) ->
   the same kind of SIPp centre as the Espoo centre (Kerava).

Set-up time is SIPp's response time 1 (INVITE sent -> 200 received, 1 ms
resolution). The gateway's added latency is the through-gateway quantile minus the
direct one. PostgreSQL: ``VOIPGW_TEST_DATABASE_URL`` or an embedded server.

Run: ``deploy/loopback-only.sh .venv/bin/python -m tests.bench.bench_emergency``.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from pathlib import Path

import asyncpg

from cdr.db import migrate
from tests.bench.database import bench_database
from tests.emergency.rig import OFFICE_IP, emergency_rig, sip_ruri, sipp_keys
from tests.interop.sipp import SippResult, SippUas, free_port, run_uac

#: The issue's target for the gateway's added set-up latency, in seconds.
TARGET_P99 = 0.020


def _quantiles(result: SippResult) -> tuple[float, float]:
    return result.percentile(0.5) or 0.0, result.percentile(0.99) or 0.0


async def _run(dsn: str, state: Path, rate: float, calls: int) -> None:
    con = await asyncpg.connect(dsn)
    try:
        await migrate(con)
    finally:
        await con.close()
    timeout = calls / rate + 30
    port = free_port("127.0.0.1")
    async with SippUas("uas-answer", port=port, timeout=3 * timeout) as uas:
        direct = await run_uac(
            "uac-emergency",
            uas.target,
            local_ip=OFFICE_IP,
            calls=calls,
            rate=rate,
            timeout=timeout,
            extra_args=sipp_keys("alice", f"sip:112@{uas.target}"),
        )
        async with emergency_rig(dsn, state, centre_ports={"kerava": port}) as rig:
            via = await run_uac(
                "uac-emergency",
                rig.target,
                local_ip=OFFICE_IP,
                calls=calls,
                rate=rate,
                timeout=timeout,
                extra_args=sipp_keys("alice", sip_ruri("112", rig)),
            )
    for name, result in (("direct", direct), ("gateway", via)):
        p50, p99 = _quantiles(result)
        print(
            f"{name:8s} calls {result.successful_calls}/{calls} failed {result.failed_calls}"
            f" at {result.call_rate:.1f}/s: setup p50 {p50 * 1000:.1f} ms p99 {p99 * 1000:.1f} ms"
        )
    d50, d99 = _quantiles(direct)
    g50, g99 = _quantiles(via)
    added99 = g99 - d99
    verdict = "OK" if via.ok and added99 <= TARGET_P99 else "MISSED"
    print(
        f"added by the gateway: p50 {(g50 - d50) * 1000:.1f} ms, p99 {added99 * 1000:.1f} ms"
        f" (target p99 <= {TARGET_P99 * 1000:.0f} ms: {verdict}; SIPp resolution 1 ms)"
    )
    if not via.ok:
        print(via.describe()[:3000])


def main() -> None:
    """Runs the benchmark once and prints set-up latency percentiles."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="calls per second")
    parser.add_argument("--calls", type=int, default=1000, help="calls per leg")
    args = parser.parse_args()
    with bench_database("voipgw-bench-emergency-") as (dsn, root):
        state = root / f"state-{uuid.uuid4().hex[:6]}"
        state.mkdir()
        asyncio.run(_run(dsn, state, args.rate, args.calls))


if __name__ == "__main__":
    main()
