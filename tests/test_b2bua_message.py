"""Out-of-dialog MESSAGEs the B2BUA core sends (gateway/b2bua/message.py, RFC 3428):
the request on the wire, and its outcome as one MessageDone matched by transaction key.
Sans-IO pair tests with a hand-advanced clock (tests/sipnet.py)."""

from __future__ import annotations

from gateway.b2bua import MessageDone
from gateway.sip.events import Endpoint
from gateway.sip.headers import parse_name_address
from gateway.sip.message import Request
from tests.sipnet import GatewayCore, Network, Peer
from tests.test_b2bua import GW, establish, make

DESK = Endpoint("UDP", "127.0.0.9", 5070)
DESK_URI = "sip:desk@127.0.0.9:5070"
TEXT = "EMERGENCY CALL 112\nWhere: Metsänneidonkuja 12, 02130 Espoo, FI\n".encode()


def desk_net() -> tuple[Network, GatewayCore, Peer]:
    desk = Peer(DESK)
    net, gateway, _, _ = make(None, desk)
    return net, gateway, desk


def done(gateway: GatewayCore) -> list[MessageDone]:
    return [e for e in gateway.b2bua_events if isinstance(e, MessageDone)]


def test_message_on_the_wire_and_its_2xx() -> None:
    net, gateway, desk = desk_net()
    key = gateway.b2bua.send_message(DESK_URI, DESK, TEXT, net.now)
    net.transfer()
    (received,) = desk.requests("MESSAGE")
    request = received.request
    assert request.uri == DESK_URI
    assert request.body == TEXT
    assert request.headers.get("Content-Type") == "text/plain;charset=UTF-8"
    assert request.headers.get("CSeq") == "1 MESSAGE"
    assert request.headers.get("Max-Forwards") == "70"
    assert parse_name_address(request.headers.get("To") or "").uri == DESK_URI
    assert parse_name_address(request.headers.get("To") or "").tag is None
    sender = parse_name_address(request.headers.get("From") or "")
    assert sender.uri == "sip:voipgw@127.0.0.1:5060"
    assert sender.tag
    # RFC 3428: a MESSAGE makes no dialog, so it carries no Contact.
    assert request.headers.get("Contact") is None
    assert not done(gateway)  # nothing is reported before the answer
    desk.answer(received, 200, net.now)
    net.transfer()
    assert done(gateway) == [MessageDone(transaction=key, status=200, reason="OK")]
    assert gateway.b2bua._messages == set()


def test_provisional_ignored_error_status_reported() -> None:
    net, gateway, desk = desk_net()
    key = gateway.b2bua.send_message(DESK_URI, DESK, TEXT, net.now)
    net.transfer()
    (received,) = desk.requests("MESSAGE")
    desk.answer(received, 100, net.now)
    net.transfer()
    assert not done(gateway)
    desk.answer(received, 404, net.now)
    net.transfer()
    assert done(gateway) == [MessageDone(transaction=key, status=404, reason="Not Found")]


def test_silent_desk_times_out_after_timer_f() -> None:
    net, gateway, desk = desk_net()
    net.drop = lambda data, src, dst: dst.port == DESK.port
    key = gateway.b2bua.send_message(DESK_URI, DESK, TEXT, net.now)
    net.transfer()
    net.advance(31.0, step=0.5)
    assert not done(gateway)  # Timer F is 64*T1 = 32 s (RFC 3261 17.1.2.2)
    net.advance(2.0, step=0.5)
    assert done(gateway) == [MessageDone(transaction=key, status=None, reason="timeout")]
    # Timer E retransmitted it over UDP meanwhile.
    sent = [m for m in net.sent(GW, DESK) if isinstance(m, Request)]
    assert len(sent) > 5
    assert {m.method for m in sent} == {"MESSAGE"}


def test_transport_failure_reported() -> None:
    net, gateway, _ = desk_net()
    key = gateway.b2bua.send_message(DESK_URI, DESK, TEXT, net.now)
    gateway.layer.transport_failed(DESK, net.now)
    net.transfer()
    assert done(gateway) == [MessageDone(transaction=key, status=None, reason="transport error")]


def test_two_messages_each_matched_by_its_key_beside_a_call() -> None:
    desk = Peer(DESK)
    net, gateway, alice, bob = make(None, desk)
    establish(net, alice, bob)
    first = gateway.b2bua.send_message(DESK_URI, DESK, b"one", net.now)
    second = gateway.b2bua.send_message(DESK_URI, DESK, b"two", net.now)
    assert first != second
    net.transfer()
    one, two = desk.requests("MESSAGE")
    desk.answer(two, 202, net.now)
    desk.answer(one, 480, net.now)
    net.transfer()
    assert {(d.transaction, d.status) for d in done(gateway)} == {(first, 480), (second, 202)}
    # The call is untouched: still up, nothing ended.
    assert len(gateway.b2bua.calls) == 1
    assert gateway.ended == []
