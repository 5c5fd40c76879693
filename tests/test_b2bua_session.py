"""Calls that end by themselves (gateway/b2bua/session.py): session timers on both
legs, maximum duration, dead media, shutdown. Pair tests with a hand-advanced clock."""

from __future__ import annotations

from gateway.b2bua import B2bua, EndedBy, Route
from gateway.b2bua.call import Side
from gateway.sip.builders import build_response
from gateway.sip.dialog import Dialog
from gateway.sip.events import Endpoint, RequestReceived
from gateway.sip.message import Headers, Request
from gateway.sip.session_timer import SessionTimerPolicy
from tests.sipnet import SDP_ANSWER, SDP_OFFER, GatewayCore, Network, Peer, counter_tokens
from tests.test_b2bua import GW_SDP, RELAY_OFFER, announced

GW = Endpoint("UDP", "127.0.0.1", 5060)
ALICE = Endpoint("UDP", "127.0.0.2", 5062)
BOB = Endpoint("UDP", "127.0.0.3", 5080)

#: Small intervals keep the clock short: refresh at 50 s, expiry 100 - 32 = 68 s.
POLICY = SessionTimerPolicy(interval=100, min_se=90)
HOLD_SDP = SDP_OFFER.replace(b"a=rtpmap:0 PCMU/8000\r\n", b"a=rtpmap:0 PCMU/8000\r\na=sendonly\r\n")


def make(route=None):
    alice, bob = Peer(ALICE), Peer(BOB)
    gateway = GatewayCore(GW, route or (lambda event: Route(targets=(BOB,))))
    gateway.b2bua = B2bua(
        gateway.layer, new_token=counter_tokens("gwt"), no_answer_timeout=60, session_timers=POLICY
    )
    return Network(gateway, alice, bob), gateway, alice, bob


def invite(alice: Peer, now: float, *extra: tuple[str, str]) -> Request:
    headers = Headers(
        [
            ("Max-Forwards", "70"),
            ("From", f"<sip:alice@{ALICE.host_port}>;tag=a1"),
            ("To", "<sip:bob@127.0.0.3>"),
            ("Call-ID", f"call-{now}"),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<sip:alice@{ALICE.host_port}>"),
            ("Content-Type", "application/sdp"),
            *extra,
        ]
    )
    request = Request(method="INVITE", uri="sip:bob@127.0.0.3", headers=headers, body=SDP_OFFER)
    alice.layer.send_request(request, GW, now)
    return request


def respond(peer: Peer, event: RequestReceived, status: int, now: float, *headers, body=b""):
    assert event.transaction is not None
    extra = [("Contact", f"<sip:peer@{peer.endpoint.host_port}>"), *headers]
    if body:
        extra.append(("Content-Type", "application/sdp"))
    response = build_response(event.request, status, to_tag="b1", headers=extra, body=body)
    peer.layer.send_response(event.transaction, response, now)


def establish(net, alice, bob, *a_headers, b_headers=()):
    """Alice calls Bob, Bob answers with ``b_headers``, Alice ACKs. Returns Alice's
    and Bob's dialogs."""
    request = invite(alice, net.now, *a_headers)
    net.transfer()
    (incoming,) = bob.requests("INVITE")
    respond(bob, incoming, 200, net.now, *b_headers, body=SDP_ANSWER)
    net.transfer()
    ok = next(e for e in alice.responses("INVITE") if e.response.status == 200)
    a_dialog = Dialog.as_uac(request, ok.response)
    alice.layer.send_ack(a_dialog.create_request("ACK", cseq=1), GW)
    net.transfer()
    b_dialog = Dialog.as_uas(incoming.request, local_tag="b1", local_contact="<sip:b@x>")
    return a_dialog, b_dialog, ok.response, incoming.request


def in_dialog(peer: Peer, method: str) -> list[RequestReceived]:
    return [e for e in peer.requests(method) if "tag=" in (e.request.headers.get("To") or "")]


def byes(peer: Peer) -> list[Request]:
    return [e.request for e in peer.requests("BYE")]


# ---------------------------------------------------------------- negotiation on the wire


def test_b_leg_offer_and_a_leg_answer():
    net, gateway, alice, bob = make()
    _, _, ok, b_invite = establish(net, alice, bob, ("Supported", "timer"))
    # RFC 4028 7.1: the gateway, UAC of the B leg, offers its timer.
    assert "timer" in b_invite.headers.values("Supported")
    assert b_invite.headers.get("Session-Expires") == "100"
    assert b_invite.headers.get("Min-SE") == "90"
    # RFC 4028 9: the caller supports timers and offered none: it refreshes.
    assert ok.headers.get("Session-Expires") == "100;refresher=uac"
    assert ok.headers.get("Require") == "timer"


def test_caller_without_timer_support_is_refreshed_by_the_gateway():
    net, gateway, alice, bob = make()
    establish(net, alice, bob)
    ok = next(e for e in alice.responses("INVITE") if e.response.status == 200).response
    assert ok.headers.get("Session-Expires") == "100;refresher=uas"
    assert ok.headers.get("Require") is None
    net.advance(49.0)
    assert in_dialog(alice, "INVITE") == []
    net.advance(2.0)
    # Half the interval: a re-INVITE (no Allow: UPDATE from Alice) with the SDP the
    # gateway last gave her, unchanged; the callee's leg is refreshed likewise
    # (its 2xx had no Session-Expires: RFC 4028 7.2, the UAC refreshes).
    (a_refresh,) = in_dialog(alice, "INVITE")
    assert a_refresh.request.body == SDP_ANSWER
    assert a_refresh.request.headers.get("Session-Expires") == "100;refresher=uac"
    (b_refresh,) = in_dialog(bob, "INVITE")
    assert b_refresh.request.body == SDP_OFFER
    respond(alice, a_refresh, 200, net.now, body=SDP_OFFER)
    respond(bob, b_refresh, 200, net.now, body=SDP_ANSWER)
    net.advance(40.0)
    assert byes(alice) == [] and byes(bob) == []
    assert len(in_dialog(alice, "ACK")) == 1
    net.advance(15.0)
    assert len(in_dialog(alice, "INVITE")) == 2  # the next refresh, 50 s after the last


def test_refresh_by_update_when_the_peer_allows_it():
    net, gateway, alice, bob = make()
    establish(net, alice, bob, b_headers=(("Allow", "INVITE, ACK, BYE, UPDATE"),))
    net.advance(51.0)
    (update,) = in_dialog(bob, "UPDATE")
    assert update.request.body == b""
    assert in_dialog(bob, "INVITE") == []


def test_missed_refresh_ends_both_legs_with_reason():
    net, gateway, alice, bob = make()
    establish(
        net,
        alice,
        bob,
        ("Supported", "timer"),
        b_headers=(("Session-Expires", "1000;refresher=uas"),),
    )
    net.advance(67.0)
    assert byes(alice) == [] and byes(bob) == []
    net.advance(1.5)
    (to_alice,) = byes(alice)
    (to_bob,) = byes(bob)
    for bye in (to_alice, to_bob):
        assert bye.headers.get("Reason") == 'SIP;cause=408;text="Session timer expired"'
    (ended,) = gateway.ended
    assert ended.ended_by is EndedBy.SESSION_TIMER
    assert ended.hangup_side == "gateway"


def test_relayed_refresh_refreshes_both_legs():
    net, gateway, alice, bob = make()
    a_dialog, _, _, _ = establish(
        net,
        alice,
        bob,
        ("Supported", "timer"),
        b_headers=(("Session-Expires", "100;refresher=uas"),),
    )
    net.advance(40.0)
    reinvite = a_dialog.create_request("INVITE")
    reinvite.headers.add("Supported", "timer")
    reinvite.headers.add("Session-Expires", "100;refresher=uac")
    reinvite.headers.add("Content-Type", "application/sdp")
    reinvite.body = SDP_OFFER
    alice.layer.send_request(reinvite, GW, net.now)
    net.transfer()
    (relayed,) = in_dialog(bob, "INVITE")
    # Bob's leg gets its own timer: Bob refreshes it ("uas" of this re-INVITE).
    assert relayed.request.headers.get("Session-Expires") == "100;refresher=uas"
    respond(bob, relayed, 200, net.now, ("Session-Expires", "100;refresher=uas"), body=SDP_ANSWER)
    net.transfer()
    ok = alice.responses("INVITE")[-1].response
    assert ok.status == 200
    assert ok.headers.get("Session-Expires") == "100;refresher=uac"
    assert ok.headers.get("Require") == "timer"
    net.advance(60.0)  # 100 s: past the first expiry, within the refreshed one
    assert byes(alice) == [] and byes(bob) == []
    net.advance(10.0)
    assert len(byes(alice)) == 1


def test_interval_too_small_gets_422_with_min_se():
    net, gateway, alice, bob = make()
    invite(alice, net.now, ("Supported", "timer"), ("Session-Expires", "30"))
    net.transfer()
    response = alice.responses("INVITE")[-1].response
    assert response.status == 422
    assert response.headers.get("Min-SE") == "90"
    assert bob.requests("INVITE") == []


def test_bad_session_expires_gets_400():
    net, gateway, alice, bob = make()
    invite(alice, net.now, ("Session-Expires", "soon"))
    net.transfer()
    assert alice.statuses("INVITE")[-1] == 400


def test_emergency_call_is_never_refused_for_its_interval():
    net, gateway, alice, bob = make(lambda e: Route(targets=(BOB,), emergency=True))
    invite(alice, net.now, ("Supported", "timer"), ("Session-Expires", "30"))
    net.transfer()
    assert len(bob.requests("INVITE")) == 1


def test_422_from_callee_is_retried_once_with_its_min_se():
    net, gateway, alice, bob = make()
    invite(alice, net.now)
    net.transfer()
    (first,) = bob.requests("INVITE")
    respond(bob, first, 422, net.now, ("Min-SE", "300"))
    net.transfer()
    first_retry = bob.requests("INVITE")[1].request
    assert first_retry.headers.get("Session-Expires") == "300"
    assert first_retry.headers.get("Min-SE") == "300"
    assert first_retry.headers.get("CSeq") == "2 INVITE"
    assert first_retry.headers.get("Call-ID") == first.request.headers.get("Call-ID")
    respond(bob, bob.requests("INVITE")[1], 422, net.now, ("Min-SE", "600"))
    net.transfer()
    assert len(bob.requests("INVITE")) == 2  # once only
    # The caller's interval was never the problem: not a 422 for her.
    assert alice.statuses("INVITE")[-1] == 500


def test_the_ack_of_an_invite_retried_after_a_422_repeats_its_cseq():
    # RFC 3261 13.2.2.4: the ACK's CSeq number is the INVITE's. The retry is CSeq 2;
    # its ACK went out as CSeq 1 before, which a callee may not match to its 2xx.
    net, gateway, alice, bob = make()
    invite(alice, net.now)
    net.transfer()
    respond(bob, bob.requests("INVITE")[0], 422, net.now, ("Min-SE", "300"))
    net.transfer()
    retry = bob.requests("INVITE")[1]
    assert retry.request.headers.get("CSeq") == "2 INVITE"
    respond(bob, retry, 200, net.now, body=SDP_ANSWER)
    net.transfer()
    assert [e.request.headers.get("CSeq") for e in bob.requests("ACK")] == ["2 ACK"]


# ---------------------------------------------------------------- maximum duration


def test_max_duration_ends_the_call():
    net, gateway, alice, bob = make(lambda e: Route(targets=(BOB,), max_duration=30.0))
    establish(net, alice, bob, ("Supported", "timer"))
    net.advance(29.0)
    assert byes(alice) == []
    net.advance(1.5)
    (bye,) = byes(bob)
    assert bye.headers.get("Reason") == 'Q.850;cause=16;text="Maximum call duration reached"'
    assert len(byes(alice)) == 1
    assert gateway.ended[0].ended_by is EndedBy.MAX_DURATION


def test_max_duration_never_applies_to_emergency_calls():
    net, gateway, alice, bob = make(
        lambda e: Route(targets=(BOB,), max_duration=30.0, emergency=True)
    )
    _, b_dialog, _, _ = establish(
        net, alice, bob, ("Supported", "timer"), b_headers=(("Session-Expires", "1000"),)
    )
    net.advance(40.0)
    assert byes(alice) == [] and byes(bob) == []


# ---------------------------------------------------------------- emergency calls


def test_emergency_call_survives_the_callers_missed_refresh_and_dead_media():
    net, gateway, alice, bob = make(lambda e: Route(targets=(BOB,), emergency=True))
    _, b_dialog, _, _ = establish(
        net,
        alice,
        bob,
        ("Supported", "timer"),
        b_headers=(("Session-Expires", "1000;refresher=uas"),),
    )
    (call,) = gateway.b2bua.calls.values()
    net.advance(200.0)  # the caller (refresher) never refreshed
    gateway.b2bua.media_inactive(call.uuid, Side.A, net.now)
    net.transfer()
    assert byes(alice) == [] and byes(bob) == []
    assert gateway.ended == []
    # The centre's leg failing does end it.
    net.advance(800.0)
    assert len(byes(alice)) == 1 and len(byes(bob)) == 1
    assert gateway.ended[0].ended_by is EndedBy.SESSION_TIMER


def test_emergency_call_ends_when_the_centres_refresh_fails():
    net, gateway, alice, bob = make(lambda e: Route(targets=(BOB,), emergency=True))
    establish(net, alice, bob)  # Bob's 2xx has no Session-Expires: the gateway refreshes
    net.advance(51.0)
    (refresh,) = in_dialog(bob, "INVITE")
    respond(bob, refresh, 481, net.now)
    net.transfer()
    assert len(byes(alice)) == 1
    assert gateway.ended[0].ended_by is EndedBy.SESSION_TIMER


# ---------------------------------------------------------------- dead media


def test_dead_media_ends_an_ordinary_call():
    net, gateway, alice, bob = make()
    establish(net, alice, bob)
    (call,) = gateway.b2bua.calls.values()
    gateway.b2bua.media_inactive(call.uuid, Side.B, net.now)
    net.transfer()
    (bye,) = byes(alice)
    assert bye.headers.get("Reason") == 'SIP;cause=408;text="Media timeout"'
    assert len(byes(bob)) == 1
    assert gateway.ended[0].ended_by is EndedBy.MEDIA_TIMEOUT


def test_dead_media_is_ignored_on_hold():
    net, gateway, alice, bob = make(announced())
    request = invite(alice, net.now)
    net.transfer()
    (call,) = gateway.b2bua.calls.values()
    gateway.b2bua.media_ready(call.uuid, GW_SDP, RELAY_OFFER, net.now)
    gateway.b2bua.announcement_done(call.uuid, True, net.now)
    net.transfer()
    (incoming,) = bob.requests("INVITE")
    respond(bob, incoming, 200, net.now, body=SDP_ANSWER)
    net.transfer()
    ok = alice.responses("INVITE")[-1].response
    a_dialog = Dialog.as_uac(request, ok)
    alice.layer.send_ack(a_dialog.create_request("ACK", cseq=1), GW)
    hold = a_dialog.create_request("INVITE")
    hold.headers.add("Content-Type", "application/sdp")
    hold.body = HOLD_SDP
    alice.layer.send_request(hold, GW, net.now)
    net.transfer()
    assert alice.statuses("INVITE")[-1] == 200  # answered by the gateway (anchored)
    gateway.b2bua.media_inactive(call.uuid, Side.A, net.now)
    net.transfer()
    assert byes(alice) == [] and gateway.ended == []
    resume = a_dialog.create_request("INVITE")
    resume.headers.add("Content-Type", "application/sdp")
    resume.body = SDP_OFFER
    alice.layer.send_request(resume, GW, net.now)
    net.transfer()
    gateway.b2bua.media_inactive(call.uuid, Side.A, net.now)
    net.transfer()
    assert len(byes(alice)) == 1
    assert gateway.ended[0].ended_by is EndedBy.MEDIA_TIMEOUT


# ---------------------------------------------------------------- ended_by, shutdown


def test_ended_by_names_the_side_that_hung_up():
    net, gateway, alice, bob = make()
    _, b_dialog, _, _ = establish(net, alice, bob)
    bob.layer.send_request(b_dialog.create_request("BYE"), GW, net.now)
    net.transfer()
    assert gateway.ended[0].ended_by is EndedBy.CALLEE
    net2, gateway2, alice2, bob2 = make()
    a_dialog, _, _, _ = establish(net2, alice2, bob2)
    alice2.layer.send_request(a_dialog.create_request("BYE"), GW, net2.now)
    net2.transfer()
    assert gateway2.ended[0].ended_by is EndedBy.CALLER
    assert byes(bob2)[0].headers.get("Reason") is None  # only the gateway's own ends say why


def test_shutdown_ends_calls_in_progress():
    net, gateway, alice, bob = make()
    establish(net, alice, bob)
    invite(alice, net.now + 1)  # a second call, still ringing nowhere
    net.transfer()
    gateway.b2bua.shutdown(net.now)
    net.transfer()
    (bye,) = byes(alice)
    assert bye.headers.get("Reason") == 'SIP;cause=503;text="Gateway shutting down"'
    assert {e.ended_by for e in gateway.ended} == {EndedBy.SHUTDOWN}
    assert len(gateway.ended) == 2
    assert 503 in alice.statuses("INVITE")
    assert gateway.b2bua.calls == {}


def test_an_idle_call_has_one_heap_entry_at_its_earliest_deadline():
    """Four session timers run on an idle call (a refresh and an expiry per leg): the
    heap holds one live entry for them, at the earliest, and a disarmed timer moves
    it to the next one instead of firing."""
    net, gateway, alice, bob = make()
    establish(net, alice, bob)
    b2bua = gateway.b2bua
    (call,) = b2bua.calls.values()
    start = net.now
    # Both legs refreshed by the gateway at 50 s, expiring at 68 s.
    assert b2bua.get_timer() == start + 50
    live = [entry for entry in b2bua._timers if entry == (call.timer_at, call.uuid)]
    assert live == [(start + 50, call.uuid)]
    b2bua._disarm(call, "refresh_a")
    b2bua._disarm(call, "refresh_b")
    assert b2bua.get_timer() == start + 68
    net.advance(60.0)
    assert in_dialog(alice, "INVITE") == [] and in_dialog(bob, "INVITE") == []
    net.advance(10.0)
    assert len(byes(alice)) == 1 and len(byes(bob)) == 1


def test_idle_calls_share_their_caller_address_and_uri_strings():
    """What an idle call keeps (issue 17): one Endpoint object per caller address, the
    B dialog's URIs as the A dialog's strings, and no B-leg INVITE once confirmed
    (the CDR's routed URI is kept apart)."""
    net, gateway, alice, bob = make()
    # Each datagram from its own Endpoint object, as the transport gives them.
    layers = net._layers
    net._layers = lambda: [(layer, Endpoint(*vars_of(e))) for layer, e in layers()]
    establish(net, alice, bob)
    alice.events.clear()
    bob.events.clear()
    net.now += 1.0
    establish(net, alice, bob)
    first, second = gateway.b2bua.calls.values()
    assert first.a_source is second.a_source
    for call in (first, second):
        assert call.b_dialog is not None
        assert call.b_dialog.local_uri is call.a_dialog.remote_uri
        assert call.b_dialog.remote_uri is call.a_dialog.local_uri
        assert call.b_request is None and call.b_tx is None
        assert call.routed_uri == "sip:bob@127.0.0.3"


def vars_of(endpoint: Endpoint) -> tuple[str, str, int]:
    return endpoint.transport, endpoint.host, endpoint.port


def test_timer_heap_stays_bounded_by_live_calls():
    """Each call arms a session expiry half an hour ahead; ended calls' entries must
    not pile up in the heap until then."""
    net, gateway, alice, bob = make()
    for _ in range(1500):
        a_dialog, _, _, _ = establish(net, alice, bob)
        alice.layer.send_request(a_dialog.create_request("BYE"), GW, net.now)
        net.transfer()
        alice.events.clear()
        bob.events.clear()
        net.now += 0.001
    assert gateway.b2bua.calls == {}
    assert len(gateway.ended) == 1500
    assert len(gateway.b2bua._timers) <= 4096 + 1


def test_422_twice_from_a_centre_fails_over_to_the_next():
    carol = Peer(Endpoint("UDP", "127.0.0.4", 5090))
    net, gateway, alice, bob = make(lambda e: Route(targets=(BOB, carol.endpoint), emergency=True))
    net.peers.append(carol)
    invite(alice, net.now, ("Supported", "timer"))
    net.transfer()
    for attempt in range(2):
        respond(bob, bob.requests("INVITE")[attempt], 422, net.now, ("Min-SE", "3600"))
        net.transfer()
    (second,) = carol.requests("INVITE")
    respond(carol, second, 200, net.now, body=SDP_ANSWER)
    net.transfer()
    assert alice.statuses("INVITE")[-1] == 200
