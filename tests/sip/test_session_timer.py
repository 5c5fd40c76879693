"""RFC 4028 negotiation as pure functions: offer x answer -> interval, refresher, 422."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.sip.errors import ParseError
from gateway.sip.message import Headers
from gateway.sip.session_timer import (
    IntervalTooSmall,
    Refresher,
    SessionExpires,
    SessionTimer,
    TimerOffer,
    negotiate_as_uac,
    negotiate_as_uas,
    parse_min_se,
    parse_session_expires,
    retry_after_422,
    timer_offer,
)

UAC, UAS = Refresher.UAC, Refresher.UAS


def offer(supported: bool, se: int | None = None, refresher=None, min_se: int = 90):
    expires = SessionExpires(delta=se, refresher=refresher) if se is not None else None
    return TimerOffer(supported=supported, session_expires=expires, min_se=min_se)


# (offer, UAS interval, UAS Min-SE) -> answer. RFC 4028 table 2 and section 9.
UAS_TABLE = [
    # no Session-Expires: the UAS adds its own; refresher by support
    (offer(False), SessionTimer(interval=1800, refresher=UAS)),
    (offer(True), SessionTimer(interval=1800, refresher=UAC, require=True)),
    # the offered refresher is kept when the UAC supports timers
    (offer(True, 1200, UAS), SessionTimer(interval=1200, refresher=UAS)),
    (offer(True, 1200, UAC), SessionTimer(interval=1200, refresher=UAC, require=True)),
    (offer(True, 1200), SessionTimer(interval=1200, refresher=UAC, require=True)),
    # a proxy's Session-Expires for a UAC without support: the UAS refreshes
    (offer(False, 1200, UAC), SessionTimer(interval=1200, refresher=UAS)),
    # a larger interval is lowered to the UAS's, never below the request's Min-SE
    (offer(True, 7200), SessionTimer(interval=1800, refresher=UAC, require=True)),
    (offer(True, 7200, min_se=3600), SessionTimer(interval=3600, refresher=UAC, require=True)),
    # below the UAS's minimum: 422 with its Min-SE
    (offer(True, 60), IntervalTooSmall(min_se=90)),
    (offer(False, 89, UAS), IntervalTooSmall(min_se=90)),
    (offer(True, 90), SessionTimer(interval=90, refresher=UAC, require=True)),
]


@pytest.mark.parametrize(("request_offer", "expected"), UAS_TABLE)
def test_uas_negotiation_table(request_offer, expected):
    assert negotiate_as_uas(request_offer, interval=1800, min_se=90) == expected


def test_uas_lenient_accepts_a_small_interval():
    """An emergency call is never refused: the caller's interval is taken."""
    agreed = negotiate_as_uas(offer(True, 30), interval=1800, min_se=90, lenient=True)
    assert agreed == SessionTimer(interval=30, refresher=UAC, require=True)


@given(
    supported=st.booleans(),
    se=st.none() | st.integers(1, 86_400),
    refresher=st.sampled_from([None, UAC, UAS]),
    request_min_se=st.integers(90, 4000),
    interval=st.integers(90, 7200),
    min_se=st.integers(90, 600),
)
def test_uas_answer_obeys_rfc_4028(supported, se, refresher, request_min_se, interval, min_se):
    interval = max(interval, min_se)
    request_offer = offer(supported, se, refresher, request_min_se)
    agreed = negotiate_as_uas(request_offer, interval=interval, min_se=min_se)
    if isinstance(agreed, IntervalTooSmall):
        assert se is not None and se < min_se
        assert agreed.min_se == min_se
        return
    # Never larger than offered, never below what either side requires.
    if se is not None:
        assert agreed.interval <= se
        assert agreed.interval >= min(se, request_min_se)
    assert agreed.interval >= min_se or (se is not None and agreed.interval == se)
    # Only a UAC that supports timers may be made the refresher, and then Require.
    if agreed.refresher is UAC:
        assert supported and agreed.require
    if supported and se is not None and refresher is not None:
        assert agreed.refresher is refresher
    assert agreed.refresh_delay < agreed.expiry_delay < agreed.interval


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        # RFC 4028 7.2: no Session-Expires in the 2xx -> the UAC refreshes at its own
        ([], SessionTimer(interval=1800, refresher=UAC)),
        ([("Session-Expires", "900;refresher=uas")], SessionTimer(interval=900, refresher=UAS)),
        ([("Session-Expires", "900;refresher=uac")], SessionTimer(interval=900, refresher=UAC)),
        ([("Session-Expires", "900")], SessionTimer(interval=900, refresher=UAC)),
        ([("x", "600;refresher=UAS")], SessionTimer(interval=600, refresher=UAS)),
    ],
)
def test_uac_processing_of_2xx(response, expected):
    assert negotiate_as_uac(1800, Headers(response)) == expected


def test_retry_after_422_takes_the_largest_min_se():
    assert retry_after_422(90, 90, Headers([("Min-SE", "300")])) == (300, 300)
    assert retry_after_422(1800, 90, Headers([("Min-SE", "300")])) == (1800, 300)
    assert retry_after_422(1800, 600, Headers([("Min-SE", "300")])) == (1800, 600)
    assert retry_after_422(1800, 90, Headers()) is None
    assert retry_after_422(1800, 90, Headers([("Min-SE", "soon")])) is None


def test_expiry_bound_is_rfc_4028_section_10():
    assert SessionTimer(interval=1800, refresher=UAC).expiry_delay == 1800 - 32
    assert SessionTimer(interval=90, refresher=UAC).expiry_delay == 60
    assert SessionTimer(interval=6, refresher=UAC).expiry_delay == 4
    assert SessionTimer(interval=1800, refresher=UAC).refresh_delay == 900


def test_header_parsing():
    assert parse_session_expires("1800") == SessionExpires(delta=1800)
    assert parse_session_expires(" 90 ;refresher=uac;x=1") == SessionExpires(
        delta=90, refresher=UAC
    )
    assert str(SessionExpires(delta=90, refresher=UAS)) == "90;refresher=uas"
    assert parse_min_se("120;foo") == 120
    for bad in ("", "abc", "-5", "86401", "99999999999", "90;refresher=both"):
        with pytest.raises(ParseError):
            parse_session_expires(bad)
    with pytest.raises(ParseError):
        parse_min_se("x")


def test_timer_offer_reads_supported_require_and_defaults():
    headers = Headers([("Supported", "100rel, Timer"), ("Session-Expires", "600")])
    assert timer_offer(headers) == offer(True, 600)
    assert timer_offer(Headers([("Require", "timer"), ("Min-SE", "120")])) == offer(
        True, min_se=120
    )
    assert timer_offer(Headers()) == offer(False)
