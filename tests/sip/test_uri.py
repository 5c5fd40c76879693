"""Tests for gateway.sip.uri: parsing, wire form, RFC 3261 19.1.4 comparison."""

from __future__ import annotations

import pytest

from gateway.sip.errors import ParseError
from gateway.sip.uri import (
    AbsoluteUri,
    SipUri,
    TelUri,
    find_param,
    format_params,
    parse_uri,
    set_param,
    uri_equal,
    validate_uri,
)


def test_sip_uri_components() -> None:
    uri = parse_uri("sips:bob:pw@[2001:DB8::10]:5070;transport=TCP;lr?Subject=hi&X=")
    assert isinstance(uri, SipUri)
    assert (uri.scheme, uri.user, uri.password) == ("sips", "bob", "pw")
    assert (uri.host, uri.port) == ("2001:db8::10", 5070)
    assert uri.params == (("transport", "TCP"), ("lr", None))
    assert uri.headers == (("Subject", "hi"), ("X", ""))
    assert uri.transport == "tcp"
    assert uri.param("LR") == ""
    assert uri.param("maddr") is None
    assert uri.host_port == "[2001:db8::10]:5070"
    assert str(uri) == "sips:bob:pw@[2001:db8::10]:5070;transport=TCP;lr?Subject=hi&X="


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@example.com",
        "sip:example.com",
        "sip:+15551234567@gw.example.net;user=phone",
        "sip:alice@192.0.2.1:5060;transport=udp;lr",
        "sip:[2001:db8::1]",
        "sip:user;par=u%40example.net@example.com",
        "sip:a@example.com;maddr=[2001:db8::2]",
    ],
)
def test_sip_uri_round_trip(text: str) -> None:
    uri = parse_uri(text)
    assert str(uri) == text
    assert parse_uri(str(uri)) == uri
    validate_uri(text)


def test_param_editing() -> None:
    uri = parse_uri("sip:a@example.com;transport=udp")
    assert isinstance(uri, SipUri)
    assert str(uri.with_param("lr")) == "sip:a@example.com;transport=udp;lr"
    assert str(uri.with_param("transport", "tcp")) == "sip:a@example.com;transport=tcp"
    assert str(uri.with_params(lr=None, ttl="5")) == "sip:a@example.com;transport=udp;lr;ttl=5"
    assert str(uri.without_param("TRANSPORT")) == "sip:a@example.com"


def test_set_param_replaces_in_place() -> None:
    # The one helper behind SipUri, TelUri, Via and name-addr parameters.
    params = (("Transport", "udp"), ("lr", None), ("ttl", "5"))
    assert set_param(params, "TRANSPORT", "tcp") == (
        ("Transport", "tcp"),
        ("lr", None),
        ("ttl", "5"),
    )
    assert set_param(params, "lr", "x") == (("Transport", "udp"), ("lr", "x"), ("ttl", "5"))
    assert set_param(params, "maddr", None) == (*params, ("maddr", None))
    assert set_param((), "lr", None) == (("lr", None),)
    assert find_param(params, "transport") == "udp"
    assert find_param(params, "LR") == ""
    assert find_param(params, "maddr") is None
    assert format_params(set_param(params, "transport", "tls")) == ";Transport=tls;lr;ttl=5"


def test_with_param_keeps_a_replaced_parameter_in_place() -> None:
    uri = parse_uri("sip:a@example.com;transport=udp;lr;maddr=192.0.2.9")
    assert isinstance(uri, SipUri)
    assert (
        str(uri.with_param("transport", "tcp"))
        == "sip:a@example.com;transport=tcp;lr;maddr=192.0.2.9"
    )
    assert str(uri.with_params(lr="on", ttl="1")) == (
        "sip:a@example.com;transport=udp;lr=on;maddr=192.0.2.9;ttl=1"
    )


def test_user_unescaped() -> None:
    uri = parse_uri("sip:I%20have%20spaces@example.net")
    assert isinstance(uri, SipUri)
    assert uri.user == "I%20have%20spaces"
    assert uri.user_unescaped == "I have spaces"


def test_tel_uri() -> None:
    global_number = parse_uri("tel:+1-201-555-0123;ext=12")
    assert global_number == TelUri("+1-201-555-0123", (("ext", "12"),))
    assert isinstance(global_number, TelUri)
    assert global_number.is_global
    local = parse_uri("tel:7042;phone-context=example.com")
    assert isinstance(local, TelUri)
    assert not local.is_global
    assert local.phone_context == "example.com"
    assert str(local) == "tel:7042;phone-context=example.com"


@pytest.mark.parametrize(
    "text",
    [
        "urn:service:sos",
        "urn:service:sos.police",
        "http://www.example.com/a?b=c",
        "isbn:2983792873",
    ],
)
def test_absolute_uri_round_trip(text: str) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, AbsoluteUri)
    assert str(uri) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no-scheme",
        "sip:",
        "sip:a b@example.com",
        "<sip:a@example.com>",
        "sip:a@example.com:65536",
        "sip:a@[2001:db8::zz]",
        "sip:a@[1:2:3:4:5:6:7:8:9]",
        "sip:a@b@c",
        "sip:a@exa mple.com",
        "sip:a@-example.com",
        "sip:a@example.com;=x",
        "sip:a@example.com?",
        "sip:a@example.com;p=%zz",
        "tel:",
        "tel:+",
        "tel:12 34",
        "1urn:x",
    ],
)
def test_invalid_uris(text: str) -> None:
    with pytest.raises(ParseError):
        parse_uri(text)
    with pytest.raises(ParseError):
        validate_uri(text)


def test_validate_uri_rejects_headers_when_asked() -> None:
    validate_uri("sip:a@example.com?Route=%3Csip:x%3E")
    with pytest.raises(ParseError, match="URI headers not allowed"):
        validate_uri("sip:a@example.com?Route=%3Csip:x%3E", allow_headers=False)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # RFC 3261 19.1.4 examples of equivalent URIs.
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;newparam=5"),
        (
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
        ),
        (
            "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
            "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
        ),
        ("sip:null-%00-null@example.com", "sip:null-%00-null@example.com"),
        ("sip:a@[2001:db8:0::1]", "sip:a@[2001:DB8::1]"),
        ("tel:+1-201-555-0123", "tel:+12015550123"),
        ("URN:service:sos", "urn:service:sos"),
    ],
)
def test_equal_uris(a: str, b: str) -> None:
    assert uri_equal(parse_uri(a), parse_uri(b))
    assert uri_equal(parse_uri(b), parse_uri(a))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # RFC 3261 19.1.4 examples of URIs that are not equivalent.
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
        ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
        ("sip:a@example.com", "sips:a@example.com"),
        ("sip:a@example.com;maddr=x", "sip:a@example.com"),
        ("sip:null-%00-null@example.com", "sip:null-@example.com"),
        ("sip:a@example.com", "tel:+1"),
        ("urn:service:sos", "urn:service:sos.police"),
    ],
)
def test_unequal_uris(a: str, b: str) -> None:
    assert not uri_equal(parse_uri(a), parse_uri(b))
    assert not uri_equal(parse_uri(b), parse_uri(a))


@pytest.mark.parametrize(
    ("text", "user"),
    [
        ("sip:+358401000001;phone-context=x@pbx;user=phone", "+358401000001"),
        ("sip:alice@voipgw.demo", "alice"),
        ("sip:%61lice@voipgw.demo", "alice"),
        ("tel:+358-40-1000001", "+358-40-1000001"),
        ("sip:127.0.0.1:5060", None),
        ("urn:service:sos", None),
        ("not a uri", None),
    ],
)
def test_telephone_user(text: str, user: str | None) -> None:
    from gateway.sip.uri import telephone_user

    assert telephone_user(text) == user
