"""A finished call as its CDR: the one mapping from a call's typed facts to a record.

The B2BUA's ``CallEnded`` (``gateway.b2bua.events``) satisfies :class:`EndedCall`, and
so does the snapshot its ``CallAnswered`` carries (:func:`in_progress_record_of`);
cdr/ reads it through this protocol so that it never depends on the SIP gateway's
packages (the CDR tools run without them). The routing decision's
:class:`routing.decision.CallFacts` arrive as routing made them: no field is parsed
back from a string here.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import uuid
from typing import Protocol

from cdr.numbers import number_of
from cdr.record import CallDetailRecord, Disposition, EndedBy, HangupSide, billable_seconds
from routing.decision import CallFacts, RecordingNotice

__all__ = ["EndedCall", "InProgressRecord", "call_uuid_of", "in_progress_record_of", "record_of"]

#: Source hosts whose parsed address is kept: a gateway hears calls from a few PBXs and
#: trunks, and each call's in-progress and final records would parse its source again
#: (``ip_address`` runs interpreted, octet by octet: ~1.5 us a time). The addresses are
#: immutable values, so a cached one is as good as a new one.
_parse_address = functools.lru_cache(maxsize=1024)(ipaddress.ip_address)

#: Parties whose number is kept, and how long such a party's text may be: the same
#: phones, PBX numbers and dialled numbers come back all day, and :func:`number_of`
#: costs ~2 us a time (a regular expression and ``unquote``), twice per call. Longer
#: texts (a caller controls its From) are not cached: 1024 of them stay under 0.5 MiB.
_cached_number_of = functools.lru_cache(maxsize=1024)(number_of)
_CACHED_PARTY_LENGTH = 256


def _number_of(text: str) -> str:
    if len(text) > _CACHED_PARTY_LENGTH:
        return number_of(text)
    return _cached_number_of(text)


#: The B2BUA's outcome texts to their enums: a dict lookup, where calling the enum
#: class looks the value up through ``EnumType.__call__`` (~0.6 us, three per call).
_DISPOSITIONS = {member.value: member for member in Disposition}
_HANGUP_SIDES = {member.value: member for member in HangupSide}
_ENDED_BY = {member.value: member for member in EndedBy}


class Address(Protocol):
    """A transport address (``gateway.sip.events.Endpoint``)."""

    @property
    def host(self) -> str: ...


class EndedCall(Protocol):
    """What the CDR needs of a finished call, times on the loop clock."""

    @property
    def call_uuid(self) -> str: ...
    @property
    def call_id(self) -> str: ...
    @property
    def caller(self) -> str: ...
    @property
    def callee_dialled(self) -> str: ...
    @property
    def callee_routed(self) -> str: ...
    @property
    def p_asserted_identity(self) -> str | None: ...
    @property
    def source(self) -> Address: ...
    @property
    def user_agent(self) -> str | None: ...
    @property
    def setup_at(self) -> float: ...
    @property
    def ringing_at(self) -> float | None: ...
    @property
    def answered_at(self) -> float | None: ...
    @property
    def ended_at(self) -> float: ...
    @property
    def final_status(self) -> int: ...
    @property
    def final_reason(self) -> str: ...
    @property
    def disposition(self) -> str: ...
    @property
    def hangup_side(self) -> str: ...
    @property
    def ended_by(self) -> str: ...
    @property
    def emergency(self) -> bool: ...
    @property
    def facts(self) -> CallFacts: ...
    @property
    def attempt(self) -> int | None: ...
    @property
    def recording_notice(self) -> RecordingNotice: ...
    @property
    def recording_started_at(self) -> float | None: ...


def record_of(event: EndedCall, *, wall_offset: float, instance: str) -> CallDetailRecord:
    """The CDR of a finished call.

    Args:
        event: the B2BUA's summary (times on the loop clock).
        wall_offset: ``time.time() - loop.time()``, to turn loop times into wall time.
        instance: this gateway instance's name.
    """

    def wall(t: float | None) -> dt.datetime | None:
        if t is None:
            return None
        return dt.datetime.fromtimestamp(t + wall_offset, dt.UTC)

    facts = event.facts
    started = wall(event.setup_at)
    ended = wall(event.ended_at)
    assert started is not None
    assert ended is not None
    duration = max(0.0, event.ended_at - event.setup_at)
    billable = 0
    if event.answered_at is not None:
        # Billable time starts when the callee answers (not at the recording notice).
        billable = billable_seconds(event.ended_at - event.answered_at)
    post_dial = None if event.ringing_at is None else event.ringing_at - event.setup_at
    notice = event.recording_notice
    return CallDetailRecord(
        call_uuid=call_uuid_of(event.call_uuid),
        started_at=started,
        call_id=event.call_id,
        customer=facts.customer_id,
        # Unless the caller is our subscriber, the From URI's number (the PBX's
        # outside party): subject access looks numbers up, not URIs.
        caller=facts.subscriber or _number_of(event.caller),
        # An inbound call names the subscriber it reached by number, whatever URI the
        # PBX used (sip:alice@...): itemization and subject access look numbers up.
        # Parties as numbers where they are ones (cdr/numbers.py): a subject-access
        # request names a number, not the URI a device or the PBX happened to write.
        callee_dialled=facts.callee or _number_of(event.callee_dialled),
        callee_routed=event.callee_routed or None,
        p_asserted_identity=_asserted_number(event.p_asserted_identity),
        call_class=facts.call_class,
        device_kind=facts.device_kind.value if facts.device_kind is not None else None,
        site=facts.site_id,
        # The device's address: through a trusted edge proxy, where the proxy got the
        # call from (the transport source is the proxy's, the same for every call).
        source_address=facts.device_source or _parse_address(event.source.host),
        user_agent=event.user_agent,
        emergency=event.emergency,
        emergency_centre=facts.centre_of(event.attempt) if event.emergency else None,
        emergency_policy=facts.emergency_policy if event.emergency else None,
        recording_notice=notice,
        recording_notice_language=(
            facts.recording_notice_language if notice is not RecordingNotice.NONE else None
        ),
        # The privacy promise's "told before the call": when the notice started (a
        # nomadic warning is a prompt too, but not this one).
        recording_notice_played_at=(
            wall(event.recording_started_at) if notice is not RecordingNotice.NONE else None
        ),
        ringing_at=wall(event.ringing_at),
        answered_at=wall(event.answered_at),
        ended_at=ended,
        post_dial_delay_seconds=post_dial,
        duration_seconds=duration,
        billable_seconds=billable,
        final_status=event.final_status if 100 <= event.final_status <= 699 else 500,
        final_reason=event.final_reason or None,
        # An unknown text raises ValueError from the enum, as it always did.
        disposition=_DISPOSITIONS.get(event.disposition) or Disposition(event.disposition),
        hangup_side=_HANGUP_SIDES.get(event.hangup_side) or HangupSide(event.hangup_side),
        gateway_instance=instance,
        ended_by=_ENDED_BY.get(event.ended_by) or EndedBy(event.ended_by),
        # Emergency calls only: what the centre was told of where the caller is and
        # whether it can call back (issue 14; a visitor on an office LAN has a site
        # location and no callback identity).
        location_source=facts.location_source if facts.is_emergency else None,
        callback_identity=(facts.callback is not None) if facts.is_emergency else None,
        presented_number=facts.presented_number,
        asserted_number=facts.asserted_number,
        caller_id=facts.caller_id,
        caller_id_reason=facts.caller_id_reason.value if facts.caller_id_reason else None,
        flow_relay=facts.flow_relay,
    )


def in_progress_record_of(
    answered: EndedCall, *, wall_offset: float, instance: str
) -> CallDetailRecord:
    """The in-progress record of a call just answered.

    Args:
        answered: the B2BUA's snapshot at the answer (``ended_at`` is the answer time).
        wall_offset: ``time.time() - loop.time()``.
        instance: this gateway instance's name.

    Returns:
        The record with ``ended_by`` None: in progress, ending (so far) at the answer.
    """
    record = record_of(answered, wall_offset=wall_offset, instance=instance)
    return record.extended_to(record.ended_at, None)


class InProgressRecord:
    """How to build the in-progress record of a call just answered
    (:func:`in_progress_record_of`), as the CDR writer keeps it while the call is up.

    Two slots, the second shared by every call: a closure over the summary was a
    function, a cell and a tuple of its own (~0.25 KiB per idle call, issue 17).

    Attributes:
        answered: the B2BUA's snapshot at the answer.
        clock: ``(wall_offset, instance)`` of :func:`in_progress_record_of`.
    """

    __slots__ = ("answered", "clock")

    def __init__(self, answered: EndedCall, clock: tuple[float, str]) -> None:
        self.answered = answered
        self.clock = clock

    def __call__(self) -> CallDetailRecord:
        wall_offset, instance = self.clock
        return in_progress_record_of(self.answered, wall_offset=wall_offset, instance=instance)


def call_uuid_of(text: str) -> uuid.UUID:
    """The B2BUA's call id as a UUID (uuid4 hex in the running gateway)."""
    try:
        return uuid.UUID(hex=text)
    except ValueError:
        return uuid.uuid5(uuid.NAMESPACE_OID, text)


def _asserted_number(value: str | None) -> str | None:
    """A P-Asserted-Identity (name-addr or bare URI) as its number, or as written when
    it names no number. The gateway wrote it (``<tel:+358...>``, RFC 3325 9.1), so the
    URI is what the angle brackets hold, or the whole value."""
    if not value:
        return value
    opening, closing = value.find("<"), value.rfind(">")
    uri = value[opening + 1 : closing] if 0 <= opening < closing else value.strip()
    number = number_of(uri)
    return number if number != uri else value
