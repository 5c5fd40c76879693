"""Parties of a call as numbers: what the CDR stores as the caller and itemization shows.

A SIP URI's user part or a tel URI's number (RFC 3966) is the party's number when it is
one; anything else (a user name, an emergency URN) has no number and stays as it is.
"""

from __future__ import annotations

import re
from typing import Final

from gateway.sip.uri import telephone_user

__all__ = ["number_of"]

#   telephone-subscriber digits: "+"? then digits and visual separators (RFC 3966 3)
_NUMBER_RE: Final = re.compile(r"\+?[0-9][0-9().\-]*")
_VISUAL_SEPARATORS: Final = str.maketrans("", "", "().-")


def number_of(text: str) -> str:
    """A party as a number where the text holds one (caller/callee of a CDR).

    ``+358401000001`` stays; ``sip:+358401000001@pbx;user=phone`` and
    ``tel:+358-40-1000001`` become ``+358401000001``; ``sip:0401234567@host`` becomes
    ``0401234567`` (national, as dialled: the gateway knows no country to widen it
    with). A URI whose user part is not a number (``sip:alice@...``, an emergency
    ``urn:service:sos``) is shown as stored, since there is no number to show.

    Args:
        text: a stored caller or callee.

    Returns:
        The number without visual separators, or ``text``.
    """
    if _NUMBER_RE.fullmatch(text):
        return text.translate(_VISUAL_SEPARATORS)
    candidate = telephone_user(text)
    if candidate is None or not _NUMBER_RE.fullmatch(candidate):
        return text
    return candidate.translate(_VISUAL_SEPARATORS)
