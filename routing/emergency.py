"""Recognising emergency calls in the dialled Request-URI.

What counts as an emergency call (decisions marked *):

- The configured emergency numbers (default only ``112``: the single European
  emergency number; ``911``/``999`` can be added), dialled as bare digits, as the user
  part of a ``sip:``/``sips:`` URI (with or without ``user=phone``) or as a ``tel:``
  URI. RFC 3966 visual separators (``-``, ``.``, ``(``, ``)``) are ignored, so are
  ``;`` parameters of the user part (``sip:112;phone-context=+358@gw``) and percent
  escapes are decoded (RFC 3261 section 19.1.2 makes ``%31%31%32`` equal ``112``).
- The same numbers behind one of the PBX's outside-line prefixes (default ``0`` and
  ``9``): users of old PBXs dial ``0112`` or ``9112`` by habit and must still reach
  help.
- * ``tel:+358112`` (a configured country code followed by an emergency number).
  ``+358 112`` is not an assigned Finnish number, but phones that normalise every
  dialled string to E.164 send exactly that; failing to recognise it would drop an
  emergency call, while recognising it can only misroute a call to an unassigned
  number. The only country codes accepted are the configured ones (default ``358``).
- ``urn:service:sos`` and every sub-service ``urn:service:sos.<anything>`` (RFC 5031
  and the IANA "'sos' Sub-Services" registry: ambulance, animal-control, ecall.*
  (RFC 8147), fire, gas, marine, mountain, physician, poison, police, and any future
  one), compared case-insensitively as RFC 5031 requires for service URNs.

Test calls, which must be answered by a test service and never reach a centre:

- ``urn:service:test.sos`` and ``urn:service:test.sos.*`` (RFC 6881 section 15; the
  "test" service label is registered by RFC 6881).
- The configured test numbers, in every form listed above.

Everything else is not an emergency: ``1120``, ``11``, ``0911`` (unless 911 is
configured), ``0501121234`` (112 inside a longer number), ``sip:112x@gw``.

Only the small URI surface needed here is parsed (scheme, user part, ``tel:`` number,
URN); the full SIP URI grammar lives in :mod:`gateway.sip.uri`.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from routing.config import EmergencyConfig
from routing.model import EmergencyKind, EmergencyMatch

#: Longer Request-URIs are not dial strings; bounding the input bounds the work.
MAX_DIALLED_LENGTH = 1024

SOS_URN = "urn:service:sos"
TEST_SOS_URN = "urn:service:test.sos"

# RFC 5031 ABNF:
#   service-URN  = "URN:service:" service
#   service      = top-level *("." sub-service)
#   top-level    = let-dig [ *25let-dig-hyp let-dig ]
#   sub-service  = let-dig [ *let-dig-hyp let-dig ]
_SERVICE_RE = re.compile(
    r"[a-z0-9](?:[a-z0-9-]{0,25}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*"
)
# RFC 3966 section 3: visual-separator = "-" / "." / "(" / ")"
_VISUAL_SEPARATORS = str.maketrans("", "", "-.()")
_DIGITS_RE = re.compile(r"[0-9]+")


class DialPlan:
    """The one place a dialled string is recognised as an emergency (or test) call.

    The admission guard asks before a request is parsed (an emergency call passes
    every limit), the routing adapter when it builds the call's context, the last
    resort route when the routing hook failed: each asks this object, so they cannot
    disagree, and a dial string is recognised once. The answers are kept per dial
    string (calls to 112 arrive with a handful of Request-URIs); the memory is bounded
    and a flood of distinct strings only costs recomputing them.

    Args:
        config: the emergency numbers, outside-line prefixes, country codes and
            test numbers.
    """

    #: Dial strings remembered; beyond it the memory starts afresh.
    MEMORY = 4096

    def __init__(self, config: EmergencyConfig) -> None:
        self.config = config
        self._known: dict[str, EmergencyMatch | None] = {}

    def match(self, dialled: str) -> EmergencyMatch | None:
        """What ``dialled`` is: an emergency or test call (a match), or None."""
        try:
            return self._known[dialled]
        except KeyError:
            pass
        found = recognise_emergency(dialled, self.config)
        if len(self._known) >= self.MEMORY:
            self._known.clear()
        self._known[dialled] = found
        return found


def recognise_emergency(dialled: str, config: EmergencyConfig) -> EmergencyMatch | None:
    """Tells whether a dialled Request-URI or dial string is an emergency or test call.

    Args:
        dialled: the Request-URI as received, or a bare dial string.
        config: the emergency numbers, outside-line prefixes, country codes and
            test numbers.

    Returns:
        An :class:`EmergencyMatch` (kind EMERGENCY or TEST), or None for any other call.
    """
    text = dialled.strip()
    if len(text) > MAX_DIALLED_LENGTH:
        return None
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    scheme, colon, rest = text.partition(":")
    scheme = scheme.lower()
    if colon and scheme == "urn":
        return _recognise_urn(rest)
    if colon and scheme in ("sip", "sips"):
        user, at, _hostport = rest.partition("@")
        if not at:
            return None
        # userinfo = ( user / telephone-subscriber ) [ ":" password ] "@"  (RFC 3261 25.1)
        user = user.partition(":")[0]
        return _recognise_number(_strip_params(user), config, "sip")
    if colon and scheme == "tel":
        # telephone-uri = "tel:" telephone-subscriber; parameters follow ";" (RFC 3966 3)
        return _recognise_number(_strip_params(rest), config, "tel")
    if colon:
        return None
    return _recognise_number(text, config, "digits")


def _strip_params(user: str) -> str:
    return unquote(user.partition(";")[0].partition("?")[0], errors="replace")


def _recognise_urn(rest: str) -> EmergencyMatch | None:
    nid, colon, service = rest.partition(":")
    if not colon or nid.lower() != "service":
        return None
    service = service.lower()
    if not _SERVICE_RE.fullmatch(service):
        return None
    if service == "sos" or service.startswith("sos."):
        return EmergencyMatch(
            kind=EmergencyKind.EMERGENCY, service_urn=f"urn:service:{service}", form="urn"
        )
    if service == "test.sos" or service.startswith("test.sos."):
        return EmergencyMatch(
            kind=EmergencyKind.TEST, service_urn=f"urn:service:{service}", form="urn"
        )
    return None


def _recognise_number(raw: str, config: EmergencyConfig, form: str) -> EmergencyMatch | None:
    number = raw.translate(_VISUAL_SEPARATORS)
    if number.startswith("+"):
        digits = number[1:]
        if not _DIGITS_RE.fullmatch(digits):
            return None
        for cc in config.country_codes:
            if digits.startswith(cc) and (found := _lookup(digits[len(cc) :], config, form)):
                return found
        return None
    if not _DIGITS_RE.fullmatch(number):
        return None
    if found := _lookup(number, config, form):
        return found
    for prefix in config.outside_line_prefixes:
        if number.startswith(prefix) and (found := _lookup(number[len(prefix) :], config, form)):
            return found
    return None


def _lookup(number: str, config: EmergencyConfig, form: str) -> EmergencyMatch | None:
    if number in config.numbers:
        return EmergencyMatch(
            kind=EmergencyKind.EMERGENCY, service_urn=SOS_URN, number=number, form=form
        )
    if number in config.test_numbers:
        return EmergencyMatch(
            kind=EmergencyKind.TEST, service_urn=TEST_SOS_URN, number=number, form=form
        )
    return None
