"""Dial strings: every form of 112, sos URNs, test calls, and what must not match."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing.config import EmergencyConfig
from routing.emergency import recognise_emergency
from routing.model import EmergencyKind

DEFAULT = EmergencyConfig()
WIDE = EmergencyConfig(numbers=("112", "911", "999"), test_numbers=("10112",))

E, T = EmergencyKind.EMERGENCY, EmergencyKind.TEST

# (dialled, config, kind, service URN, number)
POSITIVE = [
    ("112", DEFAULT, E, "urn:service:sos", "112"),
    (" 112 ", DEFAULT, E, "urn:service:sos", "112"),
    ("0112", DEFAULT, E, "urn:service:sos", "112"),
    ("9112", DEFAULT, E, "urn:service:sos", "112"),
    ("sip:112@gw.example", DEFAULT, E, "urn:service:sos", "112"),
    ("SIP:112@gw.example", DEFAULT, E, "urn:service:sos", "112"),
    ("sips:112@gw.example:5061", DEFAULT, E, "urn:service:sos", "112"),
    ("sip:112@gw.example;user=phone", DEFAULT, E, "urn:service:sos", "112"),
    ("sip:0112@gw.example;user=phone", DEFAULT, E, "urn:service:sos", "112"),
    ("sip:9112@127.0.0.1:5060;transport=tcp", DEFAULT, E, "urn:service:sos", "112"),
    ("sip:112;phone-context=+358@gw.example;user=phone", DEFAULT, E, "urn:service:sos", "112"),
    ("sip:1-1-2@gw.example;user=phone", DEFAULT, E, "urn:service:sos", "112"),
    ("sip:(112)@gw.example", DEFAULT, E, "urn:service:sos", "112"),
    ("sip:%31%31%32@gw.example", DEFAULT, E, "urn:service:sos", "112"),
    ("sip:112:secret@gw.example", DEFAULT, E, "urn:service:sos", "112"),
    ("sip:112@gw.example?Subject=help", DEFAULT, E, "urn:service:sos", "112"),
    ("<sip:112@gw.example>", DEFAULT, E, "urn:service:sos", "112"),
    ("sip:+358112@gw.example;user=phone", DEFAULT, E, "urn:service:sos", "112"),
    ("tel:112", DEFAULT, E, "urn:service:sos", "112"),
    ("TEL:112;phone-context=+358", DEFAULT, E, "urn:service:sos", "112"),
    ("tel:0112", DEFAULT, E, "urn:service:sos", "112"),
    ("tel:+358112", DEFAULT, E, "urn:service:sos", "112"),
    ("tel:+358-112", DEFAULT, E, "urn:service:sos", "112"),
    ("urn:service:sos", DEFAULT, E, "urn:service:sos", None),
    ("URN:Service:SOS", DEFAULT, E, "urn:service:sos", None),
    ("<urn:service:sos>", DEFAULT, E, "urn:service:sos", None),
    ("urn:service:sos.ambulance", DEFAULT, E, "urn:service:sos.ambulance", None),
    ("urn:service:sos.fire", DEFAULT, E, "urn:service:sos.fire", None),
    ("urn:service:sos.police", DEFAULT, E, "urn:service:sos.police", None),
    ("urn:service:sos.marine", DEFAULT, E, "urn:service:sos.marine", None),
    ("urn:service:sos.mountain", DEFAULT, E, "urn:service:sos.mountain", None),
    ("urn:service:sos.poison", DEFAULT, E, "urn:service:sos.poison", None),
    ("urn:service:sos.gas", DEFAULT, E, "urn:service:sos.gas", None),
    ("urn:service:sos.animal-control", DEFAULT, E, "urn:service:sos.animal-control", None),
    ("urn:service:sos.physician", DEFAULT, E, "urn:service:sos.physician", None),
    ("urn:service:sos.ecall.automatic", DEFAULT, E, "urn:service:sos.ecall.automatic", None),
    ("urn:service:SOS.Future-Thing", DEFAULT, E, "urn:service:sos.future-thing", None),
    ("urn:service:test.sos", DEFAULT, T, "urn:service:test.sos", None),
    ("urn:service:TEST.SOS.fire", DEFAULT, T, "urn:service:test.sos.fire", None),
    ("911", WIDE, E, "urn:service:sos", "911"),
    ("sip:999@gw.example;user=phone", WIDE, E, "urn:service:sos", "999"),
    ("0911", WIDE, E, "urn:service:sos", "911"),
    ("10112", WIDE, T, "urn:service:test.sos", "10112"),
    ("sip:010112@gw.example", WIDE, T, "urn:service:test.sos", "10112"),
    ("tel:+35810112", WIDE, T, "urn:service:test.sos", "10112"),
]

NEGATIVE = [
    ("1120", DEFAULT),
    ("11", DEFAULT),
    ("12", DEFAULT),
    ("0911", DEFAULT),
    ("911", DEFAULT),
    ("999", DEFAULT),
    ("0501121234", DEFAULT),
    ("+358501121234", DEFAULT),
    ("00112", DEFAULT),
    ("1112", DEFAULT),
    ("sip:112x@gw.example", DEFAULT),
    ("sip:x112@gw.example", DEFAULT),
    ("sip:1120@gw.example;user=phone", DEFAULT),
    ("sip:gw.example", DEFAULT),
    ("sip:alice@gw.example", DEFAULT),
    ("sip:%FF112@gw.example", DEFAULT),
    ("tel:+44112", DEFAULT),
    ("tel:+358", DEFAULT),
    ("tel:112x", DEFAULT),
    ("urn:service:sosx", DEFAULT),
    ("urn:service:test", DEFAULT),
    ("urn:service:counseling", DEFAULT),
    ("urn:service:sos.", DEFAULT),
    ("urn:service:sos..fire", DEFAULT),
    ("urn:nena:service:sos", DEFAULT),
    ("urn:service:testsos", DEFAULT),
    ("http://112", DEFAULT),
    ("", DEFAULT),
    ("\uff11\uff11\uff12", DEFAULT),  # full-width digits are not DIGIT (RFC 5234)
    ("\u0661\u0661\u0662", DEFAULT),  # nor are Arabic-Indic digits
    ("sip:" + "1" * 2000 + "@gw", DEFAULT),
    ("10112", DEFAULT),
]


@pytest.mark.parametrize(
    ("dialled", "config", "kind", "urn", "number"), POSITIVE, ids=[p[0] for p in POSITIVE]
)
def test_recognised(
    dialled: str, config: EmergencyConfig, kind: EmergencyKind, urn: str, number: str | None
) -> None:
    match = recognise_emergency(dialled, config)
    assert match is not None
    assert match.kind is kind
    assert match.service_urn == urn
    assert match.number == number


@pytest.mark.parametrize(("dialled", "config"), NEGATIVE, ids=[n[0][:30] for n in NEGATIVE])
def test_not_recognised(dialled: str, config: EmergencyConfig) -> None:
    assert recognise_emergency(dialled, config) is None


def test_outside_line_prefixes_are_configurable() -> None:
    no_prefix = EmergencyConfig(outside_line_prefixes=())
    assert recognise_emergency("0112", no_prefix) is None
    assert recognise_emergency("112", no_prefix) is not None
    eight = EmergencyConfig(outside_line_prefixes=("8",))
    assert recognise_emergency("8112", eight) is not None
    assert recognise_emergency("9112", eight) is None


def test_country_codes_are_configurable() -> None:
    assert recognise_emergency("tel:+46112", EmergencyConfig(country_codes=("46",))) is not None
    assert recognise_emergency("tel:+358112", EmergencyConfig(country_codes=())) is None


def test_config_rejects_non_digits_and_overlap() -> None:
    with pytest.raises(ValueError, match="numbers"):
        EmergencyConfig(numbers=("11a",))
    with pytest.raises(ValueError, match="test_numbers"):
        EmergencyConfig(numbers=("112",), test_numbers=("112",))
    with pytest.raises(ValueError, match="numbers"):
        EmergencyConfig(numbers=())


@given(st.text(max_size=40))
def test_any_text_gives_a_match_or_none(text: str) -> None:
    match = recognise_emergency(text, WIDE)
    if match is not None:
        assert match.service_urn.startswith(("urn:service:sos", "urn:service:test.sos"))


@given(st.from_regex(r"[0-9]{1,12}", fullmatch=True))
def test_digit_strings_match_only_numbers_with_prefixes(digits: str) -> None:
    match = recognise_emergency(digits, DEFAULT)
    expected = digits in ("112", "0112", "9112")
    assert (match is not None) == expected
