"""Caller-ID integrity: which number a call may show (pure; called by routing/policy.py).

Traficom regulation 28 (28 L/2025, in force 4 May 2026) and the delivery terms
(section 7: the operator owns each customer's identification data):

- **Calls from devices** (section 2 of the regulation: the originating operator answers
  for the A-number being correct and one the customer has the right to use). The
  B leg's P-Asserted-Identity (RFC 3325 9.1) is always a number the customer holds: the
  subscriber's own, or a P-Preferred-Identity (RFC 3325 9.2) or From number inside the
  customer's ranges (a switchboard presenting the main number). Anything else is
  replaced by the subscriber's number (``X-Voipgw-Caller-Id: replaced``) or the call is
  refused, per ``[routing.caller_id] outbound``. The From display name is never read as
  a number; one holding digits is replaced by the provisioned name, so a device cannot
  show "+358 9 123 456" in front of its own URI.
- **Emergency calls** always carry the subscriber's callback number (RFC 6881 SP-25),
  whatever the device presented and whatever the policy: never refused for it.
- **Calls from trunks**: a domestic peer's number passes (the originating operator
  vouches for it). From an international peer, a Finnish number (+358, 00358 or
  0-prefixed national) is blocked or delivered with the number removed, per
  ``international_finnish`` (the regulation's two options), unless it lies in a
  roaming-capable range (the regulation's exception for roaming subscribers).

Every outcome names a :class:`routing.decision.CallerId` decision and a
:class:`routing.decision.CallerIdReason`, carried in the call's facts to its CDR.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from routing.config import CallerIdConfig, InternationalFinnish, OutboundCallerId
from routing.decision import CallerId, CallerIdReason, CallFacts, Identity
from routing.directory import Directory
from routing.model import Presentation, PresentedIdentity, Subscriber
from routing.numbers import is_finnish, to_e164

#: Header telling the next hop what the policy did when it changed the identity.
CALLER_ID_HEADER: Final = "X-Voipgw-Caller-Id"
#: Longest presented text kept in the facts when it is not a number (a SIP user).
MAX_PRESENTED: Final = 64
#: From of a call whose number was removed (RFC 3323 section 4.1.1.3).
ANONYMOUS_FROM: Final = '"Anonymous" <sip:anonymous@anonymous.invalid>'
#: Headers that carry a caller's identity; dropped when the gateway states its own.
IDENTITY_HEADERS: Final = ("P-Asserted-Identity", "P-Preferred-Identity", "Privacy")


@dataclass(frozen=True, slots=True, kw_only=True)
class CallerIdOutcome:
    """What the caller-ID policy made of one call.

    Attributes:
        decision: kept, replaced, removed or rejected.
        reason: why (a bounded token).
        presented: the number presented (E.164 where it reads as one), or None.
        asserted: the number the B leg asserts (E.164), or None.
        identity: the B leg's identity headers and From, or None to leave them.
        reject_status: the status of a rejected call.
    """

    decision: CallerId
    reason: CallerIdReason
    presented: str | None
    asserted: str | None
    identity: Identity | None = None
    reject_status: int | None = None

    def apply(self, facts: CallFacts) -> CallFacts:
        """The call's facts with this outcome recorded."""
        return replace(
            facts,
            presented_number=self.presented,
            asserted_number=self.asserted,
            caller_id=self.decision,
            caller_id_reason=self.reason,
        )

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """``X-Voipgw-Caller-Id`` when the identity was changed ("say so")."""
        if self.decision in (CallerId.REPLACED, CallerId.REMOVED):
            return ((CALLER_ID_HEADER, f"{self.decision}; reason={self.reason}"),)
        return ()


def outbound(
    presented: PresentedIdentity,
    subscriber: Subscriber,
    directory: Directory,
    config: CallerIdConfig,
) -> CallerIdOutcome:
    """The identity of an ordinary (or test) call from a subscriber's device.

    Args:
        presented: what the call presented.
        subscriber: the authenticated caller.
        directory: the routing data (the customers' ranges).
        config: the policy.

    Returns:
        Kept (own number, customer range), replaced, or rejected.
    """
    claim = presented.preferred or presented.from_user
    number = to_e164(claim)
    shown = _shown(claim, number)
    if _is_own(claim, number, subscriber):
        return CallerIdOutcome(
            decision=CallerId.KEPT,
            reason=CallerIdReason.OWN_NUMBER,
            presented=shown,
            asserted=subscriber.e164,
            identity=_identity(presented, subscriber, subscriber.e164),
        )
    held = directory.numbers.range_of(number) if number is not None else None
    if held is not None and held.customer_id == subscriber.customer_id:
        assert number is not None
        return CallerIdOutcome(
            decision=CallerId.KEPT,
            reason=CallerIdReason.CUSTOMER_RANGE,
            presented=shown,
            asserted=number,
            identity=_identity(presented, subscriber, number),
        )
    if config.outbound is OutboundCallerId.REJECT:
        return CallerIdOutcome(
            decision=CallerId.REJECTED,
            reason=CallerIdReason.NOT_HELD,
            presented=shown,
            asserted=None,
            reject_status=config.outbound_reject_status,
        )
    return CallerIdOutcome(
        decision=CallerId.REPLACED,
        reason=CallerIdReason.NOT_HELD,
        presented=shown,
        asserted=subscriber.e164,
        identity=_identity(presented, subscriber, subscriber.e164),
    )


def emergency(presented: PresentedIdentity, subscriber: Subscriber | None) -> CallerIdOutcome:
    """The identity record of an emergency call: the callback number, always.

    Args:
        presented: what the call presented.
        subscriber: the caller, or None for an unknown caller.

    Returns:
        Kept (it presented its own number), replaced by the callback number, or
        removed (an unknown caller: nothing is asserted).
    """
    claim = presented.preferred or presented.from_user
    number = to_e164(claim)
    shown = _shown(claim, number)
    if subscriber is None:
        return CallerIdOutcome(
            decision=CallerId.REMOVED,
            reason=CallerIdReason.UNKNOWN_CALLER,
            presented=shown,
            asserted=None,
        )
    callback = subscriber.e164
    # RFC 6881 SP-25 / RFC 3325: the centre gets the callback identity, even when the
    # caller restricted presentation.
    pai = (("P-Asserted-Identity", f"<tel:{callback}>"),)
    if _is_own(claim, number, subscriber):
        from_value = (
            None
            if _from_is_clean(presented, subscriber, callback)
            else (_from_of(presented, subscriber, callback))
        )
        return CallerIdOutcome(
            decision=CallerId.KEPT,
            reason=CallerIdReason.OWN_NUMBER,
            presented=shown,
            asserted=callback,
            identity=Identity(headers=pai, from_value=from_value),
        )
    return CallerIdOutcome(
        decision=CallerId.REPLACED,
        reason=CallerIdReason.EMERGENCY_CALLBACK,
        presented=shown,
        asserted=callback,
        # The From too: a centre's display may show it before the asserted identity.
        identity=Identity(headers=pai, from_value=_from_of(presented, subscriber, callback)),
    )


def inbound(
    presented: PresentedIdentity,
    directory: Directory,
    config: CallerIdConfig,
    *,
    international: bool,
) -> CallerIdOutcome:
    """The identity of a call from a trusted peer (the PBX, a trunk) to a device.

    Args:
        presented: what the call presented (P-Asserted-Identity, else From).
        directory: the routing data (roaming-capable ranges).
        config: the policy.
        international: the peer is marked international.

    Returns:
        Kept, removed (anonymous From, identity headers dropped) or rejected.
    """
    claim = presented.asserted or presented.from_user
    number = to_e164(claim)
    shown = _shown(claim, number)

    def kept(reason: CallerIdReason) -> CallerIdOutcome:
        return CallerIdOutcome(
            decision=CallerId.KEPT, reason=reason, presented=shown, asserted=number
        )

    if not international:
        return kept(CallerIdReason.DOMESTIC_PEER)
    if number is None:
        return kept(CallerIdReason.NO_NUMBER)
    if not is_finnish(number):
        return kept(CallerIdReason.INTERNATIONAL_FOREIGN)
    held = directory.numbers.range_of(number)
    if held is not None and held.roaming:
        return kept(CallerIdReason.ROAMING_RANGE)
    if config.international_finnish is InternationalFinnish.BLOCK:
        return CallerIdOutcome(
            decision=CallerId.REJECTED,
            reason=CallerIdReason.INTERNATIONAL_FINNISH,
            presented=shown,
            asserted=None,
            reject_status=config.international_block_status,
        )
    return CallerIdOutcome(
        decision=CallerId.REMOVED,
        reason=CallerIdReason.INTERNATIONAL_FINNISH,
        presented=shown,
        asserted=None,
        identity=Identity(from_value=ANONYMOUS_FROM),
    )


def _is_own(claim: str | None, number: str | None, subscriber: Subscriber) -> bool:
    """The device presented no number of its own choosing: its subscriber's number,
    its SIP user, nothing, or RFC 3323's anonymous user."""
    return (
        claim is None
        or number == subscriber.e164
        or claim == subscriber.sip_user
        or claim.lower() == "anonymous"
    )


def _shown(claim: str | None, number: str | None) -> str | None:
    """What the facts record as presented: the number, or the claim as written."""
    if number is not None:
        return number
    return claim[:MAX_PRESENTED] if claim else None


def _identity(presented: PresentedIdentity, subscriber: Subscriber, asserted: str) -> Identity:
    """The B leg's P-Asserted-Identity and From for an asserted number.

    The From keeps the device's own unless it differs from what is asserted: a From
    number other than the asserted one, or a display name holding digits (a number a
    person would read), is rewritten to the asserted number and the provisioned name.
    """
    name = (subscriber.display_name or "").replace('"', "").replace("\\", "")
    uri = f"tel:{asserted}"
    pai = f'"{name}" <{uri}>' if name else f"<{uri}>"
    if subscriber.presentation is Presentation.RESTRICTED:
        # RFC 3323 section 4.2 / RFC 3325 section 9.3: asserted for the trust domain,
        # withheld from the called party.
        return Identity(
            headers=(("P-Asserted-Identity", pai), ("Privacy", "id")),
            from_value=ANONYMOUS_FROM,
        )
    if _from_is_clean(presented, subscriber, asserted):
        return Identity(headers=(("P-Asserted-Identity", pai),))
    return Identity(
        headers=(("P-Asserted-Identity", pai),),
        from_value=_from_of(presented, subscriber, asserted),
    )


def _from_is_clean(presented: PresentedIdentity, subscriber: Subscriber, asserted: str) -> bool:
    """Whether the device's From may pass as it came: its number is the asserted one
    (or it names the subscriber's own user) and its display name holds no digit."""
    from_user = presented.from_user
    from_number = to_e164(from_user)
    number_ok = from_number == asserted or (
        asserted == subscriber.e164 and from_number is None and _is_own(from_user, None, subscriber)
    )
    return number_ok and not any(ch.isdigit() for ch in presented.display_name)


def _from_of(presented: PresentedIdentity, subscriber: Subscriber, asserted: str) -> str:
    """A From naming the asserted number, with the provisioned display name (never the
    device's) and the device's From host (a SIP URI stays a SIP URI)."""
    name = (subscriber.display_name or "").replace('"', "").replace("\\", "")
    uri = f"tel:{asserted}"
    if presented.from_host:
        uri = f"sip:{asserted}@{presented.from_host};user=phone"
    return f'"{name}" <{uri}>' if name else f"<{uri}>"
