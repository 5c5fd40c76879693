"""Every SIPp scenario pair, uac straight to uas with no gateway in between.

This validates the scenarios themselves (sip-fixtures/sipp/) and the harness in
``tests.interop.sipp`` over UDP, TCP and IPv6 before the gateway is put between
them: a pair that fails here would make a gateway test fail for the wrong reason.
A mismatched pair must fail, so the checks cannot pass vacuously.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.bench.sipp_rate import direct_uas, find_max_rate_async, judge, step_seconds
from tests.interop.sipp import (
    SippNotFound,
    SippResult,
    SippUas,
    find_sipp,
    free_port,
    hostport,
    run_uac,
    scenario_path,
)

pytestmark = pytest.mark.sipp

#: (uac scenario, uas scenario, -d for the uas in seconds): each outcome's pair.
PAIRS = [
    ("uac-basic-call", "uas-answer", None),
    ("uac-callee-hangup", "uas-hangup", 0.05),
    ("uac-cancel", "uas-ring-no-answer", None),
    ("uac-cancel", "uas-ring-cancel-487-first", None),
    ("uac-expect-486", "uas-busy", None),
    ("uac-expect-404", "uas-not-found", None),
    ("uac-expect-408", "uas-ring-timeout-408", 0.2),
    ("uac-reinvite", "uas-answer-reinvite", None),
    ("uac-options-200", "uas-options-200", None),
]

#: (SIPp transport, loopback address): UDP and TCP over IPv4 and IPv6.
NETWORKS = [
    pytest.param("udp", "127.0.0.1", id="udp4"),
    pytest.param("tcp", "127.0.0.1", id="tcp4"),
    pytest.param("udp", "::1", id="udp6"),
    pytest.param("tcp", "::1", id="tcp6"),
]

CALLS = 3


@pytest.mark.asyncio
@pytest.mark.parametrize(("transport", "host"), NETWORKS)
@pytest.mark.parametrize(
    ("uac", "uas_scenario", "uas_pause"), PAIRS, ids=[f"{p[0]}+{p[1]}" for p in PAIRS]
)
async def test_pair_completes_without_failed_calls(
    uac: str, uas_scenario: str, uas_pause: float | None, transport: str, host: str
) -> None:
    async with SippUas(
        uas_scenario,
        host=host,
        transport=transport,
        calls=CALLS,
        timeout=30,
        call_duration=uas_pause,
    ) as uas:
        result = await run_uac(
            uac,
            uas.target,
            transport=transport,
            calls=CALLS,
            rate=20,
            timeout=20,
            call_duration=0.02,
        )
        uas_result = await uas.wait(10)
    assert result.ok, result.describe()
    assert result.successful_calls == CALLS
    assert result.outgoing_calls == CALLS
    assert uas_result.ok, uas_result.describe()
    assert uas_result.incoming_calls == CALLS
    assert uas_result.successful_calls == CALLS


@pytest.mark.asyncio
@pytest.mark.parametrize(("transport", "host"), NETWORKS)
async def test_basic_call_measures_each_setup_time(transport: str, host: str) -> None:
    async with SippUas("uas-answer", host=host, transport=transport) as uas:
        result = await run_uac(
            "uac-basic-call", uas.target, transport=transport, calls=10, rate=50, timeout=20
        )
    assert result.ok, result.describe()
    # One INVITE -> 200 sample per call, each well under a second on loopback.
    assert len(result.setup_times) == 10
    assert all(0 <= t < 1.0 for t in result.setup_times)
    p50, p99 = result.percentile(0.5), result.percentile(0.99)
    assert p50 is not None
    assert p99 is not None
    assert p50 <= p99
    assert uas.result is not None
    assert uas.result.successful_calls == 10


@pytest.mark.asyncio
async def test_reinvite_measures_both_transactions() -> None:
    async with SippUas("uas-answer-reinvite", calls=2) as uas:
        result = await run_uac("uac-reinvite", uas.target, calls=2, rate=20, timeout=20)
    assert result.ok, result.describe()
    assert len(result.response_times.get(1, ())) == 2
    assert len(result.response_times.get(2, ())) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("uac", "uas_scenario"),
    [
        ("uac-expect-486", "uas-answer"),
        ("uac-basic-call", "uas-busy"),
        ("uac-expect-404", "uas-busy"),
        ("uac-cancel", "uas-answer"),
    ],
)
async def test_mismatched_pair_fails(uac: str, uas_scenario: str) -> None:
    async with SippUas(uas_scenario, calls=1, timeout=15) as uas:
        result = await run_uac(uac, uas.target, calls=1, timeout=5)
    assert not result.ok
    assert result.failed_calls == 1
    assert result.successful_calls == 0
    assert result.returncode == 1


@pytest.mark.asyncio
async def test_uas_no_response_stays_silent_through_retransmissions() -> None:
    # Without a B2BUA nothing turns the silence into a 408, so the caller's own INVITE
    # client transaction gives up: that proves the UAS never answered, retransmissions
    # included, and that the UAS call still ends cleanly after its pause.
    async with SippUas("uas-no-response", calls=1, call_duration=2.5, timeout=20) as uas:
        result = await run_uac(
            "uac-expect-408", uas.target, calls=1, timeout=10, extra_args=["-max_retrans", "2"]
        )
        uas_result = await uas.wait(10)
    assert not result.ok
    assert result.failed_calls == 1
    assert result.timeouts == 1
    assert result.retransmissions >= 2
    assert uas_result.ok, uas_result.describe()
    assert uas_result.successful_calls == 1


@pytest.mark.asyncio
async def test_run_uac_kills_sipp_at_timeout() -> None:
    # The UAS rings for 30 s; the caller is bounded to 1 s by -timeout, so SIPp must
    # be back (on its own or killed) within the grace period and report the failure.
    async with SippUas("uas-ring-timeout-408", calls=1, call_duration=30, timeout=40) as uas:
        result = await run_uac("uac-expect-408", uas.target, calls=1, timeout=1)
    assert not result.ok
    assert result.elapsed < 1 + 5 + 1
    assert result.successful_calls == 0


@pytest.mark.asyncio
async def test_a_sipp_exiting_does_not_stop_its_neighbours() -> None:
    # SIPp 3.6 signals its process group when it exits; without a session per SIPp
    # the short-lived UAS below would make the running UAC quit early "successfully".
    async with SippUas("uas-answer") as uas:
        uac = asyncio.create_task(
            run_uac("uac-basic-call", uas.target, calls=25, rate=10, timeout=20)
        )
        await asyncio.sleep(0.5)
        async with SippUas("uas-answer", timeout=0.5) as short:
            await asyncio.sleep(1.5)  # its -timeout ends it while the UAC runs
        result = await uac
    assert short.result is not None
    assert result.ok, result.describe()
    assert result.successful_calls == 25


def test_find_sipp_returns_executable() -> None:
    assert find_sipp().endswith("sipp")


def test_find_sipp_raises_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOIPGW_SIPP", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SippNotFound, match="sip-tester"):
        find_sipp()


def test_find_sipp_rejects_bad_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOIPGW_SIPP", "/nonexistent/sipp")
    with pytest.raises(SippNotFound, match="VOIPGW_SIPP"):
        find_sipp()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "target", ["192.0.2.10:5060", "sip.example.com:5060", "[2001:db8::1]:5060"]
)
async def test_run_uac_refuses_non_loopback_targets(target: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        await run_uac("uac-basic-call", target)


def test_uas_refuses_non_loopback_host() -> None:
    with pytest.raises(ValueError, match="loopback"):
        SippUas("uas-answer", host="192.0.2.10")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_free_port_is_free_for_udp_and_tcp(host: str) -> None:
    import socket

    port = free_port(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with (
        socket.socket(family, socket.SOCK_STREAM) as tcp,
        socket.socket(family, socket.SOCK_DGRAM) as udp,
    ):
        tcp.bind((host, port))
        udp.bind((host, port))


def test_scenario_names_resolve_and_uas_uri_names_transport() -> None:
    assert scenario_path("uac-basic-call") == scenario_path("uac-basic-call.xml")
    with pytest.raises(FileNotFoundError):
        scenario_path("uac-no-such-outcome")
    assert hostport("::1", 5060) == "[::1]:5060"
    uas = SippUas("uas-answer", host="::1", port=5099, transport="tcp")
    assert uas.uri == "sip:[::1]:5099;transport=tcp"


# tests/bench/sipp_rate.py: the rate search itself, on short steps.


@pytest.mark.asyncio
async def test_rate_search_ramps_while_calls_succeed() -> None:
    seen = []
    result = await find_max_rate_async(
        direct_uas(),
        start=20,
        factor=2,
        duration_per_step=1.0,
        max_steps=2,
        on_step=seen.append,
    )
    assert [s.rate for s in result.steps] == [20, 40]
    assert seen == list(result.steps)
    assert all(s.passed and s.failed == 0 for s in result.steps), result.table()
    assert [s.successful for s in result.steps] == [20, 40]
    assert result.max_rate == 40
    assert result.setup_p50 is not None
    assert result.setup_p99 is not None
    assert result.setup_p50 <= result.setup_p99
    assert "max rate with 0 failed calls (1 s steps): 40.0 calls/s" in result.table()


@pytest.mark.asyncio
async def test_rate_search_reports_no_rate_when_every_call_fails() -> None:
    # The target answers 486 to everything: uac-basic-call fails each call at once.
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def busy():  # type: ignore[no-untyped-def]
        async with SippUas("uas-busy", timeout=30) as uas:
            yield uas.target

    result = await find_max_rate_async(busy, start=10, duration_per_step=1.0, max_steps=2)
    assert result.max_rate is None
    assert [s.rate for s in result.steps] == [10, 5]
    assert all(not s.passed and s.failed == s.calls for s in result.steps)
    assert result.steps[0].reason == "10 failed calls"


def test_step_seconds_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOIPGW_BENCH_STEP_SECONDS", raising=False)
    assert step_seconds() == 30.0
    monkeypatch.setenv("VOIPGW_BENCH_STEP_SECONDS", "2.5")
    assert step_seconds() == 2.5
    monkeypatch.setenv("VOIPGW_BENCH_STEP_SECONDS", "0")
    with pytest.raises(ValueError, match="VOIPGW_BENCH_STEP_SECONDS"):
        step_seconds()


def _result(**overrides: object) -> SippResult:
    fields: dict[str, object] = {
        "scenario": "uac-basic-call.xml",
        "argv": ("sipp",),
        "returncode": 0,
        "timed_out": False,
        "elapsed": 10.0,
        "expected_calls": 100,
        "successful_calls": 100,
        "failed_calls": 0,
        "outgoing_calls": 100,
        "incoming_calls": 0,
        "retransmissions": 0,
        "unexpected_messages": 0,
        "timeouts": 0,
        "call_rate": 10.0,
    }
    fields.update(overrides)
    return SippResult(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "passed", "reason", "stopped_early"),
    [
        ({}, True, "", False),
        ({"successful_calls": 60, "returncode": 0}, False, "stopped early", True),
        ({"successful_calls": 97, "failed_calls": 3, "returncode": 1}, False, "3 failed", False),
        ({"returncode": None, "timed_out": True}, False, "overran", False),
        ({"call_rate": 7.0}, False, "offered only 7.0/s", False),
        ({"returncode": 99}, False, "rc=99", False),
    ],
)
def test_judge_step(
    overrides: dict[str, object], passed: bool, reason: str, stopped_early: bool
) -> None:
    result = _result(**overrides)
    verdict, why = judge(result, 10.0)
    assert verdict is passed
    assert reason in why
    assert result.stopped_early is stopped_early
    assert ("STOPPED EARLY" in result.describe()) is stopped_early


def test_percentiles_are_nearest_rank() -> None:
    result = _result(response_times={1: tuple(i / 1000 for i in range(1, 101))})
    assert result.percentile(0.5) == 0.050
    assert result.percentile(0.99) == 0.099
    assert result.percentile(1.0) == 0.100
    assert result.percentile(0.5, rtd=2) is None
    assert result.mean_response_time() == pytest.approx(0.0505)
