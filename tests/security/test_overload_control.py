"""RFC 7339 loss-based overload control: the loss computation and the Via stamp."""

from __future__ import annotations

import pytest

from gateway.edge.guard import (
    Guard,
    GuardConfig,
    LossController,
    OverloadFeedback,
    next_loss,
    stamp_overload_feedback,
)
from gateway.sip.builders import build_response
from gateway.sip.events import Endpoint
from gateway.sip.headers import parse_via
from gateway.sip.message import Request
from gateway.sip.parser import parse_message
from tests.security.messages import request

FEEDBACK = OverloadFeedback(loss=35, validity=2.0, seq=1282321615.781)


def invite(via: str) -> Request:
    data = request("INVITE").replace(
        b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK", f"Via: {via};branch=z9hG4bK".encode()
    )
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


# ---------------------------------------------------------------------- next_loss


@pytest.mark.parametrize(
    ("previous", "utilisation", "target", "expected"),
    [
        (0.0, 0.5, 0.9, 0.0),  # under target: no loss
        (0.0, 0.9, 0.9, 0.0),
        (0.0, 1.8, 0.9, 0.5),  # twice the target: drop half
        (0.0, 4.5, 0.9, 0.8),  # five times: drop 80 %
        (0.5, 0.9, 0.9, 0.5),  # at target with 50 % in force: keep it
        (0.5, 0.45, 0.9, 0.0),  # offer fell: the loss goes away
        (0.8, 1.8, 0.9, 0.9),  # still twice the target through 80 %: tighten
        (0.0, 0.0, 0.9, 0.0),
        (1.0, 0.0, 0.9, 0.0),
    ],
)
def test_next_loss(previous: float, utilisation: float, target: float, expected: float) -> None:
    assert next_loss(previous, utilisation, target=target) == pytest.approx(expected)


def test_next_loss_converges_on_a_steady_overload() -> None:
    # Clients offering 5x the capacity, applying each feedback exactly.
    capacity, offered, loss = 100.0, 500.0, 0.0
    for _ in range(5):
        loss = next_loss(loss, offered * (1 - loss) / capacity, target=0.9)
    assert offered * (1 - loss) == pytest.approx(90.0)


# ---------------------------------------------------------------------- controller


def test_controller_measures_windows_and_bumps_seq_on_change() -> None:
    oc = LossController(capacity=100, target=0.9, interval=1.0, validity=2.0, seq_offset=1e9)
    now = 50.0
    assert oc.feedback(now).loss == 0
    for i in range(450):  # 450/s in the first second: 4.5x capacity
        oc.arrival(now + i / 450)
    first = oc.feedback(now + 1.0)
    assert first.loss == 80
    assert first.seq == pytest.approx(1e9 + 51.0)
    assert first.validity == 2.0
    # same loss again (clients obeyed: 90/s got through) keeps the seq
    for i in range(90):
        oc.arrival(now + 1.0 + i / 90)
    assert oc.feedback(now + 2.0) == first
    # the flood ends: the loss returns to 0 with a higher seq
    last = oc.feedback(now + 3.5)
    assert last.loss == 0
    assert last.seq > first.seq


def test_controller_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="capacity"):
        LossController(capacity=0)


def test_guard_feeds_new_invites_only() -> None:
    oc = LossController(capacity=1, interval=1.0)
    g = Guard(GuardConfig(), overload=oc)
    src = Endpoint("UDP", "198.51.100.20", 5060)
    g.admit(request("INVITE"), src, 0.0)
    for _ in range(4):
        g.admit(request("INVITE"), src, 0.5)
        g.admit(request("BYE", to="<sip:b@gw>;tag=1"), src, 0.5)
        g.admit(request("OPTIONS", "sip:gw"), src, 0.5)
    # 5 new INVITEs in 1 s against a capacity of 1/s and target 0.9: 82 % loss
    assert oc.feedback(1.0).loss == 82


# ---------------------------------------------------------------------- stamp


def test_stamp_adds_rfc7339_parameters_to_the_top_via() -> None:
    req = invite('SIP/2.0/UDP 192.0.2.10:5060;oc;oc-algo="loss,A"')
    req.headers.add("Via", "SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKlower;oc")
    response = build_response(req, 503)
    assert stamp_overload_feedback(response, FEEDBACK)
    top, lower = response.headers.values("Via")
    via = parse_via(top)[0]
    assert via.param("oc") == "35"
    assert via.param("oc-algo") == '"loss"'
    assert via.param("oc-validity") == "2000"
    assert via.param("oc-seq") == "1282321615.781"
    assert via.branch is not None and via.branch.startswith("z9hG4bK")
    assert via.sent_by == ("192.0.2.10", 5060)
    # only the top Via: the lower one belongs to another hop
    assert lower == "SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKlower;oc"
    # in place: the top Via stays the first header line, parameters where they were
    name, value = next(iter(response.headers))
    assert name == "Via"
    assert value.startswith('SIP/2.0/UDP 192.0.2.10:5060;oc=35;oc-algo="loss";branch=z9hG4bK')
    assert value.endswith(";oc-validity=2000;oc-seq=1282321615.781")


def test_stamp_with_bare_oc_assumes_loss() -> None:
    response = build_response(invite("SIP/2.0/UDP 192.0.2.10:5060;oc"), 200)
    assert stamp_overload_feedback(response, OverloadFeedback(loss=0, validity=0.5, seq=7.0))
    via = parse_via(response.headers.values("Via")[0])[0]
    assert (via.param("oc"), via.param("oc-validity"), via.param("oc-seq")) == ("0", "500", "7.000")


@pytest.mark.parametrize(
    "via",
    [
        "SIP/2.0/UDP 192.0.2.10:5060",  # client did not advertise oc
        'SIP/2.0/UDP 192.0.2.10:5060;oc;oc-algo="A,B"',  # no algorithm we support
        'SIP/2.0/UDP 192.0.2.10:5060;oc-algo="loss"',  # oc-* without oc itself
        "SIP/2.0/UDP 192.0.2.10:5060;rport=5060;octet",  # a name that starts with oc
    ],
)
def test_stamp_leaves_other_responses_alone(via: str) -> None:
    response = build_response(invite(via), 503)
    before = response.serialize()
    assert not stamp_overload_feedback(response, FEEDBACK)
    assert response.serialize() == before


@pytest.mark.parametrize("param", [";oc", "; oc", ";OC=20", ";oc ;rport"])
def test_stamp_finds_oc_however_it_is_spaced(param: str) -> None:
    response = build_response(invite(f"SIP/2.0/UDP 192.0.2.10:5060{param}"), 503)
    assert stamp_overload_feedback(response, FEEDBACK)
    assert "oc=35" in (response.headers.get("Via") or "").lower()


def test_stamp_on_comma_joined_vias_keeps_the_others() -> None:
    req = invite("SIP/2.0/UDP 192.0.2.10:5060;oc")
    line = req.headers.get("Via")
    assert line is not None
    req.headers.set("Via", line + ", SIP/2.0/TCP 192.0.2.50;branch=z9hG4bKdown")
    response = build_response(req, 180)
    assert stamp_overload_feedback(response, FEEDBACK)
    vias = response.headers.values("Via")
    assert len(vias) == 2
    assert parse_via(vias[0])[0].param("oc") == "35"
    assert vias[1] == "SIP/2.0/TCP 192.0.2.50;branch=z9hG4bKdown"


def test_stamp_without_via() -> None:
    response = build_response(invite("SIP/2.0/UDP 192.0.2.10:5060;oc"), 200)
    response.headers.remove("Via")
    assert not stamp_overload_feedback(response, FEEDBACK)
