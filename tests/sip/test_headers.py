"""Tests for gateway.sip.headers typed views."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sip.errors import ParseError
from gateway.sip.headers import (
    BRANCH_MAGIC_COOKIE,
    CSeq,
    NameAddress,
    Via,
    _parse_plain_via,
    _parse_via_grammar,
    all_contacts,
    format_auth,
    generate_branch,
    generate_tag,
    parse_auth,
    parse_contacts,
    parse_cseq,
    parse_int_header,
    parse_name_address,
    parse_option_tags,
    parse_via,
    top_via,
)
from gateway.sip.message import Headers
from gateway.sip.uri import SipUri


def test_via_fields_and_properties() -> None:
    (via,) = parse_via("SIP/2.0/udp 192.0.2.1:5062;branch=z9hG4bK77;rport;received=192.0.2.9")
    assert via.protocol == "SIP/2.0"
    assert via.transport == "UDP"
    assert via.sent_by == ("192.0.2.1", 5062)
    assert via.branch == "z9hG4bK77"
    assert via.rport == ""
    assert via.received == "192.0.2.9"
    assert via.maddr is None
    assert str(via) == "SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bK77;rport;received=192.0.2.9"


def test_via_with_param_replaces_in_place() -> None:
    via = parse_via("SIP/2.0/UDP h.example.com;rport;branch=z9hG4bK1")[0]
    updated = via.with_param("rport", "5060").with_param("received", "192.0.2.3")
    assert updated.rport == "5060"
    assert str(updated) == (
        "SIP/2.0/UDP h.example.com;rport=5060;branch=z9hG4bK1;received=192.0.2.3"
    )
    assert via.rport == ""


def test_name_address_with_tag_replaces_in_place() -> None:
    to = parse_name_address("<sip:b@example.com>;tag=old;x=1")
    assert str(to.with_tag("new")) == "<sip:b@example.com>;tag=new;x=1"
    assert str(to.with_param("X", "2")) == "<sip:b@example.com>;tag=old;x=2"


def test_via_ipv6_and_several_values_with_lws() -> None:
    vias = parse_via("SIP / 2.0 / TLS [2001:DB8::9]:5061 ; branch = z9hG4bKa ,SIP/2.0/WS x.invalid")
    assert [v.transport for v in vias] == ["TLS", "WS"]
    assert vias[0].host == "2001:db8::9"
    assert str(vias[0]) == "SIP/2.0/TLS [2001:db8::9]:5061;branch=z9hG4bKa"
    assert vias[1].port is None


@pytest.mark.parametrize(
    "received",
    ["2001:db8::9:255", "[2001:db8::9:255]", "::1", "fe80::", "::ffff:192.0.2.1"],
)
def test_via_received_ipv6_with_and_without_brackets(received: str) -> None:
    # RFC 3261 via-received = "received" EQUAL (IPv4address / IPv6address): no
    # brackets; RFC 5118 4.5/4.6 rule both forms valid.
    value = f"SIP/2.0/UDP [2001:db8::9:1];received={received};branch=z9hG4bKas3-111 , SIP/2.0/UDP b"
    first, second = parse_via(value)
    assert first.received == received.strip("[]")
    assert first.branch == "z9hG4bKas3-111"
    assert second.host == "b"
    assert str(first) == f"SIP/2.0/UDP [2001:db8::9:1];received={received};branch=z9hG4bKas3-111"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "SIP/2.0/UDP host;received=2001:db8::9:255:",
        "SIP/2.0/UDP host;received=2001:db8::9:zz",
        "SIP/2.0/UDP",
        "SIP/2.0 host",
        "SIP/2.0/UDP host;;",
        "SIP/2.0/UDP host;branch=",
        "SIP/2.0/UDP host,",
        "SIP/2.0/UDP host:99999",
        "SIP/2.0/UDP ho st",
    ],
)
def test_invalid_via(value: str) -> None:
    with pytest.raises(ParseError):
        parse_via(value)


PLAIN_VIAS = [
    "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1;rport",
    "SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bK77;rport=5062;received=192.0.2.9",
    "SIP/2.0/TCP pbx.example.com;branch=z9hG4bK.x!%*_+`'~",
    "SIP/2.0/udp h:05060",
    "SIP/2.0/X h",
]
#: Close to the plain form, each left to the grammar (valid or not).
NOT_PLAIN_VIAS = [
    "SIP/2.0/UDP pbx-1.example.com;branch=z9hG4bK1",  # hyphen
    "SIP / 2.0 / UDP h;branch=z9hG4bK1",  # SWS
    "SIP/2.0/UDP  h",  # two SPs
    "SIP/2.0/UDP\th",
    "SIP/2.0/UDP h ;branch=z9hG4bK1",
    "SIP/2.0/UDP h;branch = z9hG4bK1",
    "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK1",
    "SIP/2.0/UDP h;received=2001:db8::9",
    'SIP/2.0/UDP h;x="quoted"',
    "SIP/2.0/UDP h, SIP/2.0/UDP g",
    "SIP/2.0/UDP h.",
    "SIP/2.0/UDP h;;",
    "SIP/2.0/UDP h;branch=",
    "SIP/2.0/UDP h:",
    "SIP/2.0/UDP h:5060x",
    "SIP/2.0/UDP h\u00e9",
    "SIP/2.0/UDP 1\u00b2.0.0.1",
    "sip/2.0/UDP h",
    "SIP/2.0/ h",
]


@pytest.mark.parametrize("value", PLAIN_VIAS)
def test_plain_via_is_read_as_the_grammar_reads_it(value: str) -> None:
    assert [_parse_plain_via(value)] == _parse_via_grammar(value) == parse_via(value)


@pytest.mark.parametrize("value", NOT_PLAIN_VIAS)
def test_via_outside_the_plain_form_goes_to_the_grammar(value: str) -> None:
    assert _parse_plain_via(value) is None


#: Pieces of a Via near the plain form: mostly valid, sometimes one odd character.
_PIECE = st.text(alphabet="aZ09.-_~!", min_size=0, max_size=6) | st.text(
    alphabet='a0. \t:;=,[]"/\u00e9\u00b2', max_size=3
)


_TOKEN = st.text(alphabet="aZ09-.!%*_+`'~", min_size=1, max_size=6)
_HOST = st.lists(st.text(alphabet="aZ09", min_size=1, max_size=3), min_size=1, max_size=4).map(
    ".".join
)


@settings(max_examples=3000)
@given(
    transport=_TOKEN | _PIECE,
    separator=st.sampled_from([" ", " ", " ", "  ", "\t", ""]),
    host=_HOST | _PIECE,
    port=st.none() | st.text(alphabet="0123456789", min_size=1, max_size=6) | _PIECE,
    params=st.lists(st.tuples(_TOKEN | _PIECE, st.none() | _TOKEN | _PIECE), max_size=3),
)
def test_plain_via_accepts_only_what_the_grammar_accepts_alike(
    transport: str,
    separator: str,
    host: str,
    port: str | None,
    params: list[tuple[str, str | None]],
) -> None:
    value = f"SIP/2.0/{transport}{separator}{host}" + ("" if port is None else f":{port}")
    value += "".join(f";{name}" + ("" if v is None else f"={v}") for name, v in params)
    try:
        plain: list[Via] | str | None = [v] if (v := _parse_plain_via(value)) else None
    except ParseError:
        plain = "ParseError"  # a port beyond 65535, as the grammar's parse says
    try:
        grammar: list[Via] | str = _parse_via_grammar(value)
    except ParseError:
        grammar = "ParseError"
    assert plain is None or plain == grammar, value


def test_plain_via_port_out_of_range_is_an_error() -> None:
    with pytest.raises(ParseError, match="port out of range"):
        _parse_plain_via("SIP/2.0/UDP h:65536")


def test_top_via() -> None:
    headers = Headers([("Via", "SIP/2.0/TCP a.example.com;branch=z9hG4bK1, SIP/2.0/UDP b")])
    assert top_via(headers).host == "a.example.com"
    with pytest.raises(ParseError, match="missing Via"):
        top_via(Headers())


def test_via_constructed_directly() -> None:
    via = Via(transport="TCP", host="2001:db8::1", port=5060, params=(("branch", "z9hG4bKx"),))
    assert str(via) == "SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bKx"
    assert parse_via(str(via)) == [via]


def test_cseq() -> None:
    assert parse_cseq("0009   INVITE") == CSeq(9, "INVITE")
    assert str(CSeq(1, "BYE")) == "1 BYE"
    assert parse_cseq(f"{2**31 - 1} ACK").seq == 2**31 - 1
    for bad in ("INVITE", "1INVITE", f"{2**31} ACK", "1 INV ITE", "-1 BYE", "9" * 5000 + " BYE"):
        with pytest.raises(ParseError):
            parse_cseq(bad)


def test_name_address_forms() -> None:
    quoted = parse_name_address('"Alice \\"A\\"" <sip:alice@example.com;transport=tcp>;tag=88')
    assert quoted.display_name == 'Alice "A"'
    assert quoted.uri == "sip:alice@example.com;transport=tcp"
    assert quoted.tag == "88"
    assert str(quoted) == '"Alice \\"A\\"" <sip:alice@example.com;transport=tcp>;tag=88'
    bare = parse_name_address("sip:bob@example.com;tag=1;x")
    assert bare == NameAddress(None, "sip:bob@example.com", (("tag", "1"), ("x", None)))
    assert str(bare) == "<sip:bob@example.com>;tag=1;x"
    tokens = parse_name_address("Bob  Smith<sip:bob@example.com>")
    assert tokens.display_name == "Bob  Smith"
    parsed = bare.parsed_uri()
    assert isinstance(parsed, SipUri)
    assert parsed.params == ()


def test_with_tag() -> None:
    to = parse_name_address("<sip:b@example.com>")
    assert to.tag is None
    assert str(to.with_tag("abc")) == "<sip:b@example.com>;tag=abc"
    assert str(to.with_tag("abc").with_tag("def")) == "<sip:b@example.com>;tag=def"
    assert to.with_param("x", None).param("x") == ""


@pytest.mark.parametrize(
    "value",
    [
        '"unterminated <sip:a@example.com>',
        "< sip:a@example.com>",
        "<sip:a@example.com >",
        "Bell, Alexander <sip:a@example.com>",
        "sip:a@example.com?Subject=x",
        "<sip:a@example.com>;;",
        "<sip:a@example.com>;tag=a b",
        "",
    ],
)
def test_invalid_name_address(value: str) -> None:
    with pytest.raises(ParseError):
        parse_name_address(value)


def test_contacts() -> None:
    contacts = parse_contacts('<sip:a@h1>;q=0.5;expires=60, "B" <sip:b@h2>, sip:c@h3;q=0.1')
    assert contacts != "*"
    assert [c.uri for c in contacts] == ["sip:a@h1", "sip:b@h2", "sip:c@h3"]
    assert contacts[0].param("expires") == "60"
    assert contacts[2].param("q") == "0.1"
    assert parse_contacts(" * ") == "*"
    with pytest.raises(ParseError):
        parse_contacts("<sip:a@h1>;expires=4294967296")
    with pytest.raises(ParseError):
        parse_contacts("<sip:a@h1>,,<sip:b@h2>")


def test_all_contacts() -> None:
    headers = Headers([("Contact", "<sip:a@h1>"), ("m", "<sip:b@h2>, <sip:c@h3>")])
    contacts = all_contacts(headers)
    assert contacts != "*"
    assert [c.uri for c in contacts] == ["sip:a@h1", "sip:b@h2", "sip:c@h3"]
    assert all_contacts(Headers([("Contact", "*")])) == "*"
    with pytest.raises(ParseError):
        all_contacts(Headers([("Contact", "*"), ("Contact", "<sip:a@h1>")]))


def test_auth_round_trip() -> None:
    value = (
        'Digest username="bob", realm="biloxi.com", nonce="dcd98b7102dd2f0e",'
        'uri="sip:bob@biloxi.com", response="245f23415f11432b", algorithm=MD5,'
        " qop=auth, nc=00000001"
    )
    scheme, params = parse_auth(value)
    assert scheme == "Digest"
    assert params["uri"] == "sip:bob@biloxi.com"
    assert params["nc"] == "00000001"
    assert parse_auth(format_auth(scheme, params)) == (scheme, params)
    assert format_auth("Digest", {"realm": "a", "qop": "auth"}, quoted={"realm", "qop"}) == (
        'Digest realm="a", qop="auth"'
    )
    assert parse_auth('Digest realm="a \\"b\\""')[1] == {"realm": 'a "b"'}
    assert parse_auth("NoOneKnowsThisScheme opaque-data=here") == (
        "NoOneKnowsThisScheme",
        {"opaque-data": "here"},
    )


@pytest.mark.parametrize(
    "value",
    ["", "Digest realm", 'Digest realm="a", realm="b"', "Digest realm=a,,nonce=b", 'Digest x="'],
)
def test_invalid_auth(value: str) -> None:
    with pytest.raises(ParseError):
        parse_auth(value)


def test_int_header() -> None:
    assert parse_int_header(" 0068 ", "Max-Forwards") == 68
    assert parse_int_header("4294967295", "Expires") == 2**32 - 1
    for bad in ("", "-1", "1.0", "4294967296", "٣", "9" * 5000):
        with pytest.raises(ParseError):
            parse_int_header(bad, "Expires")
    with pytest.raises(ParseError):
        parse_int_header("256", "Max-Forwards", maximum=255)


def test_option_tags() -> None:
    assert parse_option_tags("100rel, timer ,replaces") == ["100rel", "timer", "replaces"]
    assert parse_option_tags("") == []
    for bad in ("a,,b", "a b", "a,"):
        with pytest.raises(ParseError):
            parse_option_tags(bad)


def test_generated_identifiers() -> None:
    branch = generate_branch(bytes(range(8)))
    assert branch == BRANCH_MAGIC_COOKIE + "0001020304050607"
    assert generate_branch(b"\x01") != generate_branch(b"\x02")
    assert generate_tag(b"\xab\xcd") == "abcd"
