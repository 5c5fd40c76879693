"""How itemization shows a party: a number where the stored text holds one."""

from __future__ import annotations

import pytest

from cdr.numbers import number_of


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
