"""Parties of a call as numbers: what the CDR stores as the caller and itemization shows.

A SIP URI's user part or a tel URI's number (RFC 3966) is the party's number when it is
one; anything else (a user name, an emergency URN) has no number and stays as it is.

The user part is found here, not with the SIP core's URI parser: cdr runs in the CLI
and export tools (``voipgw cdr ...``), which must not depend on the SIP gateway's
packages. It reads what the gateway already accepted and stored, so it can be lenient
where the parser is strict (a bad host or port does not hide the number in front of it).
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote

__all__ = ["number_of", "uri_user"]

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
    candidate = uri_user(text)
    if candidate is None or not _NUMBER_RE.fullmatch(candidate):
        return text
    return candidate.translate(_VISUAL_SEPARATORS)


def uri_user(text: str) -> str | None:
    """The user a stored ``sip:``/``sips:`` or ``tel:`` URI names, leniently.

    A SIP URI's user part, unescaped (``%2B`` is ``+``), without its password or the
    ``;params`` a telephone-subscriber user part may carry (RFC 3261 19.1.1, 19.1.6);
    a tel URI's number without its parameters (RFC 3966 3). The callers pass bare
    URIs (a From URI, a Request-URI, the inside of a P-Asserted-Identity's ``<>``),
    so a display name or angle brackets are not looked for.

    Args:
        text: the URI as stored.

    Returns:
        The user or number; None for another scheme or a SIP URI without a user part.
    """
    scheme, colon, rest = text.partition(":")
    scheme = scheme.lower()
    if not colon:
        return None
    if scheme == "tel":
        return rest.split(";", 1)[0] or None
    if scheme not in ("sip", "sips"):
        return None
    # userinfo = (user / telephone-subscriber) [":" password] "@": an "@" of the user
    # part is escaped, so the first one ends it; ";" and ":" are split off before
    # unescaping, so an escaped one stays part of the user.
    userinfo, at, _ = rest.partition("@")
    if not at:
        return None
    user = userinfo.split(";", 1)[0].split(":", 1)[0]
    return unquote(user) or None
