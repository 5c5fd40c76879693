"""gateway.edge.guard.Guard: pure tests with a hand-advanced clock.

Rule 1 (responses, emergency, in-dialog, ACK/CANCEL always pass), rule 2 (bans, for
trusted peers too), rule 3 (trusted peers), rule 4 (scanners, token buckets), memory
bounds, the ban and unban log lines and metrics.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.edge.guard import Guard, TokenBucket, is_response, peek
from gateway.edge.guard_config import GuardConfig, RateLimit
from gateway.sip.events import Endpoint
from routing.config import EmergencyConfig
from routing.emergency import DialPlan
from tests.security.messages import request, response

ATTACKER = Endpoint("UDP", "203.0.113.66", 5070)
PHONE = Endpoint("UDP", "198.51.100.20", 5060)
PBX = Endpoint("UDP", "10.20.0.5", 5060)

T0 = 1000.0


class Drops:
    """A fake metrics object recording drops, bans, unbans and the bans gauge."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.bans: list[str] = []
        self.unbans: list[str] = []
        self.banned_sources: Callable[[], int] = lambda: -1

    def message_dropped(self, reason: str) -> None:
        self.reasons.append(reason)

    def guard_ban(self, reason: str) -> None:
        self.bans.append(reason)

    def guard_unban(self, reason: str) -> None:
        self.unbans.append(reason)

    def track_guard_bans(self, count: Callable[[], int]) -> None:
        self.banned_sources = count


def guard(**overrides: object) -> Guard:
    return Guard(dataclasses.replace(GuardConfig(), **overrides))  # type: ignore[arg-type]


def admitted(g: Guard, data: bytes, source: Endpoint, now: float, times: int) -> int:
    return sum(g.admit(data, source, now) for _ in range(times))


def ban(g: Guard, source: Endpoint, now: float = T0) -> None:
    for _ in range(g.config.max_auth_failures):
        g.auth_failed(source, "100", now=now)
    assert g.banned(g.key_of(source.host), now)


# ---------------------------------------------------------------------- peek


def test_peek_reads_request_line_after_leading_crlf() -> None:
    found = peek(b"\r\n\r\n" + request("OPTIONS", "sip:gw.example.fi"))
    assert found is not None
    assert (found.method, found.uri) == (b"OPTIONS", b"sip:gw.example.fi")


@pytest.mark.parametrize(
    "data",
    [
        response(),
        b"",
        b"garbage\r\n\r\n",
        b"INVITE sip:x@y SIP/3.0\r\n\r\n",
        b"INVITE  SIP/2.0\r\n",
    ],
)
def test_peek_refuses_what_is_not_a_request_line(data: bytes) -> None:
    assert peek(data) is None


@pytest.mark.parametrize(
    ("to", "compact", "tagged"),
    [
        ("<sip:bob@gw>", False, False),
        ("<sip:bob@gw>;tag=abc", False, True),
        ("<sip:bob@gw>;tag=abc", True, True),
        ('"Bob" <sip:bob@gw> ; TAG = x1', False, True),
        # a tag URI parameter inside <> is not the To tag (RFC 3261 20)
        ("<sip:bob@gw;tag=abc>", False, False),
        ("<sip:bob@gw;tag=abc>;x=1", False, False),
        # addr-spec form: parameters belong to the header
        ("sip:bob@gw;tag=abc", False, True),
        ("<sip:bob@gw>;tagx=1", False, False),
        ("<sip:bob@gw>;tag=", False, False),
    ],
)
def test_to_tag_detection(to: str, compact: bool, tagged: bool) -> None:
    found = peek(request("BYE", to=to, compact=compact))
    assert found is not None
    assert found.to_tagged is tagged


def test_to_tag_ignores_other_headers_that_end_in_to() -> None:
    data = request("INVITE", extra=("Reply-To: <sip:x@y>;tag=zz",))
    found = peek(data)
    assert found is not None
    assert not found.to_tagged


def test_is_response() -> None:
    assert is_response(response(503))
    assert is_response(b"\r\n" + response(100))
    assert not is_response(request())


# ---------------------------------------------------------------------- buckets


def test_token_bucket_refills_at_rate_up_to_burst() -> None:
    bucket = TokenBucket(RateLimit(rate=2.0, burst=3.0), T0)
    assert [bucket.take(T0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(T0 + 0.5)  # one token after 0.5 s at 2/s
    assert not bucket.take(T0 + 0.5)
    assert [bucket.take(T0 + 100) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(T0 + 50)  # a clock going backwards adds nothing


def test_general_request_limit_per_source() -> None:
    g = guard(requests=RateLimit(rate=10, burst=5))
    options = request("OPTIONS", "sip:gw.example.fi")
    assert admitted(g, options, ATTACKER, T0, 20) == 5
    # another source has its own bucket
    assert admitted(g, options, PHONE, T0, 3) == 3
    # 10/s for 1 s refills 10 tokens, capped at the burst of 5
    assert admitted(g, options, ATTACKER, T0 + 1, 20) == 5
    assert g.stats.dropped_rate == 15 + 15


def test_invite_and_register_limits_are_separate() -> None:
    g = guard(
        requests=RateLimit(rate=1000, burst=1000),
        invites=RateLimit(rate=1, burst=3),
        registers=RateLimit(rate=1, burst=2),
    )
    assert admitted(g, request("INVITE"), ATTACKER, T0, 10) == 3
    assert admitted(g, request("REGISTER", "sip:gw.example.fi"), ATTACKER, T0, 10) == 2
    assert admitted(g, request("OPTIONS", "sip:gw.example.fi"), ATTACKER, T0, 10) == 10


def test_zero_rate_disables_a_limit() -> None:
    g = guard(requests=RateLimit(rate=0, burst=1), invites=RateLimit(rate=0, burst=1))
    assert admitted(g, request("INVITE"), ATTACKER, T0, 500) == 500


def test_unparseable_bytes_count_against_the_general_limit() -> None:
    g = guard(requests=RateLimit(rate=1, burst=2))
    assert admitted(g, b"\x00\x01 nonsense", ATTACKER, T0, 5) == 2


# ---------------------------------------------------------------------- scanners


@pytest.mark.parametrize(
    "agent", ["friendly-scanner", "sipvicious 0.3.3", "SIPCLI/v1.8", "VaxSIPUserAgent/3.1", "iWar"]
)
def test_scanner_user_agents_are_dropped_and_banned(agent: str) -> None:
    metrics = Drops()
    g = Guard(GuardConfig(), metrics=metrics)
    assert not g.admit(request("OPTIONS", "sip:100@gw", user_agent=agent), ATTACKER, T0)
    # banned now: a polite User-Agent does not help
    assert not g.admit(request("REGISTER", "sip:gw"), ATTACKER, T0 + 1)
    assert metrics.reasons == ["scanner", "banned"]
    assert g.stats.bans == 1


def test_scanner_without_ban_only_drops_that_request() -> None:
    g = guard(ban_scanners=False)
    assert not g.admit(request(user_agent="friendly-scanner"), ATTACKER, T0)
    assert g.admit(request(user_agent="Linphone/5.2"), ATTACKER, T0)


def test_custom_scanner_patterns_replace_the_defaults() -> None:
    g = guard(scanner_user_agents=(r"^evil/\d",))
    assert g.admit(request(user_agent="friendly-scanner"), ATTACKER, T0)
    assert not g.admit(request(user_agent="evil/2"), PHONE, T0)


def test_no_scanner_patterns() -> None:
    g = guard(scanner_user_agents=())
    assert g.admit(request(user_agent="friendly-scanner"), ATTACKER, T0)


def test_phone_user_agents_pass() -> None:
    g = GuardConfig()
    gd = Guard(g)
    for agent in ("Yealink SIP-T46S", "Grandstream GXP2170", "Linphone/5.2", "SIPp", "sipsak 0.9"):
        assert gd.admit(request(user_agent=agent), PHONE, T0)


# ---------------------------------------------------------------------- bans


def test_auth_failures_ban_after_the_limit_within_the_window() -> None:
    g = guard(max_auth_failures=3, auth_failure_window=60.0, ban_time=600.0)
    register = request("REGISTER", "sip:gw.example.fi")
    assert not g.auth_failed(ATTACKER, "100", now=T0)
    assert not g.auth_failed(ATTACKER, "101", now=T0 + 10)
    assert g.admit(register, ATTACKER, T0 + 11)
    assert g.auth_failed(ATTACKER, "102", now=T0 + 20)
    assert not g.admit(register, ATTACKER, T0 + 21)
    assert not g.admit(register, ATTACKER, T0 + 619)
    assert g.admit(register, ATTACKER, T0 + 620)  # ban_time after the third failure
    assert g.stats.dropped_banned == 2
    # the phone next door is not affected
    assert g.admit(register, PHONE, T0 + 21)


def test_failures_spread_beyond_the_window_do_not_ban() -> None:
    g = guard(max_auth_failures=3, auth_failure_window=60.0)
    for i in range(10):
        assert not g.auth_failed(ATTACKER, "100", now=T0 + 31 * i)
    assert g.admit(request("REGISTER", "sip:gw"), ATTACKER, T0 + 400)


def test_auth_failure_defaults_to_the_time_of_the_last_admit() -> None:
    g = guard(max_auth_failures=2, ban_time=100.0)
    g.admit(request("REGISTER", "sip:gw"), ATTACKER, T0)
    g.auth_failed(ATTACKER, "100")
    g.admit(request("REGISTER", "sip:gw"), ATTACKER, T0 + 1)
    assert g.auth_failed(ATTACKER, "100")
    assert g.banned(g.key_of(ATTACKER.host), T0 + 100)
    assert not g.banned(g.key_of(ATTACKER.host), T0 + 101.5)


def test_zero_ban_time_never_bans() -> None:
    g = guard(max_auth_failures=1, ban_time=0.0)
    g.auth_failed(ATTACKER, "x", now=T0)
    assert g.admit(request("REGISTER", "sip:gw"), ATTACKER, T0)
    assert g.active_bans == 0


def test_unban() -> None:
    g = guard()
    ban(g, ATTACKER)
    assert g.unban(ATTACKER.host)
    assert not g.unban(ATTACKER.host)
    assert g.admit(request(), ATTACKER, T0)


# ---------------------------------------------------------------------- rule 1


EMERGENCY_URIS = [
    "sip:112@gw.example.fi",
    "sip:112@gw.example.fi;user=phone",
    "tel:112",
    "tel:+358112",
    "sip:0112@gw.example.fi",
    "sip:%31%31%32@gw.example.fi",
    "urn:service:sos",
    "urn:service:sos.ambulance",
    "<sip:112@gw>",
]


@pytest.mark.parametrize("uri", EMERGENCY_URIS)
def test_emergency_invite_passes_ban_scanner_and_rate_limit(uri: str) -> None:
    g = guard(invites=RateLimit(rate=1, burst=1), requests=RateLimit(rate=1, burst=1))
    ordinary = request("INVITE")
    assert admitted(g, ordinary, ATTACKER, T0, 5) == 1  # rate limited
    ban(g, ATTACKER)
    assert not g.admit(ordinary, ATTACKER, T0)
    for agent in ("Yealink", "friendly-scanner"):
        assert g.admit(request("INVITE", uri, user_agent=agent), ATTACKER, T0)
    assert g.stats.privileged == 2


def test_configured_emergency_numbers_are_honoured() -> None:
    config = dataclasses.replace(GuardConfig(), max_auth_failures=1)
    plain = Guard(config)
    extended = Guard(config, dial_plan=DialPlan(EmergencyConfig(numbers=("112", "911"))))
    for g in (plain, extended):
        ban(g, ATTACKER)
    assert not plain.admit(request("INVITE", "sip:911@gw"), ATTACKER, T0)
    assert extended.admit(request("INVITE", "sip:911@gw"), ATTACKER, T0)


@pytest.mark.parametrize(
    "uri", ["sip:1120@gw", "sip:11@gw", "sip:0501121234@gw", "sip:112x@gw", "urn:service:sosx"]
)
def test_near_misses_are_not_emergency(uri: str) -> None:
    g = guard()
    ban(g, ATTACKER)
    assert not g.admit(request("INVITE", uri), ATTACKER, T0)


def test_in_dialog_ack_cancel_and_responses_pass_a_ban() -> None:
    g = guard()
    ban(g, ATTACKER)
    assert g.admit(request("BYE", to="<sip:bob@gw>;tag=b1"), ATTACKER, T0)
    assert g.admit(request("INVITE", to="<sip:bob@gw>;tag=b1"), ATTACKER, T0)  # re-INVITE
    assert g.admit(request("ACK"), ATTACKER, T0)
    assert g.admit(request("CANCEL"), ATTACKER, T0)
    assert g.admit(response(200), ATTACKER, T0)
    assert g.admit(response(180), ATTACKER, T0)
    assert not g.admit(request("BYE", to="<sip:bob@gw;tag=b1>"), ATTACKER, T0)


def test_in_dialog_requests_pass_the_rate_limit_without_using_tokens() -> None:
    g = guard(requests=RateLimit(rate=1, burst=2))
    bye = request("BYE", to="<sip:bob@gw>;tag=b1")
    options = request("OPTIONS", "sip:gw")
    assert admitted(g, options, PHONE, T0, 2) == 2
    assert admitted(g, bye, PHONE, T0, 50) == 50
    assert g.admit(options, PHONE, T0 + 1)


# ---------------------------------------------------------------------- rule 2


def test_trusted_peers_have_no_limits_and_pass_the_scanner_filter() -> None:
    g = guard(
        trusted_peers=(ipaddress.ip_network("10.20.0.0/16"),),
        requests=RateLimit(rate=1, burst=1),
    )
    assert admitted(g, request("INVITE"), PBX, T0, 100) == 100
    assert g.admit(request("REGISTER", "sip:gw", user_agent="friendly-scanner"), PBX, T0)
    assert admitted(g, request("INVITE"), ATTACKER, T0, 5) == 1


def test_password_guessing_from_a_trusted_peer_is_banned() -> None:
    # Issue 19: svcrack from the PBX's address found a password after 30 wrong
    # tries, because failures from trusted peers were not counted.
    g = guard(trusted_peers=(ipaddress.ip_network("10.20.0.0/16"),), max_auth_failures=3)
    register = request("REGISTER", "sip:gw")
    assert not g.auth_failed(PBX, "alice", now=T0)
    assert not g.auth_failed(PBX, "alice", now=T0 + 1)
    assert g.admit(register, PBX, T0 + 1)
    assert g.auth_failed(PBX, "alice", now=T0 + 2)
    assert g.banned(g.key_of(PBX.host), T0 + 2)
    assert not g.admit(register, PBX, T0 + 3)
    assert not g.admit(request("INVITE"), PBX, T0 + 3)
    # Rule 1 still holds for the banned PBX: emergency calls and calls in progress.
    assert g.admit(request("INVITE", "sip:112@gw"), PBX, T0 + 3)
    assert g.admit(request("BYE", to="<sip:bob@gw>;tag=b1"), PBX, T0 + 3)
    assert g.admit(request("ACK"), PBX, T0 + 3)
    # The ban ends and the PBX is unlimited again.
    assert admitted(g, request("INVITE"), PBX, T0 + 2 + g.config.ban_time, 50) == 50


def test_every_ban_and_unban_is_logged_once_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counters = Drops()
    config = dataclasses.replace(
        GuardConfig(), max_auth_failures=2, ban_time=100.0, auth_failure_window=60.0
    )
    g = Guard(config, metrics=counters)
    invite = request("INVITE")
    scan = request("OPTIONS", "sip:gw", user_agent="friendly-scanner")
    with caplog.at_level("INFO", logger="voipgw.guard"):
        g.auth_failed(ATTACKER, "100", now=T0)
        g.auth_failed(ATTACKER, "101", now=T0 + 1)
        assert counters.banned_sources() == 1
        assert admitted(g, invite, ATTACKER, T0 + 2, 500) == 0  # 500 drops, no lines
        assert not g.admit(scan, PHONE, T0 + 10)
        assert not g.admit(scan, PHONE, T0 + 11)  # dropped as banned: no second line
        assert counters.banned_sources() == 2
        assert g.admit(invite, Endpoint("UDP", "192.0.2.1", 5060), T0 + 101)  # any traffic
        assert counters.banned_sources() == 1
        assert g.unban(PHONE.host)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "guard: banned 203.0.113.66 for 100 s: 2 authentication failures within 60 s",
        "guard: banned 198.51.100.20 for 100 s: scanner User-Agent",
        "guard: unbanned 203.0.113.66 (expired) after 100 s (banned for authentication failures)",
        "guard: unbanned 198.51.100.20 (operator) after 91 s (banned for a scanner)",
    ]
    assert counters.bans == ["auth_failures", "scanner"]
    assert counters.unbans == ["expired", "operator"]
    assert counters.banned_sources() == 0
    assert counters.reasons.count("banned") == 501


def test_an_evicted_ban_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    counters = Drops()
    g = Guard(
        dataclasses.replace(GuardConfig(), max_sources=2, max_auth_failures=1), metrics=counters
    )
    with caplog.at_level("WARNING", logger="voipgw.guard"):
        for i in range(3):
            g.auth_failed(Endpoint("UDP", f"10.9.0.{i}", 5060), "x", now=T0 + i)
    assert counters.unbans == ["evicted"]
    assert "guard: unbanned 10.9.0.0 (evicted) after 2 s" in caplog.records[-1].getMessage()


# ---------------------------------------------------------------------- bounds


def test_tracked_sources_are_bounded_lru() -> None:
    g = guard(max_sources=100, requests=RateLimit(rate=0.001, burst=1))
    for i in range(1000):
        g.admit(
            request("OPTIONS", "sip:gw"), Endpoint("UDP", f"10.0.{i // 250}.{i % 250}", 5060), T0
        )
    assert g.tracked_sources == 100
    # the most recent source is still remembered (its bucket is empty) ...
    assert not g.admit(request("OPTIONS", "sip:gw"), Endpoint("UDP", "10.0.3.249", 5060), T0)
    # ... the first one was forgotten and starts afresh
    assert g.admit(request("OPTIONS", "sip:gw"), Endpoint("UDP", "10.0.0.0", 5060), T0)


def test_bans_are_bounded_oldest_first() -> None:
    g = guard(max_sources=10, max_auth_failures=1)
    for i in range(25):
        g.auth_failed(Endpoint("UDP", f"10.9.0.{i}", 5060), "x", now=T0 + i)
    assert g.active_bans == 10
    assert not g.banned("10.9.0.14", T0 + 30)
    assert g.banned("10.9.0.15", T0 + 30)


def test_ipv6_sources_are_tracked_per_prefix() -> None:
    g = guard(max_auth_failures=1)
    g.auth_failed(Endpoint("UDP", "2001:db8:1:2::1", 5060), "x", now=T0)
    inside = Endpoint("UDP", "2001:db8:1:2:ffff::9", 5060)
    outside = Endpoint("UDP", "2001:db8:1:3::1", 5060)
    assert not g.admit(request(), inside, T0)
    assert g.admit(request(), outside, T0)
    assert g.key_of("2001:db8:1:2::1") == "2001:db8:1:2::/64"


def test_disabled_guard_admits_everything() -> None:
    g = guard(enabled=False, requests=RateLimit(rate=1, burst=1))
    assert admitted(g, request(user_agent="friendly-scanner"), ATTACKER, T0, 10) == 10


def test_drop_reasons_reach_the_metrics() -> None:
    metrics = Drops()
    g = Guard(
        dataclasses.replace(GuardConfig(), invites=RateLimit(rate=1, burst=1), max_auth_failures=1),
        metrics=metrics,
    )
    g.admit(request(), PHONE, T0)
    g.admit(request(), PHONE, T0)
    g.auth_failed(ATTACKER, "x", now=T0)
    g.admit(request(), ATTACKER, T0)
    assert metrics.reasons == ["rate_limited", "banned"]


# ---------------------------------------------------------------------- fuzz


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.booleans())
def test_any_bytes_give_a_decision(data: bytes, prefix: bool) -> None:
    g = guard(max_auth_failures=1)
    g.auth_failed(ATTACKER, "x", now=T0)
    blob = (b"INVITE sip:112@gw SIP/2.0\r\nTo: " if prefix else b"") + data
    # Never an exception; an emergency request line passes even from a banned source.
    decision = g.admit(blob, ATTACKER, T0)
    assert decision is True if prefix else decision is is_response(blob)
    assert g.admit(blob, PHONE, T0) in (True, False)
