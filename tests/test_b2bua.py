"""B2BUA pair tests: caller -> gateway core -> callee, all sans-IO, in memory."""

from __future__ import annotations

import pytest

from gateway.b2bua import Reject, Route, RouteNeeded
from gateway.sip.builders import build_cancel
from gateway.sip.events import Endpoint, ResponseReceived
from gateway.sip.message import Request
from gateway.sip.transaction import SPENT_REQUEST
from tests.sipnet import SDP_ANSWER, SDP_OFFER, GatewayCore, Network, Peer

GW = Endpoint("UDP", "127.0.0.1", 5060)
ALICE = Endpoint("UDP", "127.0.0.2", 5062)
BOB = Endpoint("UDP", "127.0.0.3", 5080)
CAROL = Endpoint("UDP", "127.0.0.4", 5090)


def make(route=None, *extra: Peer):
    alice, bob = Peer(ALICE), Peer(BOB)
    gateway = GatewayCore(GW, route or (lambda event: Route(targets=(BOB,))))
    net = Network(gateway, alice, bob, *extra)
    return net, gateway, alice, bob


def ack_2xx(peer: Peer, invite: Request, event: ResponseReceived, destination: Endpoint):
    dialog = peer.dialog_from(invite, event.response)
    peer.layer.send_ack(dialog.create_request("ACK", cseq=1), destination)
    return dialog


def establish(net: Network, alice: Peer, bob: Peer):
    invite = alice.invite(GW, net.now)
    net.transfer()
    (incoming,) = bob.requests("INVITE")
    bob.answer(incoming, 180, net.now)
    net.transfer()
    bob.answer(incoming, 200, net.now, body=SDP_ANSWER)
    net.transfer()
    ok = next(e for e in alice.responses("INVITE") if e.response.status == 200)
    dialog = ack_2xx(alice, invite, ok, GW)
    net.transfer()
    return invite, incoming, dialog


def test_basic_call_caller_hangs_up():
    net, gateway, alice, bob = make()
    invite, incoming, dialog = establish(net, alice, bob)
    assert alice.statuses("INVITE") == [100, 180, 200]
    # The B leg is a new dialog: own Call-ID, own tags, SDP passed through.
    b_invite = incoming.request
    assert b_invite.headers.get("Call-ID") != invite.headers.get("Call-ID")
    assert b_invite.body == SDP_OFFER
    assert int(b_invite.headers.get("Max-Forwards")) == 69
    ok = next(e for e in alice.responses("INVITE") if e.response.status == 200)
    assert ok.response.body == SDP_ANSWER
    assert "sip:voipgw@127.0.0.1:5060" in ok.response.headers.get("Contact")
    assert len(bob.requests("ACK")) == 1
    alice.layer.send_request(dialog.create_request("BYE"), GW, net.now)
    net.transfer()
    assert len(bob.requests("BYE")) == 1
    assert alice.statuses("BYE") == [200]
    (ended,) = gateway.ended
    assert ended.disposition == "answered"
    assert ended.hangup_side == "caller"
    assert ended.final_status == 200
    assert gateway.b2bua.calls == {}


def test_callee_hangs_up():
    net, gateway, alice, bob = make()
    _, incoming, _ = establish(net, alice, bob)
    b_ok = bob.layer  # bob's dialog: built from the INVITE he received
    from gateway.sip.dialog import Dialog

    bob_dialog = Dialog.as_uas(incoming.request, local_tag="b1", local_contact="<sip:bob@x>")
    b_ok.send_request(bob_dialog.create_request("BYE"), GW, net.now)
    net.transfer()
    assert len(alice.requests("BYE")) == 1
    assert bob.statuses("BYE") == [200]
    (ended,) = gateway.ended
    assert ended.hangup_side == "callee"


def test_cancel_before_answer():
    net, gateway, alice, bob = make()
    invite = alice.invite(GW, net.now)
    net.transfer()
    (incoming,) = bob.requests("INVITE")
    bob.answer(incoming, 180, net.now)
    net.transfer()
    key = alice.layer.transactions and next(
        k for k in alice.layer.transactions if k.method == "INVITE"
    )
    alice.layer.send_cancel(key, build_cancel(invite), net.now)
    net.transfer()
    assert alice.statuses("CANCEL") == [200]
    assert 487 in alice.statuses("INVITE")
    # The callee got a CANCEL; its own layer answered it and the TU answers 487.
    assert len(bob.requests("CANCEL")) == 0  # CANCEL is answered by the layer
    bob_cancels = [e for e in bob.events if type(e).__name__ == "CancelReceived"]
    assert len(bob_cancels) == 1
    bob.answer(incoming, 487, net.now)
    net.transfer()
    (ended,) = gateway.ended
    assert ended.disposition == "cancelled"


@pytest.mark.parametrize(
    ("callee_status", "caller_status", "disposition"),
    [(486, 486, "busy"), (404, 404, "rejected"), (503, 500, "failed"), (480, 480, "no-answer")],
)
def test_final_failure_relayed(callee_status, caller_status, disposition):
    net, gateway, alice, bob = make()
    alice.invite(GW, net.now)
    net.transfer()
    (incoming,) = bob.requests("INVITE")
    bob.answer(incoming, callee_status, net.now)
    net.transfer()
    assert alice.statuses("INVITE")[-1] == caller_status
    assert gateway.ended[0].disposition == disposition
    # Our ACK for the non-2xx reached the callee's transaction (Completed -> Confirmed).
    assert any(isinstance(m, Request) and m.method == "ACK" for m in net.sent(GW, BOB))


def test_callee_silent_gives_408_after_timer_b():
    net, gateway, alice, bob = make()
    net.drop = lambda data, src, dst: dst.port == BOB.port  # bob never hears it
    alice.invite(GW, net.now)
    net.transfer()
    net.advance(33.0, step=0.5)
    assert alice.statuses("INVITE")[-1] == 408
    assert gateway.ended[0].disposition == "no-answer"
    # Timer A retransmitted the INVITE towards the callee: 0.5, 1, 2, 4, 8, 16 s.
    b_invites = [m for m in net.sent(GW, BOB) if isinstance(m, Request)]
    assert len(b_invites) == 7


def test_failover_to_second_target_on_503():
    carol = Peer(CAROL)
    net, gateway, alice, bob = make(lambda e: Route(targets=(BOB, CAROL)), carol)
    alice.invite(GW, net.now)
    net.transfer()
    (incoming,) = bob.requests("INVITE")
    bob.answer(incoming, 503, net.now)
    net.transfer()
    (second,) = carol.requests("INVITE")
    carol.answer(second, 200, net.now, body=SDP_ANSWER)
    net.transfer()
    assert alice.statuses("INVITE")[-1] == 200


def test_failover_timeout_abandons_silent_target():
    carol = Peer(CAROL)
    net, gateway, alice, bob = make(
        lambda e: Route(targets=(BOB, CAROL), failover_timeout=2.0, emergency=True), carol
    )
    net.drop = lambda data, src, dst: dst.port == BOB.port
    alice.invite(GW, net.now)
    net.transfer()
    net.advance(2.5)
    (second,) = carol.requests("INVITE")
    carol.answer(second, 200, net.now, body=SDP_ANSWER)
    net.transfer()
    assert alice.statuses("INVITE")[-1] == 200


def test_reject_from_router():
    net, gateway, alice, _ = make(lambda e: Reject(status=403, reason="Barred"))
    alice.invite(GW, net.now)
    net.transfer()
    assert alice.statuses("INVITE")[-1] == 403
    assert alice.responses("INVITE")[-1].response.reason == "Barred"


def request(method: str, uri: str, **fields: str) -> Request:
    req = Request(method=method, uri=uri)
    for name, value in fields.items():
        req.headers.add(name.replace("_", "-"), value)
    return req


def test_max_forwards_zero_gets_483():
    net, gateway, alice, bob = make()
    req = request(
        "INVITE",
        "sip:bob@127.0.0.3",
        Max_Forwards="0",
        From="<sip:alice@127.0.0.2:5062>;tag=z",
        To="<sip:bob@127.0.0.3>",
        Call_ID="mf0",
        CSeq="1 INVITE",
        Contact="<sip:alice@127.0.0.2:5062>",
    )
    alice.layer.send_request(req, GW, net.now)
    net.transfer()
    assert alice.statuses("INVITE")[-1] == 483
    assert bob.requests("INVITE") == []


def test_loop_detected_482():
    # The route points back at the gateway itself: the B leg arrives as a new call
    # carrying our own Via -> 482 on the looped leg.
    seen: list[RouteNeeded] = []

    def route(event: RouteNeeded) -> Route:
        seen.append(event)
        return Route(targets=(GW,))

    net, gateway, alice, bob = make(route)
    alice.invite(GW, net.now)
    net.transfer()
    assert len(seen) == 1
    assert alice.statuses("INVITE")[-1] == 482


def test_options_answered_locally():
    net, gateway, alice, bob = make()
    req = Request(method="OPTIONS", uri="sip:127.0.0.1")
    for name, value in [
        ("Max-Forwards", "70"),
        ("From", "<sip:alice@127.0.0.2>;tag=o"),
        ("To", "<sip:127.0.0.1>"),
        ("Call-ID", "opt1"),
        ("CSeq", "1 OPTIONS"),
    ]:
        req.headers.add(name, value)
    alice.layer.send_request(req, GW, net.now)
    net.transfer()
    (response,) = alice.responses("OPTIONS")
    assert response.response.status == 200
    assert "INVITE" in response.response.headers.get("Allow")
    assert bob.events == []


def test_reinvite_from_caller_is_relayed():
    net, gateway, alice, bob = make()
    _, incoming, dialog = establish(net, alice, bob)
    reinvite = dialog.create_request("INVITE")
    reinvite.headers.add("Content-Type", "application/sdp")
    reinvite.body = SDP_OFFER.replace(b"40000", b"40002")
    alice.layer.send_request(reinvite, GW, net.now)
    net.transfer()
    (bob_re,) = [e for e in bob.requests("INVITE") if e is not incoming]
    assert b"40002" in bob_re.request.body
    bob.answer(bob_re, 200, net.now, body=SDP_ANSWER)
    net.transfer()
    assert alice.statuses("INVITE")[-1] == 200
    assert len(bob.requests("ACK")) == 2  # the initial ACK and the re-INVITE's


def test_late_offer_answer_travels_in_ack():
    net, gateway, alice, bob = make()
    invite = alice.invite(GW, net.now, body=b"")
    net.transfer()
    (incoming,) = bob.requests("INVITE")
    assert incoming.request.body == b""
    bob.answer(incoming, 200, net.now, body=SDP_ANSWER)  # the offer
    net.transfer()
    assert bob.requests("ACK") == []  # waits for the caller's answer
    ok = alice.responses("INVITE")[-1]
    dialog = alice.dialog_from(invite, ok.response)
    ack = dialog.create_request("ACK", cseq=1)
    ack.headers.add("Content-Type", "application/sdp")
    ack.body = SDP_OFFER
    alice.layer.send_ack(ack, GW)
    net.transfer()
    (b_ack,) = bob.requests("ACK")
    assert b_ack.request.body == SDP_OFFER
    # Confirmed and ACKed on both legs: the call keeps only what its dialogs and CDR
    # need, as an early-offer call does (it kept both INVITEs whole before).
    (call,) = gateway.b2bua.calls.values()
    assert call.b_request is None
    assert [name for name, _ in call.a_request.headers] == ["From"]
    assert call.a_request.body == b""


def test_caller_never_acks_ends_call():
    net, gateway, alice, bob = make()
    alice.invite(GW, net.now)
    net.transfer()
    (incoming,) = bob.requests("INVITE")
    bob.answer(incoming, 200, net.now, body=SDP_ANSWER)
    net.transfer()
    # No ACK from alice: the gateway retransmits its 2xx, then gives up (Timer L)
    # and ends both legs.
    net.advance(33.0, step=0.5)
    a_oks = [m for m in net.sent(GW, ALICE) if getattr(m, "status", 0) == 200]
    assert len(a_oks) > 3
    assert len(bob.requests("BYE")) == 1
    assert gateway.ended and gateway.ended[0].hangup_side == "gateway"


def test_unknown_dialog_bye_gets_481():
    net, gateway, alice, bob = make()
    req = Request(method="BYE", uri="sip:x@127.0.0.1")
    for name, value in [
        ("Max-Forwards", "70"),
        ("From", "<sip:alice@127.0.0.2>;tag=o"),
        ("To", "<sip:x@127.0.0.1>;tag=nope"),
        ("Call-ID", "nocall"),
        ("CSeq", "2 BYE"),
    ]:
        req.headers.add(name, value)
    alice.layer.send_request(req, GW, net.now)
    net.transfer()
    assert alice.statuses("BYE") == [481]


# ---------------------------------------------------------------- announcement stage

GW_SDP = b"v=0\r\no=voipgw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n"
RELAY_OFFER = GW_SDP.replace(b"30000", b"30002")


def announced(mode: str = "early-media", end_after: bool = False):
    from gateway.b2bua import Announcement

    return lambda event: Route(
        targets=(BOB,),
        announcement=Announcement(
            prompt="recording-notice", language="fi", mode=mode, end_after=end_after
        ),
    )


def start_announced(mode="early-media", end_after=False):
    net, gateway, alice, bob = make(announced(mode, end_after))
    invite = alice.invite(GW, net.now)
    net.transfer()
    (call,) = gateway.b2bua.calls.values()
    return net, gateway, alice, bob, invite, call


def test_early_media_prompt_then_callee():
    net, gateway, alice, bob, invite, call = start_announced()
    assert bob.requests("INVITE") == []  # nobody is called before the notice
    assert gateway.b2bua.media_ready(call.uuid, GW_SDP, RELAY_OFFER, net.now)
    net.transfer()
    session_progress = alice.responses("INVITE")[-1].response
    assert session_progress.status == 183
    assert session_progress.body == GW_SDP
    gateway.b2bua.announcement_done(call.uuid, True, net.now)
    net.transfer()
    (incoming,) = bob.requests("INVITE")
    assert incoming.request.body == RELAY_OFFER  # the callee talks to the relay
    assert incoming.request.headers.get("X-Voipgw-Recording-Notice") == "played"
    bob.answer(incoming, 200, net.now, body=SDP_ANSWER)
    net.transfer()
    ok = alice.responses("INVITE")[-1].response
    assert ok.status == 200
    assert ok.body == GW_SDP  # the caller's media path never changes
    ack_2xx(alice, invite, alice.responses("INVITE")[-1], GW)
    net.transfer()
    assert len(bob.requests("ACK")) == 1


def test_answer_first_prompt_then_callee_billable_from_callee_answer():
    net, gateway, alice, bob, invite, call = start_announced("answer-first")
    gateway.b2bua.media_ready(call.uuid, GW_SDP, RELAY_OFFER, net.now)
    net.transfer()
    ok = alice.responses("INVITE")[-1]
    assert ok.response.status == 200
    dialog = ack_2xx(alice, invite, ok, GW)
    net.transfer()
    net.now += 5.0  # the prompt plays
    gateway.b2bua.announcement_done(call.uuid, True, net.now)
    net.transfer()
    (incoming,) = bob.requests("INVITE")
    net.now += 2.0
    bob.answer(incoming, 200, net.now, body=SDP_ANSWER)
    net.transfer()
    assert alice.statuses("INVITE").count(200) == 1  # no second 200 to the caller
    net.now += 10.0
    alice.layer.send_request(dialog.create_request("BYE"), GW, net.now)
    net.transfer()
    (ended,) = gateway.ended
    assert ended.answered_at == pytest.approx(7.0)  # when staff answered
    assert ended.disposition == "answered"


def test_no_playable_codec_connects_and_says_not_played():
    net, gateway, alice, bob, invite, call = start_announced()
    assert not gateway.b2bua.media_ready(call.uuid, None, None, net.now)
    net.transfer()
    (incoming,) = bob.requests("INVITE")
    assert incoming.request.headers.get("X-Voipgw-Recording-Notice") == "not-played"
    assert incoming.request.body == SDP_OFFER


def test_cancel_during_prompt_ends_everything():
    net, gateway, alice, bob, invite, call = start_announced()
    gateway.b2bua.media_ready(call.uuid, GW_SDP, RELAY_OFFER, net.now)
    net.transfer()
    key = next(k for k in alice.layer.transactions if k.method == "INVITE")
    alice.layer.send_cancel(key, build_cancel(invite), net.now)
    net.transfer()
    assert 487 in alice.statuses("INVITE")
    gateway.b2bua.announcement_done(call.uuid, False, net.now)  # the player stopped
    net.transfer()
    assert bob.requests("INVITE") == []
    (ended,) = gateway.ended
    assert ended.disposition == "cancelled"
    assert gateway.b2bua.calls == {}


def test_announce_and_end_never_calls_anyone():
    net, gateway, alice, bob, invite, call = start_announced(end_after=True)
    gateway.b2bua.media_ready(call.uuid, GW_SDP, RELAY_OFFER, net.now)
    gateway.b2bua.announcement_done(call.uuid, True, net.now)
    net.transfer()
    assert alice.statuses("INVITE")[-1] == 480
    assert bob.events == []


def test_callee_2xx_retransmission_after_confirm_is_acked_again():
    net, gateway, alice, bob = make()
    _, incoming, _ = establish(net, alice, bob)
    assert len(bob.requests("ACK")) == 1
    # Bob's transaction layer did not see our ACK (say it was lost): the callee's
    # core resends its 2xx; the gateway must ACK it again, call long confirmed.
    ok = next(
        data
        for src, dst, data in net.log
        if (src.host, dst.host) == (BOB.host, GW.host) and data.startswith(b"SIP/2.0 200")
    )
    net.gateway.layer.receive_message(ok, BOB, net.now)
    net.transfer()
    acks = [m for m in net.sent(GW, BOB) if isinstance(m, Request) and m.method == "ACK"]
    assert len(acks) == 2
    # Rebuilt from the dialog (Call.b_ack keeps no copy): the same ACK but its Via.
    first, again = ([(n, v) for n, v in a.headers if n != "Via"] for a in acks)
    assert (acks[1].uri, again, acks[1].body) == (acks[0].uri, first, acks[0].body)


def test_acknowledged_invite_absorbs_retransmissions_and_is_forgotten_at_timer_l():
    net, gateway, alice, bob = make()
    establish(net, alice, bob)
    layer = net.gateway.layer
    # Acknowledged, A's INVITE transaction keeps only its ACK key (Call-ID, CSeq)
    # until Timer L: enough to absorb a retransmitted INVITE (RFC 6026 7.1) ...
    assert len(layer._accepted_invites) == 1
    retransmission = next(
        data
        for src, dst, data in net.log
        if (src.host, dst.host) == (ALICE.host, GW.host) and data.startswith(b"INVITE")
    )
    layer.receive_message(retransmission, ALICE, net.now)
    net.transfer()
    assert len(gateway.b2bua.calls) == 1
    assert len(bob.requests("INVITE")) == 1
    # ... and for the layer to forget it at 64*T1 (a lost key would leak an entry).
    net.advance(64 * 0.5 + 1)
    assert layer._accepted_invites == {}
    assert not [key for key in layer.transactions if key.method == "INVITE"]


def test_an_ended_calls_lingering_server_transactions_keep_no_request():
    """For the 32 s that they absorb retransmissions (Timers J and L), A's INVITE
    (acknowledged) and BYE (answered) transactions hold one shared placeholder and
    one shared destination: per call, objects fewer for the cyclic garbage collector
    to walk (gateway.ops.collector), and a shorter full-collection pause."""
    net, gateway, alice, bob = make()
    _, _, dialog = establish(net, alice, bob)
    alice.layer.send_request(dialog.create_request("BYE"), GW, net.now)
    net.transfer()
    assert not gateway.b2bua.calls
    servers = [tx for key, tx in net.gateway.layer.transactions.items() if key.server]
    assert sorted(tx.key.method for tx in servers) == ["BYE", "INVITE"]
    assert all(tx.request is SPENT_REQUEST for tx in servers)
    assert len({id(tx.destination) for tx in servers}) == 1

    # What they still do: a retransmitted BYE gets its 200 again.
    def oks_to_alice() -> list[bytes]:
        return [
            data
            for src, dst, data in net.log
            if dst == ALICE and data.startswith(b"SIP/2.0 200") and b" BYE\r\n" in data
        ]

    bye = next(data for src, dst, data in net.log if src == ALICE and data.startswith(b"BYE"))
    (ok,) = oks_to_alice()
    net.gateway.layer.receive_message(bye, ALICE, net.now)
    net.transfer()
    assert oks_to_alice() == [ok, ok]


def test_late_offer_2xx_retransmission_is_acked_again_with_the_answer():
    net, gateway, alice, bob = make()
    invite = alice.invite(GW, net.now, body=b"")
    net.transfer()
    (incoming,) = bob.requests("INVITE")
    bob.answer(incoming, 200, net.now, body=SDP_ANSWER)  # the offer
    net.transfer()
    ok = alice.responses("INVITE")[-1]
    ack = alice.dialog_from(invite, ok.response).create_request("ACK", cseq=1)
    ack.headers.add("Content-Type", "application/sdp")
    ack.body = SDP_OFFER
    alice.layer.send_ack(ack, GW)
    net.transfer()
    bob_ok = next(
        data
        for src, dst, data in net.log
        if (src.host, dst.host) == (BOB.host, GW.host) and data.startswith(b"SIP/2.0 200")
    )
    net.gateway.layer.receive_message(bob_ok, BOB, net.now)
    net.transfer()
    acks = [m for m in net.sent(GW, BOB) if isinstance(m, Request) and m.method == "ACK"]
    assert [(a.body, a.headers.get("Content-Type"), a.headers.get("CSeq")) for a in acks] == [
        (SDP_OFFER, "application/sdp", "1 ACK")
    ] * 2


# ---------------------------------------------------------------- reliable 1xx (RFC 3262)


def invite_requiring_100rel(alice: Peer, net: Network) -> Request:
    request = Request(method="INVITE", uri="sip:bob@127.0.0.3", body=SDP_OFFER)
    for name, value in [
        ("Max-Forwards", "70"),
        ("From", "<sip:alice@127.0.0.2:5062>;tag=r1"),
        ("To", "<sip:bob@127.0.0.3>"),
        ("Call-ID", "rel-1"),
        ("CSeq", "1 INVITE"),
        ("Contact", "<sip:alice@127.0.0.2:5062>"),
        ("Require", "100rel"),
        ("Content-Type", "application/sdp"),
    ]:
        request.headers.add(name, value)
    alice.layer.send_request(request, GW, net.now)
    return request


def prack(alice: Peer, invite: Request, provisional, rseq: str, net: Network) -> None:
    dialog = alice.dialog_from(invite, provisional.response)
    request = dialog.create_request("PRACK")
    request.headers.add("RAck", f"{rseq} 1 INVITE")
    alice.layer.send_request(request, GW, net.now)


def test_reliable_provisional_retransmitted_until_prack():
    net, gateway, alice, bob = make()
    invite = invite_requiring_100rel(alice, net)
    net.transfer()
    (incoming,) = bob.requests("INVITE")
    assert incoming.request.headers.get("Require") is None  # the B leg never asks
    bob.answer(incoming, 180, net.now)
    net.transfer()
    ringing = [e for e in alice.responses("INVITE") if e.response.status == 180]
    assert ringing[0].response.headers.get("Require") == "100rel"
    assert ringing[0].response.headers.get("RSeq") == "1"
    net.advance(1.6, step=0.1)  # T1, 2*T1: two retransmissions
    sent_180 = [m for m in net.sent(GW, ALICE) if getattr(m, "status", 0) == 180]
    assert len(sent_180) == 3
    prack(alice, invite, ringing[0], "1", net)
    net.transfer()
    assert alice.statuses("PRACK") == [200]
    net.advance(4.0, step=0.1)
    assert len([m for m in net.sent(GW, ALICE) if getattr(m, "status", 0) == 180]) == 3
    bob.answer(incoming, 200, net.now, body=SDP_ANSWER)
    net.transfer()
    assert alice.statuses("INVITE")[-1] == 200


def test_2xx_waits_for_prack_of_183_with_sdp():
    net, gateway, alice, bob = make(announced())
    invite = invite_requiring_100rel(alice, net)
    net.transfer()
    (call,) = gateway.b2bua.calls.values()
    gateway.b2bua.media_ready(call.uuid, GW_SDP, RELAY_OFFER, net.now)
    gateway.b2bua.announcement_done(call.uuid, True, net.now)
    net.transfer()
    progress = next(e for e in alice.responses("INVITE") if e.response.status == 183)
    assert progress.response.headers.get("RSeq") == "1"
    (incoming,) = bob.requests("INVITE")
    bob.answer(incoming, 200, net.now, body=SDP_ANSWER)
    net.transfer()
    assert 200 not in alice.statuses("INVITE")  # held until the 183 is PRACKed
    prack(alice, invite, progress, "1", net)
    net.transfer()
    assert alice.statuses("INVITE")[-1] == 200


def test_no_prack_rejects_the_invite_after_64_t1():
    net, gateway, alice, bob = make()
    invite_requiring_100rel(alice, net)
    net.transfer()
    (incoming,) = bob.requests("INVITE")
    bob.answer(incoming, 180, net.now)
    net.transfer()
    net.advance(33.0, step=0.5)
    assert alice.statuses("INVITE")[-1] == 504
    assert (
        len(bob.requests("CANCEL"))
        + len([e for e in bob.events if type(e).__name__ == "CancelReceived"])
        >= 1
    )


def test_local_answer_then_bye():
    from gateway.b2bua import LocalAnswer

    net, gateway, alice, bob = make(
        lambda e: LocalAnswer(body=b"report", content_type="text/plain", hangup_after=2.0)
    )
    invite = alice.invite(GW, net.now)
    net.transfer()
    ok = alice.responses("INVITE")[-1]
    assert ok.response.status == 200
    assert ok.response.body == b"report"
    ack_2xx(alice, invite, ok, GW)
    net.transfer()
    net.advance(2.5)
    assert len(alice.requests("BYE")) == 1
    assert bob.events == []
    (ended,) = gateway.ended
    assert ended.disposition == "answered"
    assert ended.hangup_side == "gateway"


def test_reinvite_in_anchored_call_answered_with_the_gateway_sdp():
    net, gateway, alice, bob, invite, call = start_announced()
    gateway.b2bua.media_ready(call.uuid, GW_SDP, RELAY_OFFER, net.now)
    gateway.b2bua.announcement_done(call.uuid, True, net.now)
    net.transfer()
    (incoming,) = bob.requests("INVITE")
    bob.answer(incoming, 200, net.now, body=SDP_ANSWER)
    net.transfer()
    dialog = ack_2xx(alice, invite, alice.responses("INVITE")[-1], GW)
    net.transfer()
    reinvite = dialog.create_request("INVITE")
    reinvite.headers.add("Content-Type", "application/sdp")
    reinvite.body = SDP_OFFER
    alice.layer.send_request(reinvite, GW, net.now)
    net.transfer()
    ok = alice.responses("INVITE")[-1].response
    assert ok.status == 200
    assert ok.body == GW_SDP  # still the relay: the caller's media path never moves
    assert len(bob.requests("INVITE")) == 1  # not relayed to the callee


# ------------------------------------------ route.response_headers (RFC 6442 4.3)

GEO_ERROR = ("Geolocation-Error", '100 ;code="Cannot Process Location"')


def with_caller_headers(*targets: Endpoint):
    return lambda event: Route(targets=targets or (BOB,), response_headers=(GEO_ERROR,))


def geo_errors(peer: Peer) -> dict[int, list[str]]:
    return {
        e.response.status: e.response.headers.values("Geolocation-Error")
        for e in peer.responses("INVITE")
    }


def test_response_headers_ride_on_the_provisional_and_the_answer_not_the_100():
    net, gateway, alice, bob = make(with_caller_headers())
    invite, incoming, _ = establish(net, alice, bob)
    assert alice.statuses("INVITE") == [100, 180, 200]
    assert geo_errors(alice) == {100: [], 180: [GEO_ERROR[1]], 200: [GEO_ERROR[1]]}
    # The B leg is not told: the header is the gateway's answer to the caller.
    assert incoming.request.headers.get("Geolocation-Error") is None


def test_response_headers_ride_on_a_failure_final_and_replace_the_callees():
    net, gateway, alice, bob = make(with_caller_headers())
    alice.invite(GW, net.now)
    net.transfer()
    (incoming,) = bob.requests("INVITE")
    bob.answer(incoming, 486, net.now, headers=[("Geolocation-Error", "300")])
    net.transfer()
    assert geo_errors(alice)[486] == [GEO_ERROR[1]]


def test_response_headers_set_once_on_a_queued_reliable_provisional():
    net, gateway, alice, bob = make(with_caller_headers())
    invite = invite_requiring_100rel(alice, net)
    net.transfer()
    (incoming,) = bob.requests("INVITE")
    bob.answer(incoming, 180, net.now)
    bob.answer(incoming, 183, net.now)  # queued behind the unacknowledged 180
    net.transfer()
    ringing = next(e for e in alice.responses("INVITE") if e.response.status == 180)
    prack(alice, invite, ringing, "1", net)
    net.transfer()
    assert geo_errors(alice)[183] == [GEO_ERROR[1]]


def test_response_headers_ride_on_the_announcements_183():
    from gateway.b2bua import Announcement

    route = Route(
        targets=(BOB,),
        response_headers=(GEO_ERROR,),
        announcement=Announcement(prompt="nomadic-warning", language="sv", kind="nomadic-warning"),
    )
    net, gateway, alice, bob = make(lambda event: route)
    alice.invite(GW, net.now)
    net.transfer()
    (call,) = gateway.b2bua.calls.values()
    gateway.b2bua.media_ready(call.uuid, GW_SDP, RELAY_OFFER, net.now)
    net.transfer()
    assert geo_errors(alice)[183] == [GEO_ERROR[1]]


OWNER_GONE = Reject(status=480, reason="Temporarily Unavailable", headers=(("Retry-After", "60"),))


def via_owner(event: RouteNeeded) -> Route:
    # The route gateway.registrar.routing.route_via_owner builds (bob: the owner).
    return Route(targets=(BOB,), failover_timeout=2.0, unreachable=OWNER_GONE)


@pytest.mark.parametrize("status", [408, 500, 503, 504])
def test_unreachable_owner_answering_failure_gives_the_routes_answer(status):
    net, gateway, alice, bob = make(via_owner)
    alice.invite(GW, net.now)
    net.transfer()
    (incoming,) = bob.requests("INVITE")
    bob.answer(incoming, status, net.now)
    net.transfer()
    final = alice.responses("INVITE")[-1].response
    assert (final.status, final.headers.get("Retry-After")) == (480, "60")


def test_a_callee_answer_that_is_not_unreachability_is_relayed_as_it_is():
    net, gateway, alice, bob = make(via_owner)
    alice.invite(GW, net.now)
    net.transfer()
    (incoming,) = bob.requests("INVITE")
    bob.answer(incoming, 486, net.now)
    net.transfer()
    assert alice.statuses("INVITE")[-1] == 486


def test_silent_owner_gives_the_routes_answer_after_failover_timeout():
    net, gateway, alice, bob = make(via_owner)
    net.drop = lambda data, src, dst: dst.port == BOB.port
    alice.invite(GW, net.now)
    net.transfer()
    net.advance(1.5)
    assert 480 not in alice.statuses("INVITE")
    net.advance(1.0)
    final = alice.responses("INVITE")[-1].response
    assert (final.status, final.headers.get("Retry-After")) == (480, "60")


def test_owner_unreachable_at_the_transport_gives_the_routes_answer():
    net, gateway, alice, bob = make(lambda e: Route(targets=(BOB,), unreachable=OWNER_GONE))
    net.drop = lambda data, src, dst: dst.port == BOB.port
    alice.invite(GW, net.now)
    net.transfer()
    net.advance(33.0, step=0.5)  # Timer B: no failover_timeout on this route
    assert alice.statuses("INVITE")[-1] == 480


def test_options_get_503_while_draining():
    net, gateway, alice, bob = make()
    gateway.b2bua.draining = True
    req = Request(method="OPTIONS", uri="sip:127.0.0.1")
    for name, value in [
        ("Max-Forwards", "70"),
        ("From", "<sip:kamailio@127.0.0.2>;tag=o"),
        ("To", "<sip:127.0.0.1>"),
        ("Call-ID", "opt-drain"),
        ("CSeq", "1 OPTIONS"),
    ]:
        req.headers.add(name, value)
    alice.layer.send_request(req, GW, net.now)
    net.transfer()
    (response,) = alice.responses("OPTIONS")
    assert response.response.status == 503


def test_record_route_of_the_invite_is_copied_into_the_callers_18x_and_2xx():
    # RFC 3261 12.1.1: a caller behind a record-routing proxy (a dispatcher in front
    # of several instances) gets the Record-Route back in order, so its ACK and BYE
    # go through the proxy.
    net, gateway, alice, bob = make()
    record_route = (
        ("Record-Route", "<sip:127.0.0.9:5060;lr;ftag=a1>"),
        ("Record-Route", "<sip:127.0.0.8;lr>"),
    )
    alice.invite(GW, net.now, extra=record_route)
    net.transfer()
    (incoming,) = bob.requests("INVITE")
    assert incoming.request.headers.get("Record-Route") is None  # the B leg is ours
    bob.answer(incoming, 180, net.now)
    net.transfer()
    bob.answer(incoming, 200, net.now, body=SDP_ANSWER)
    net.transfer()
    by_status = {e.response.status: e.response for e in alice.responses("INVITE")}
    for status in (180, 200):
        assert by_status[status].headers.get_lines("Record-Route") == [
            "<sip:127.0.0.9:5060;lr;ftag=a1>",
            "<sip:127.0.0.8;lr>",
        ]
    assert by_status[100].headers.get("Record-Route") is None


def test_a_second_forks_2xx_after_the_call_is_confirmed_is_acked_and_ended():
    """RFC 3261 13.2.2.4: a forking proxy in front of the callee may pass a second
    2xx (another To tag) after the first was ACKed; the gateway keeps the first
    dialog, so the second is ACKed and ended with BYE, never given the first
    dialog's ACK (which would leave that phone answered, its call never ended)."""
    net, gateway, alice, bob = make()
    establish(net, alice, bob)
    ok = next(
        data
        for src, dst, data in net.log
        if (src.host, dst.host) == (BOB.host, GW.host) and data.startswith(b"SIP/2.0 200")
    )
    (b_ack,) = [m for m in net.sent(GW, BOB) if isinstance(m, Request) and m.method == "ACK"]
    first_tag = b_ack.headers.get("To").split("tag=")[1]
    second = ok.replace(f"tag={first_tag}".encode(), b"tag=second-fork")
    assert second != ok
    net.gateway.layer.receive_message(second, BOB, net.now)
    net.transfer()
    sent = [m for m in net.sent(GW, BOB) if isinstance(m, Request)]
    to_second = [m.method for m in sent if "tag=second-fork" in (m.headers.get("To") or "")]
    assert to_second == ["ACK", "BYE"]
    # The first dialog is untouched: one ACK for it, and the call still up.
    assert [m.method for m in sent if f"tag={first_tag}" in (m.headers.get("To") or "")] == ["ACK"]
    assert len(gateway.b2bua.calls) == 1
