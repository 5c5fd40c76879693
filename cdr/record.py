"""One call detail record (CDR) per call, and its two encodings.

A :class:`CallDetailRecord` is built by the B2BUA when a call ends and is written twice:
first as a self-describing JSON object into the local spool (``cdr/spool.py``), then as a
row into the partitioned ``cdr`` table via binary COPY (``cdr/writer.py``).

:data:`COLUMNS` is the single source of column order: :meth:`CallDetailRecord.as_row`,
the COPY into the staging table and the ``INSERT ... SELECT`` all use it, so adding a
field means adding it to the dataclass, to a migration and nowhere else.

The JSON form carries ``"v": 1`` so that a spool written by an older gateway can still
be read after an upgrade: readers accept every version they know.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import ipaddress
import json
import uuid
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Version of the JSON encoding written into the spool.
JSON_VERSION = 1


class Disposition(enum.StrEnum):
    """How the call ended, as billed and reported (PostgreSQL enum ``cdr_disposition``)."""

    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    CANCELLED = "cancelled"
    FAILED = "failed"
    REJECTED = "rejected"


class CallClass(enum.StrEnum):
    """Where the caller was when calling (PostgreSQL enum ``cdr_call_class``).

    ``unknown`` exists because the classification can fail (no location), and the
    record must still be written.
    """

    OFFICE = "office"
    NOMADIC = "nomadic"
    UNKNOWN = "unknown"


class RecordingNotice(enum.StrEnum):
    """Whether the recording announcement was played (enum ``cdr_recording_notice``)."""

    PLAYED = "played"
    NOT_PLAYED = "not-played"
    NONE = "none"


class HangupSide(enum.StrEnum):
    """Which side ended the call (enum ``cdr_hangup_side``)."""

    CALLER = "caller"
    CALLEE = "callee"
    GATEWAY = "gateway"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CallDetailRecord:
    """Everything the operator keeps about one call (15 months, then only aggregates).

    All timestamps are timezone-aware; durations are in seconds.
    """

    call_uuid: uuid.UUID
    """Gateway-assigned id of the call; with ``started_at`` it is the dedup key."""
    started_at: dt.datetime
    """When the INVITE arrived; the partition key, never changes for a call."""
    call_id: str
    """SIP Call-ID of the A leg."""
    customer: str
    """Customer (business) the call is billed to."""
    caller: str
    """Calling number (E.164 where known)."""
    callee_dialled: str
    """Number as dialled by the caller."""
    callee_routed: str | None
    """Number or URI the call was routed to (``None`` if routing failed)."""
    p_asserted_identity: str | None
    """P-Asserted-Identity presented on the A leg."""
    call_class: CallClass
    """Office or nomadic caller."""
    device_kind: str | None
    """Kind of calling device (desk phone, softphone, ...)."""
    site: str | None
    """Customer site the caller was attributed to."""
    source_address: IPAddress
    """Source IP address of the INVITE."""
    user_agent: str | None
    """User-Agent header of the caller."""
    emergency: bool
    """True for emergency calls."""
    emergency_centre: str | None
    """Emergency centre (PSAP) the call was routed to."""
    emergency_policy: str | None
    """Name of the emergency routing policy applied."""
    recording_notice: RecordingNotice
    """Whether the recording notice was played."""
    recording_notice_language: str | None
    """Language of the recording notice (``fi``, ``sv``, ``en``)."""
    recording_notice_played_at: dt.datetime | None
    """When the recording notice started playing."""
    ringing_at: dt.datetime | None
    """First 18x from the B leg."""
    answered_at: dt.datetime | None
    """2xx from the B leg."""
    ended_at: dt.datetime
    """When the call ended (BYE, CANCEL or final failure)."""
    post_dial_delay_seconds: float | None
    """Seconds from INVITE to first ringing (or to the final answer), in seconds."""
    duration_seconds: float
    """Seconds from answer to end (0 when not answered)."""
    billable_seconds: int
    """Seconds billed after the tariff's rounding."""
    final_status: int
    """Final SIP status sent to the caller (200 for answered calls)."""
    final_reason: str | None
    """Reason phrase or Reason header text."""
    disposition: Disposition
    """Outcome class of the call."""
    hangup_side: HangupSide
    """Which side ended the call."""
    gateway_instance: str
    """Name of the gateway instance that handled the call."""

    def __post_init__(self) -> None:
        for name in _TIMESTAMPS:
            value = getattr(self, name)
            if value is not None and value.utcoffset() is None:
                # A naive timestamp would be read in the server's TimeZone and could
                # land in the wrong monthly partition.
                raise ValueError(f"CallDetailRecord.{name} must be timezone-aware")
        if self.ended_at < self.started_at:
            raise ValueError("CallDetailRecord.ended_at is before started_at")
        if self.duration_seconds < 0 or self.billable_seconds < 0:
            raise ValueError("CallDetailRecord durations must not be negative")
        if not 100 <= self.final_status <= 699:
            raise ValueError(
                f"CallDetailRecord.final_status {self.final_status} is not a SIP status"
            )

    def as_row(self) -> tuple[Any, ...]:
        """Returns the record as a tuple in :data:`COLUMNS` order, ready for COPY.

        Spelled out field by field because it runs for every call (a generic getattr
        loop costs three times as much); ``test_as_row_follows_columns`` pins the order.

        Returns:
            The column values; enums become their text values (PostgreSQL enums travel
            as text in the binary COPY format).
        """
        return (
            self.call_uuid,
            self.started_at,
            self.call_id,
            self.customer,
            self.caller,
            self.callee_dialled,
            self.callee_routed,
            self.p_asserted_identity,
            self.call_class.value,
            self.device_kind,
            self.site,
            self.source_address,
            self.user_agent,
            self.emergency,
            self.emergency_centre,
            self.emergency_policy,
            self.recording_notice.value,
            self.recording_notice_language,
            self.recording_notice_played_at,
            self.ringing_at,
            self.answered_at,
            self.ended_at,
            self.post_dial_delay_seconds,
            self.duration_seconds,
            self.billable_seconds,
            self.final_status,
            self.final_reason,
            self.disposition.value,
            self.hangup_side.value,
            self.gateway_instance,
        )

    def to_json(self) -> bytes:
        """Encodes the record as compact self-describing JSON (for the spool).

        Returns:
            UTF-8 JSON object with ``"v"`` and one key per column.
        """
        obj = dict(zip(COLUMNS, self.as_row(), strict=True))
        obj["v"] = JSON_VERSION
        obj["call_uuid"] = str(self.call_uuid)
        obj["source_address"] = str(self.source_address)
        for name in _TIMESTAMPS:
            value = obj[name]
            if value is not None:
                obj[name] = value.isoformat()
        return _ENCODER.encode(obj).encode()

    @classmethod
    def from_json(cls, data: bytes) -> CallDetailRecord:
        """Decodes :meth:`to_json` output.

        Args:
            data: one JSON object as written by :meth:`to_json`.

        Returns:
            The record.

        Raises:
            ValueError: the JSON is malformed, of an unknown version, or a field is
                missing or invalid.
        """
        try:
            obj = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"CDR JSON is malformed: {exc}") from None
        if not isinstance(obj, dict) or obj.get("v") != JSON_VERSION:
            raise ValueError("CDR JSON has no known version")
        try:
            kwargs = {name: _DECODERS.get(name, _identity)(obj[name]) for name in COLUMNS}
        except KeyError as exc:
            raise ValueError(f"CDR JSON is missing field {exc}") from None
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"CDR JSON has an invalid field: {exc}") from None
        return cls(**kwargs)


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _identity(value: Any) -> Any:
    return value


def _opt_datetime(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


#: Column names in table order; the dataclass field order is the table's column order.
COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(CallDetailRecord))

_TIMESTAMPS = (
    "started_at",
    "recording_notice_played_at",
    "ringing_at",
    "answered_at",
    "ended_at",
)

_DECODERS: dict[str, Any] = {
    "call_uuid": uuid.UUID,
    "source_address": ipaddress.ip_address,
    "call_class": CallClass,
    "recording_notice": RecordingNotice,
    "disposition": Disposition,
    "hangup_side": HangupSide,
    **{name: _opt_datetime for name in _TIMESTAMPS},
}
