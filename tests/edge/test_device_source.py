"""gateway/edge/device_source.py: a device's address is believed from a trusted edge
proxy's Via received/rport, and from nobody else."""

from __future__ import annotations

import ipaddress

from gateway.edge.device_source import DeviceSource, device_source
from gateway.sip.events import Endpoint
from gateway.sip.message import Headers, Request

EDGE = (ipaddress.ip_network("127.0.0.2/32"),)
KAMAILIO = Endpoint("UDP", "127.0.0.2", 5060)
PHONE = Endpoint("UDP", "127.0.99.9", 40000)
KAMAILIO_VIA = "SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-k1"


def request(*vias: str) -> Request:
    headers = Headers(
        [
            *(("Via", via) for via in vias),
            ("From", "<sip:alice@voipgw.demo>;tag=1"),
            ("To", "<sip:112@voipgw.demo>"),
            ("Call-ID", "c1"),
            ("CSeq", "1 INVITE"),
        ]
    )
    return Request(method="INVITE", uri="sip:112@voipgw.demo", headers=headers, body=b"")


def test_received_and_rport_below_a_trusted_proxy_are_the_device() -> None:
    behind_nat = "SIP/2.0/UDP 192.168.1.20:5062;received=127.0.10.5;rport=40001;branch=z9hG4bK1"
    got = device_source(request(KAMAILIO_VIA, behind_nat), KAMAILIO, EDGE)
    assert got == DeviceSource(endpoint=Endpoint("UDP", "127.0.10.5", 40001), edge_proxy=KAMAILIO)


def test_sent_by_below_a_trusted_proxy_when_it_added_nothing() -> None:
    # RFC 3261 18.2.1: no received= means the proxy found the sent-by host to be the
    # packet's source; without rport the sent-by port (else 5060) is the port.
    got = device_source(
        request(KAMAILIO_VIA, "SIP/2.0/UDP 127.0.10.5;branch=z9hG4bK1"), KAMAILIO, EDGE
    )
    assert got.endpoint == Endpoint("UDP", "127.0.10.5", 5060)
    assert got.edge_proxy == KAMAILIO


def test_a_forged_received_from_an_untrusted_source_is_ignored() -> None:
    # A phone straight at the gateway writes the office address into its Via, and
    # even a second Via as if it came through a proxy: its packet's address stands.
    forged = request(
        "SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-fake",
        "SIP/2.0/UDP 192.168.1.20;received=127.0.10.5;rport=5060;branch=z9hG4bK1",
    )
    assert device_source(forged, PHONE, EDGE) == DeviceSource(endpoint=PHONE)
    assert device_source(forged, PHONE, ()) == DeviceSource(endpoint=PHONE)


def test_no_usable_via_below_leaves_the_proxy_as_the_source() -> None:
    # Vouching for nothing is not vouching for an office: the proxy's own address
    # is on no office network.
    for vias in (
        (KAMAILIO_VIA,),
        (KAMAILIO_VIA, "SIP/2.0/UDP phone.example.com;branch=z9hG4bK1"),
        (KAMAILIO_VIA, "SIP/2.0/UDP 192.168.1.20;rport=99999;branch=z9hG4bK1"),
        (KAMAILIO_VIA, "SIP/2.0/UDP 192.168.1.20;rport=x;branch=z9hG4bK1"),
        (KAMAILIO_VIA, "garbage"),
    ):
        assert device_source(request(*vias), KAMAILIO, EDGE) == DeviceSource(endpoint=KAMAILIO)


def test_a_chain_of_trusted_proxies_is_walked_down_to_the_device() -> None:
    edges = (*EDGE, ipaddress.ip_network("127.0.5.0/24"))
    sbc = "SIP/2.0/UDP 127.0.5.1:5060;branch=z9hG4bK-s1"
    phone = "SIP/2.0/UDP 10.0.0.8:5062;received=127.0.10.5;rport=40002;branch=z9hG4bK1"
    got = device_source(request(KAMAILIO_VIA, sbc, phone), KAMAILIO, edges)
    assert got.endpoint == Endpoint("UDP", "127.0.10.5", 40002)
    # The SBC is no trusted proxy here: the Via below it is the phone's own claim.
    assert device_source(request(KAMAILIO_VIA, sbc, phone), KAMAILIO, EDGE).endpoint == (
        Endpoint("UDP", "127.0.5.1", 5060)
    )


def test_ipv6_received_below_a_trusted_proxy() -> None:
    edges = (ipaddress.ip_network("2001:db8::2/128"),)
    proxy = Endpoint("UDP", "2001:db8::2", 5060)
    phone = "SIP/2.0/UDP [fd00::8]:5062;received=[2001:db8:10::5];rport=40003;branch=z9hG4bK1"
    got = device_source(request("SIP/2.0/UDP [2001:db8::2];branch=z9hG4bK-k", phone), proxy, edges)
    assert got.endpoint == Endpoint("UDP", "2001:db8:10::5", 40003)
