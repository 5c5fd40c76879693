"""Load shedding (gateway.edge.overload): the state, the RFC 7339 loss, what is shed."""

from __future__ import annotations

import pytest

from gateway.edge.overload import (
    ACK_WINDOW,
    CALM_RATIO,
    CLEAR_RATIO,
    LOSS_DECREASE,
    RECENT,
    SHED_TAG_PREFIX,
    LoadMonitor,
    LoadShedder,
    OverloadState,
)
from gateway.sip.events import Endpoint, TransactionKey
from gateway.sip.headers import parse_name_address, parse_via
from gateway.sip.message import Response
from gateway.sip.parser import parse_message
from routing.config import EmergencyConfig
from routing.emergency import DialPlan
from tests.security.messages import request, response

LAG, QUEUE = 0.05, 131072
SOURCE = Endpoint("UDP", "192.0.2.99", 40000)


def monitor() -> LoadMonitor:
    return LoadMonitor(shed_lag=LAG, shed_receive_queue=QUEUE, feedback_interval=1.0)


def shedder(m: LoadMonitor | None = None) -> LoadShedder:
    return LoadShedder(
        m or monitor(), DialPlan(EmergencyConfig()), retry_after=7, tag="0123456789ab"
    )


# ---------------------------------------------------------------------- LoadMonitor


def test_starts_normal_and_stays_so_below_both_thresholds() -> None:
    m = monitor()
    assert m.state is OverloadState.NORMAL
    assert not m.sample(0.0, lag=LAG, receive_queue=QUEUE)  # at, not past
    assert not m.shedding


@pytest.mark.parametrize(("lag", "queue"), [(LAG * 1.01, 0), (0.0, QUEUE + 1)])
def test_either_signal_past_its_threshold_starts_shedding(lag: float, queue: int) -> None:
    m = monitor()
    assert m.sample(0.0, lag=lag, receive_queue=queue)
    assert m.state is OverloadState.SHEDDING


def test_hysteresis_holds_until_both_signals_are_below_half() -> None:
    m = monitor()
    m.sample(0.0, lag=1.0, receive_queue=0)
    # Below the threshold but not below half of it: still shedding.
    assert not m.sample(0.01, lag=LAG * 0.6, receive_queue=0)
    assert not m.sample(0.02, lag=0.0, receive_queue=int(QUEUE * 0.6))
    assert m.shedding
    assert m.sample(0.03, lag=LAG * CLEAR_RATIO * 0.9, receive_queue=int(QUEUE * 0.4))
    assert m.state is OverloadState.NORMAL


def test_calm_only_far_below_both_thresholds_and_not_while_shedding_or_waiting() -> None:
    m = LoadMonitor(shed_lag=LAG, shed_receive_queue=QUEUE, shed_after=0.1)
    assert m.calm()  # no sample yet
    m.sample(0.0, lag=LAG * CALM_RATIO, receive_queue=int(QUEUE * CALM_RATIO))
    assert m.calm()  # at a quarter: still calm
    m.sample(0.01, lag=LAG * CALM_RATIO * 1.1, receive_queue=0)
    assert not m.calm()
    m.sample(0.02, lag=0.0, receive_queue=int(QUEUE * CALM_RATIO) + 1)
    assert not m.calm()
    # Past a threshold, waiting out the onset: the next samples must come fast.
    m.sample(0.03, lag=LAG * 2, receive_queue=0)
    assert not m.shedding
    m.sample(0.04, lag=0.0, receive_queue=0)  # one calm sample ends the wait ...
    assert m.calm()
    m.sample(0.05, lag=LAG * 2, receive_queue=0)
    m.sample(0.20, lag=LAG * 2, receive_queue=0)
    assert m.shedding
    # ... but shedding holds until both signals are below half (Rule 2), and while
    # it does the load is not calm, whatever the latest sample says.
    m.sample(0.21, lag=LAG * 0.6, receive_queue=0)
    assert m.shedding and not m.calm()
    m.sample(0.22, lag=0.0, receive_queue=0)
    assert not m.shedding and m.calm()


def test_a_transient_stall_does_not_shed_a_lasting_backlog_does() -> None:
    m = LoadMonitor(shed_lag=LAG, shed_receive_queue=QUEUE, shed_after=0.1)
    # One heartbeat 300 ms late (the process descheduled), a backlog drained in 50 ms.
    assert not m.sample(0.30, lag=0.3, receive_queue=QUEUE * 3)
    assert not m.sample(0.31, lag=0.0, receive_queue=QUEUE * 2)
    assert not m.sample(0.35, lag=0.0, receive_queue=QUEUE // 2)
    assert not m.shedding
    # A backlog that stays past the threshold for shed_after: shed.
    for i in range(10):
        assert not m.sample(1.0 + i * 0.01, lag=0.0, receive_queue=QUEUE * 2)
    assert m.sample(1.10, lag=0.0, receive_queue=QUEUE * 2)
    assert m.shedding
    # Stopped; within RECENT a threshold passed again sheds at once.
    assert m.sample(1.2, lag=0.0, receive_queue=0)
    assert m.sample(1.2 + RECENT / 2, lag=0.0, receive_queue=QUEUE * 2)
    assert m.sample(1.3 + RECENT / 2, lag=0.0, receive_queue=0)
    # Long after: the onset delay again.
    assert not m.sample(5.0, lag=0.0, receive_queue=QUEUE * 2)


def test_feedback_asks_upstreams_to_hold_back_the_shed_share() -> None:
    m = LoadMonitor(
        shed_lag=LAG, shed_receive_queue=QUEUE, feedback_interval=1.0, validity=2.0, seq_offset=1e9
    )
    assert m.feedback(0.0).loss == 0
    for i in range(100):
        m.new_call(0.5, shed=i % 4 != 0)  # 75 of 100 shed
    first = m.feedback(1.0)
    assert first.loss == 75
    assert first.validity == 2.0
    assert first.seq == pytest.approx(1e9 + 1.0)
    # Clients now send a quarter; the gateway still sheds half of it: the loss
    # tightens to 1 - 0.25 * 0.5.
    for i in range(20):
        m.new_call(1.5, shed=i % 2 == 0)
    second = m.feedback(2.0)
    assert second.loss == 88  # ceil(87.5)
    assert second.seq > first.seq
    # A window with nothing shed: additive decrease, so clients probe back up.
    for _ in range(10):
        m.new_call(2.5, shed=False)
    assert m.feedback(3.0).loss == pytest.approx(88 - 100 * LOSS_DECREASE, abs=1)


def test_feedback_seq_stays_while_the_loss_does() -> None:
    m = monitor()
    m.feedback(0.0)
    assert m.feedback(1.0).loss == 0
    assert m.feedback(2.0) == m.feedback(1.5)


# ---------------------------------------------------------------------- LoadShedder


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (request("INVITE"), True),  # a new ordinary call: shed
        (request("INVITE", "sip:112@gw.example.fi"), False),  # emergency: first
        (request("INVITE", "urn:service:sos.police"), False),
        (request("INVITE", to="<sip:b@gw.example.fi>;tag=x1"), None),  # re-INVITE
        (request("BYE", to="<sip:b@gw.example.fi>;tag=x1"), None),
        (request("ACK"), None),
        (request("CANCEL"), None),
        (request("OPTIONS"), None),
        (request("REGISTER"), None),
        (response(200), None),
        (b"INVITE garbage", None),
    ],
)
def test_classify(data: bytes, expected: bool | None) -> None:
    assert shedder().classify(data, SOURCE) is expected


def test_a_possible_emergency_callback_is_taken_first_not_shed() -> None:
    """An INVITE the router may take for an emergency callback (an open window of
    the number, or a centre's address) is never shed: it is an emergency call's
    continuation (RFC 6881 SP-35)."""
    s = shedder()
    asked: list[tuple[str, object]] = []

    def window_of_b(uri: str, source: object) -> bool:
        asked.append((uri, source))
        return uri.startswith("sip:0501234567@")  # the default Request-URI

    s.may_be_callback = window_of_b
    assert s.classify(request("INVITE"), SOURCE) is False
    assert asked == [("sip:0501234567@gw.example.fi", SOURCE)]
    assert s.classify(request("INVITE", "sip:c@gw.example.fi"), SOURCE) is True


def test_reject_answers_503_statelessly_with_retry_after_and_the_shed_tag() -> None:
    m = monitor()
    s = shedder(m)
    invite = request("INVITE", extra=("Supported: timer",))
    invite = invite.replace(b";branch=", b";rport;branch=")
    rejected = s.reject(invite, SOURCE, 0.0, lambda _: None)
    assert rejected is not None
    answer, destination, shed_invite = rejected
    # The INVITE as parsed goes with it, for the shed call's CDR.
    assert shed_invite.method == "INVITE"
    assert shed_invite.headers.get("Call-ID") == parse_message(invite).headers.get("Call-ID")
    # RFC 3581 4: back to the source address and port the request came from.
    assert destination == SOURCE
    again = parse_message(answer.serialize())
    assert isinstance(again, Response)
    assert (again.status, again.reason) == (503, "Service Unavailable")
    assert again.headers.get("Retry-After") == "7"
    to = parse_name_address(again.headers.get("To") or "")
    assert to.tag == SHED_TAG_PREFIX + "0123456789ab"
    via = parse_via(again.headers.get("Via") or "")[0]
    assert via.received == SOURCE.host
    assert via.rport == str(SOURCE.port)
    assert again.headers.get("Call-ID") == parse_message(invite).headers.get("Call-ID")
    assert again.headers.get("CSeq") == "1 INVITE"
    assert "Supported" not in again.headers
    assert s.shed == 1
    # Counted for RFC 7339 as a shed call.
    assert m.feedback(1.0).loss == 100


def test_reject_leaves_an_unparsable_invite_to_the_core() -> None:
    s = shedder()
    bad = b"INVITE sip:x@y SIP/2.0\r\nVia: nonsense\r\n\r\n"
    assert s.reject(bad, SOURCE, 0.0, lambda _: None) is None
    assert s.shed == 0


def test_reject_leaves_a_retransmission_to_its_transaction() -> None:
    s = shedder()
    invite = request("INVITE")
    seen: list[TransactionKey] = []

    def known(key: TransactionKey) -> object | None:
        seen.append(key)
        return object()  # the core holds this INVITE's server transaction

    assert s.reject(invite, SOURCE, 0.0, known) is None
    assert s.shed == 0
    (key,) = seen
    assert (key.method, key.server) == ("INVITE", True)
    assert key.branch.startswith("z9hG4bK")


def test_the_ack_of_a_shed_503_is_absorbed_and_nothing_else() -> None:
    s = shedder()
    tag = SHED_TAG_PREFIX + "0123456789ab"
    assert s.absorbs(request("ACK", to=f"<sip:b@gw.example.fi>;tag={tag}"))
    assert not s.absorbs(request("ACK", to="<sip:b@gw.example.fi>;tag=0123456789ab"))
    assert not s.absorbs(request("BYE", to=f"<sip:b@gw.example.fi>;tag={tag}"))
    assert not s.absorbs(request("ACK"))
    assert s.absorbed == 1


def test_rules_3_and_4_are_engaged_while_shedding_and_while_503s_may_be_acked() -> None:
    m = monitor()
    s = shedder(m)
    assert not s.engaged(0.0)  # normal operation: batches go to the core as they are
    m.sample(0.0, lag=2 * LAG, receive_queue=0)
    m.sample(1.0, lag=2 * LAG, receive_queue=0)
    assert m.shedding and s.engaged(1.0)
    assert s.reject(request("INVITE"), SOURCE, 1.0, lambda _: None) is not None
    m.sample(2.0, lag=0.0, receive_queue=0)
    assert not m.shedding
    # The last 503's ACK may still come: it is absorbed, not parsed, until then.
    assert s.engaged(1.0 + ACK_WINDOW - 0.001)
    assert not s.engaged(1.0 + ACK_WINDOW)
