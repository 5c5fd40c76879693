"""SIGTERM while SIPp is placing held calls through a running ``voipgw run``.

SIPp places calls held for a few seconds; SIGTERM arrives while some are up and
more are still to come. The gateway must keep the calls in progress until their
callers hang up (BYE answered 200), answer the new ones 503 while draining
(RFC 3261 21.5.4), exit 0 within the drain bound, and leave one CDR per call: a
committed row in its embedded PostgreSQL (started again by the test after the
gateway stopped it) or a record in the spool.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter

import pytest

from cdr.db import DatabaseConfig, database
from tests.interop.sipp import SippUas, run_uac
from tests.ops.harness import (
    HOST,
    OFFICE_IP,
    GatewayProcess,
    cdr_rows,
    prepare,
    remove_state,
    spooled_records,
    state_directory,
)

pytestmark = [pytest.mark.sipp, pytest.mark.interop, pytest.mark.postgres]

CALLS = 20
RATE = 4.0
HOLD = 6.0
#: Seconds after the first INVITE when SIGTERM is sent: about 8 calls are up then,
#: and the last of the 20 is placed at 4.75 s, while those 8 still hold the drain.
SIGTERM_AFTER = 2.0
#: The drain bound (gateway.cli.main.run_gateway) plus time to flush CDRs and stop.
EXIT_BOUND = 30.0 + 15.0


@pytest.mark.timeout(120)
@pytest.mark.asyncio
async def test_sigterm_drains_calls_in_progress_and_refuses_new_ones() -> None:
    state = state_directory()
    try:
        async with SippUas("uas-answer", host=HOST, timeout=90) as pbx:
            setup = prepare(state, upstream=pbx.uri)
            gateway = GatewayProcess(setup)
            await gateway.start()
            try:
                # uac-emergency-flood-ordinary: each call is answered and held, or
                # refused with 503; both are a successful SIPp call. Response time 1
                # is recorded for the 503s only.
                uac = asyncio.ensure_future(
                    run_uac(
                        "uac-emergency-flood-ordinary",
                        setup.target,
                        local_ip=OFFICE_IP,
                        calls=CALLS,
                        rate=RATE,
                        call_duration=HOLD,
                        timeout=40,
                        extra_args=[
                            *("-key", "caller", "bob"),
                            *("-key", "ruri", f"sip:0401234567@{setup.target}"),
                        ],
                    )
                )
                await asyncio.sleep(SIGTERM_AFTER)
                in_progress = await gateway.metric("voipgw_active_calls")
                signalled = time.monotonic()
                gateway.signal(signal.SIGTERM)
                status = await gateway.wait(EXIT_BOUND)
                exit_seconds = time.monotonic() - signalled
                result = await uac
            finally:
                await gateway.kill()
            assert status == 0, gateway.tail()
            assert exit_seconds < EXIT_BOUND
            # Every call ended properly at the caller: answered then BYE/200, or 503.
            assert result.ok, result.describe()
            refused = len(result.setup_times)
            answered = result.successful_calls - refused
            assert in_progress >= 3, f"only {in_progress} calls up at SIGTERM"
            assert answered >= in_progress
            assert refused >= 5, f"only {refused} calls placed during the drain"
            # The gateway waited for the held calls: at least one hold time after the
            # last call placed before SIGTERM.
            assert exit_seconds >= HOLD - SIGTERM_AFTER
            assert "draining" in gateway.tail(200_000)

        # The PBX saw every answered call through to its BYE.
        assert pbx.result is not None
        assert pbx.result.successful_calls == answered, pbx.result.describe()
        assert pbx.result.failed_calls == 0, pbx.result.describe()

        # The gateway stopped its embedded PostgreSQL on exit: start it again.
        async with database(DatabaseConfig(state_dir=str(state))) as db:
            rows = await cdr_rows(db.dsn)
        spooled = spooled_records(setup.spool_dir)
        call_ids = [row.call_id for row in rows] + [str(r["call_id"]) for r in spooled]
        assert len(call_ids) == CALLS, (len(rows), len(spooled))
        assert len(set(call_ids)) == CALLS, Counter(call_ids).most_common(3)
        statuses = Counter(row.final_status for row in rows)
        statuses.update(int(r["final_status"]) for r in spooled)
        assert statuses == {200: answered, 503: refused}, statuses
        print(
            f"SIGTERM with {in_progress:g} calls up: exit 0 after {exit_seconds:.1f}s, "
            f"{answered} answered, {refused} refused 503, {len(rows)} CDR rows committed, "
            f"{len(spooled)} in the spool"
        )
    finally:
        remove_state(state)
