"""How itemization shows a party: a number where the stored text holds one."""

from __future__ import annotations

import pytest

from cdr.numbers import number_of, uri_user


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("+358401000001", "+358401000001"),
        ("sip:+358401000001@pbx.example;user=phone", "+358401000001"),
        ("sips:+358401000001@pbx.example", "+358401000001"),
        # RFC 3261 19.1.6: telephone-subscriber parameters in the user part.
        ("sip:+358401000001;phone-context=+358@pbx.example;user=phone", "+358401000001"),
        # RFC 3966 visual separators are not part of the number.
        ("tel:+358-40-100.0001", "+358401000001"),
        ("sip:%2B358401000001@pbx.example", "+358401000001"),
        # National numbers stay as dialled: no country is known to widen them.
        ("sip:0401234567@127.0.0.1:5060", "0401234567"),
        ("sip:112@voipgw", "112"),
        # Nothing numeric to show: as stored.
        ("sip:alice@voipgw.demo", "sip:alice@voipgw.demo"),
        ("urn:service:sos", "urn:service:sos"),
        ("sip:voipgw.demo", "sip:voipgw.demo"),
        ("not a uri <>", "not a uri <>"),
        ("", ""),
    ],
)
def test_number_of(stored: str, shown: str) -> None:
    assert number_of(stored) == shown


@pytest.mark.parametrize(
    ("uri", "user"),
    [
        ("sip:+358401000001@pbx.example", "+358401000001"),
        ("sips:+358401000001@pbx.example", "+358401000001"),
        ("SIP:alice@voipgw.demo", "alice"),
        # An escaped "+" (RFC 3261 25.1 escaped) is the number's own.
        ("sip:%2B358401000001@pbx.example;user=phone", "+358401000001"),
        ("sip:%2b358401000001@pbx.example", "+358401000001"),
        ("sip:%61lice@voipgw.demo", "alice"),
        # user=phone and telephone-subscriber parameters (RFC 3261 19.1.6).
        ("sip:+358401000001@pbx.example;user=phone", "+358401000001"),
        ("sip:+358401000001;phone-context=+358@pbx.example;user=phone", "+358401000001"),
        ("sip:0401234567;isub=12@pbx.example", "0401234567"),
        ("sip:alice:secret@voipgw.demo", "alice"),
        ("sip:bob@[::1]:5070;transport=tcp?subject=x", "bob"),
        # Lenient: what the SIP parser would refuse still names its user.
        ("sip:0401234567@127.0.0.1:99999", "0401234567"),
        # An escaped ";" is part of the user, not a parameter.
        ("sip:a%3Bb@voipgw.demo", "a;b"),
        ("tel:+358-40-100.0001", "+358-40-100.0001"),
        ("tel:+358401000001;phone-context=+358", "+358401000001"),
        ("tel:0401234567;phone-context=example.com", "0401234567"),
        ("sip:voipgw.demo", None),
        ("sip:127.0.0.1:5060", None),
        ("sip:@voipgw.demo", None),
        ("tel:", None),
        ("urn:service:sos", None),
        ("mailto:alice@example.com", None),
        ("not a uri", None),
        ("", None),
    ],
)
def test_uri_user(uri: str, user: str | None) -> None:
    assert uri_user(uri) == user
