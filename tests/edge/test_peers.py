"""gateway/edge/peers.py: a centre's transport address and the overlaps check-config warns of."""

from __future__ import annotations

import ipaddress

from gateway.edge.peers import address_overlaps, same_transport_address, uri_address
from routing.model import EmergencyCentre


def centre(cid: str, uri: str) -> EmergencyCentre:
    return EmergencyCentre(id=cid, name=cid, sip_uri=uri)


def test_uri_address_defaults_the_port_and_normalises_ip_literals() -> None:
    assert str(uri_address("x", "sip:112@127.0.112.1")) == "127.0.112.1:5060"
    assert str(uri_address("x", "sips:112@psap.example")) == "psap.example:5061"
    address = uri_address("x", "sip:112@[0:0::1]:5090;transport=udp")
    assert address is not None and address.host == "::1" and str(address) == "[::1]:5090"
    assert uri_address("x", "tel:112") is None
    assert uri_address("x", "not a uri") is None


def test_same_transport_address_needs_host_and_port() -> None:
    assert same_transport_address("::1", 5090, "0:0::1", 5090)
    assert not same_transport_address("127.0.0.1", 5090, "127.0.0.1", 5080)
    assert same_transport_address("PSAP.example", 5060, "psap.example", 5060)


def test_centres_of_their_own_give_no_warning() -> None:
    centres = [centre("a", "sip:112@127.0.112.1:5090"), centre("b", "sip:112@127.0.112.1:5091")]
    assert (
        address_overlaps(
            centres,
            upstream=[("upstream sip:127.0.0.1:5080", "sip:127.0.0.1:5080")],
            trusted=[("[upstream] trusted_peers", ipaddress.ip_network("127.0.0.1/32"))],
        )
        == []
    )


def test_each_overlap_names_both_peers() -> None:
    centres = [
        centre("a", "sip:112@127.0.0.1:5090"),
        centre("b", "sip:112@127.0.0.1:5090"),
        centre("c", "sip:112@127.0.0.1:5080"),
        centre("d", "sip:112@psap.example"),
    ]
    warnings = address_overlaps(
        centres,
        upstream=[("upstream sip:127.0.0.1:5080", "sip:127.0.0.1:5080")],
        trusted=[("[upstream] trusted_peers", ipaddress.ip_network("127.0.0.0/24"))],
    )
    assert any("centre b and centre a share the transport address" in w for w in warnings)
    assert any(
        "centre c and upstream sip:127.0.0.1:5080 share the transport address" in w
        for w in warnings
    )
    assert any(
        "centre a (127.0.0.1:5090) shares the host 127.0.0.1 with upstream" in w for w in warnings
    )
    assert any("centre a" in w and "trusted peer network 127.0.0.0/24" in w for w in warnings)
    # A host name is compared as a name; it cannot be placed in a network without DNS.
    assert not any("centre d" in w for w in warnings)
