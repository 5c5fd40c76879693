"""Parse-level outcomes of the RFC 4475 torture messages.

The messages are read from ``../shared/conformance/rfc4475/`` (never copied here).
Semantic cases (unknown scheme, Require, unknown Content-Type, Max-Forwards 0 ...)
must parse: the UAS answers them with 416/420/415/483. The parser alone decides
the cases below.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from gateway.sip.errors import ParseError
from gateway.sip.headers import all_contacts, parse_name_address, parse_via
from gateway.sip.message import Request, Response
from gateway.sip.parser import PartialMessage, parse_message
from gateway.sip.uri import SipUri, parse_uri, uri_equal

RFC4475 = Path(__file__).parents[2] / ".." / "shared" / "conformance" / "rfc4475"

#: file -> status_hint of the ParseError the parser must raise.
REJECTED = {
    "badinv01.dat": 400,
    "clerr.dat": 400,
    "ncl.dat": 400,
    "scalar02.dat": 400,
    "scalarlg.dat": 400,
    "quotbal.dat": 400,
    "ltgtruri.dat": 400,
    "lwsruri.dat": 400,
    "lwsstart.dat": 400,
    "trws.dat": 400,
    "escruri.dat": 400,
    "regbadct.dat": 400,
    "badaspec.dat": 400,
    "baddn.dat": 400,
    "badvers.dat": 505,
    "mismatch01.dat": 400,
    "mismatch02.dat": 501,
    "bigcode.dat": 400,
    "insuf.dat": 400,
    "multi01.dat": 400,
    "mcl01.dat": 400,
}


def _manifest() -> list[str]:
    with (RFC4475 / "MANIFEST.tsv").open(newline="") as f:
        return [row["file"] for row in csv.DictReader(f, delimiter="\t")]


FILES = _manifest()


def _load(name: str) -> bytes:
    return (RFC4475 / name).read_bytes()


def test_manifest_is_complete() -> None:
    assert len(FILES) == 49
    assert set(REJECTED) <= set(FILES)


@pytest.mark.parametrize("name", FILES)
def test_parse_outcome(name: str) -> None:
    data = _load(name)
    if name in REJECTED:
        with pytest.raises(ParseError) as info:
            parse_message(data)
        assert info.value.__cause__ is None
        assert info.value.status_hint == REJECTED[name]
        # Every rejected torture message has a readable header section, so a
        # stateless answer is possible.
        assert isinstance(info.value.partial, PartialMessage)
    else:
        message = parse_message(data)
        assert message.headers.get("Call-ID")


def test_wsinv_values() -> None:
    message = parse_message(_load("wsinv.dat"))
    assert isinstance(message, Request)
    assert message.headers.get("CSeq") == "0009 INVITE"
    assert message.headers.get("Max-Forwards") == "0068"
    vias = [v for line in message.headers.get_lines("Via") for v in parse_via(line)]
    assert [v.transport for v in vias] == ["UDP", "TCP", "UDP"]
    assert vias[2].branch == "z9hG4bK30239"
    sender = parse_name_address(message.headers.get("From") or "")
    assert sender.display_name == 'J Rosenberg \\"'
    assert sender.tag == "98asjd8"
    assert message.headers.get("NewFangledHeader") == (
        "newfangled value continued newfangled value"
    )
    assert len(message.body) == 150


def test_intmeth_method_and_values() -> None:
    message = parse_message(_load("intmeth.dat"))
    assert isinstance(message, Request)
    assert message.method == "!interesting-Method0123456789_*+`.%indeed'~"
    uri = parse_uri(message.uri)
    assert isinstance(uri, SipUri)
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"


def test_esc01_escaped_user_equals_unescaped() -> None:
    message = parse_message(_load("esc01.dat"))
    to = parse_name_address(message.headers.get("To") or "").parsed_uri()
    assert uri_equal(to, parse_uri("sip:user@example.com"))


def test_escnull_keeps_escaped_nulls() -> None:
    message = parse_message(_load("escnull.dat"))
    contacts = all_contacts(message.headers)
    assert contacts != "*"
    assert [c.uri for c in contacts] == [
        "sip:%00@host5.example.com",
        "sip:%00%00@host5.example.com",
    ]
    uri = contacts[1].parsed_uri()
    assert isinstance(uri, SipUri)
    assert uri.user_unescaped == "\x00\x00"


def test_dblreq_takes_first_message_only() -> None:
    message = parse_message(_load("dblreq.dat"))
    assert isinstance(message, Request)
    assert message.method == "REGISTER"
    assert message.body == b""


def test_semiuri_semicolon_belongs_to_user() -> None:
    message = parse_message(_load("semiuri.dat"))
    assert isinstance(message, Request)
    uri = parse_uri(message.uri)
    assert isinstance(uri, SipUri)
    assert uri.user == "user;par=u%40example.net"
    assert uri.params == ()


def test_transports_keeps_unknown_transport() -> None:
    message = parse_message(_load("transports.dat"))
    transports = [parse_via(v)[0].transport for v in message.headers.get_lines("Via")]
    assert transports == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_mpart01_body_kept_whole() -> None:
    message = parse_message(_load("mpart01.dat"))
    assert len(message.body) == 553


def test_unreason_and_noreason() -> None:
    unreason = parse_message(_load("unreason.dat"))
    assert isinstance(unreason, Response)
    assert unreason.status == 200
    assert unreason.reason.startswith("= 2**3 * 5**2 но")
    noreason = parse_message(_load("noreason.dat"))
    assert isinstance(noreason, Response)
    assert noreason.reason == ""


def test_cparam_parameters_land_in_the_right_place() -> None:
    header_param = all_contacts(parse_message(_load("cparam01.dat")).headers)
    uri_param = all_contacts(parse_message(_load("cparam02.dat")).headers)
    assert header_param != "*"
    assert uri_param != "*"
    assert header_param[0].param("unknownparam") == ""
    assert uri_param[0].param("unknownparam") is None
    uri = uri_param[0].parsed_uri()
    assert isinstance(uri, SipUri)
    assert uri.param("unknownparam") == ""


def test_regescrt_keeps_escaped_header() -> None:
    contacts = all_contacts(parse_message(_load("regescrt.dat")).headers)
    assert contacts != "*"
    uri = contacts[0].parsed_uri()
    assert isinstance(uri, SipUri)
    assert uri.headers == (("Route", "%3Csip:sip.example.com%3E"),)


def test_valid_files_reserialize_and_reparse_equal() -> None:
    for name in FILES:
        if name in REJECTED:
            continue
        message = parse_message(_load(name))
        wire = message.serialize()
        again = parse_message(wire)

        # serialize() writes Content-Length last; every other line keeps its order.
        def without_length(m: Request | Response) -> list[tuple[str, str]]:
            return [f for f in m.headers if f[0] != "Content-Length"]

        assert without_length(again) == without_length(message), name
        assert again.body == message.body, name
        assert again.serialize() == wire, name
