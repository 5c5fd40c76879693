"""One call detail record (CDR) per call, and its encodings.

A :class:`CallDetailRecord` is built by the B2BUA when a call ends. The writer
(``cdr/writer.py``) encodes a batch of them **once**, as a CSV batch
(:func:`encode_csv_batch`), appends those bytes to the local spool (``cdr/spool.py``)
and sends the very same bytes to PostgreSQL with ``COPY ... (FORMAT csv)``: one
encoding per record on the call path's CPU instead of two (a JSON spool record plus
asyncpg's binary COPY encoding cost 20 + 15 µs per record; a CSV line costs ~4).

The CSV batch format (self-describing, readable by any CSV reader):

* RFC 4180 CSV, UTF-8, ``\n`` line ends; the first line names the columns;
* text is always quoted; numbers are bare; NULL is a bare ``nan`` (a quoted ``"nan"``
  is the text nan); booleans are ``1``/``0``; NUL characters, which PostgreSQL text
  cannot hold, are written as U+FFFD;
* timestamps are integer microseconds since the Unix epoch, ``call_uuid`` is 32 hex digits.

Python's ``csv`` reader with ``QUOTE_NONNUMERIC`` reads exactly this (a bare ``nan``
reads as a float NaN), and PostgreSQL reads it with ``NULL 'nan'`` into a staging table
whose timestamp columns are ``bigint`` (converted to ``timestamptz`` in the ``INSERT``).

:data:`COLUMNS` is the single source of column order: :meth:`CallDetailRecord.as_row`,
:meth:`CallDetailRecord.as_csv_line`, the staging table and the ``INSERT ... SELECT``
all use it, so adding a field means adding it to the dataclass, to a migration, to those
two spelled-out methods and nowhere else. A batch names its columns, so a spool written
before a column was added still replays.

The older spool encoding, one JSON object per record with ``"v": 1``
(:meth:`CallDetailRecord.to_json`), is still read (:func:`decode_spool_payload`) so that
a spool written by an older gateway replays after an upgrade.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import enum
import functools
import io
import ipaddress
import json
import math
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from routing.decision import CallerId, FlowRelay, LocationSource, RecordingNotice
from routing.model import CallClass

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


class HangupSide(enum.StrEnum):
    """Which side ended the call (enum ``cdr_hangup_side``)."""

    CALLER = "caller"
    CALLEE = "callee"
    GATEWAY = "gateway"


class EndedBy(enum.StrEnum):
    """Why the call ended (enum ``cdr_ended_by``); NULL while the call is in progress."""

    CALLER = "caller"
    CALLEE = "callee"
    GATEWAY = "gateway"
    SESSION_TIMER = "session-timer"
    MEDIA_TIMEOUT = "media-timeout"
    MAX_DURATION = "max-duration"
    GATEWAY_RESTART = "gateway-restart"
    """The gateway stopped without ending the call (crash, kill -9, power cut): the
    next start closed the record at the last moment the gateway was known alive."""
    SHUTDOWN = "shutdown"
    INSTANCE_DEAD = "instance-dead"
    """Another instance found this one dead (no cluster heartbeat for ``[cluster]
    dead_after``) and closed the record at its last heartbeat (issue 16)."""


def billable_seconds(answered_for: float) -> int:
    """Seconds billed for ``answered_for`` seconds of answered call (whole, rounded).

    The one formula for a finished call, an interim update and a record closed after a
    restart.
    """
    return max(0, round(answered_for))


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
    ended_by: EndedBy | None
    """Why the call ended; ``None`` (NULL) while it is in progress.

    An in-progress record is written when the call is answered and rewritten every
    interim interval: its ``ended_at`` is then the last moment the call was known up,
    its durations run to that moment, and its ``hangup_side`` is a placeholder
    (``gateway``). The state is this column rather than a column of its own or a
    disposition: the disposition (answered) is already true at the answer, and what
    is unknown while the call is up is exactly who or what ends it. Exports bill only
    rows whose ``ended_by`` is set.
    """
    location_source: LocationSource | None = None
    """Where the location sent with an emergency call came from (site network,
    declared address, the device's own, or none: not verified); None for other calls
    (test calls included) and for records written before the column existed."""
    callback_identity: bool | None = None
    """Whether an emergency call carried a callback identity to the centre (False: an
    unknown caller, e.g. a visitor's phone on an office LAN); None for other calls."""
    presented_number: str | None = None
    """Number the call presented (E.164 where it reads as one; delivery terms 12.7)."""
    asserted_number: str | None = None
    """Number asserted on the B leg (P-Asserted-Identity), or None."""
    caller_id: CallerId | None = None
    """What the caller-ID policy did (kept, replaced, removed, rejected); None before it existed."""
    caller_id_reason: str | None = None
    """Why (a ``routing.decision.CallerIdReason`` token)."""
    flow_relay: FlowRelay | None = None
    """For a call relayed between two of the gateway's processes because another
    holds the callee's flow, which of its two records this is: ``to-owner`` (the
    relaying process's: the call's record, billed) or ``from-sibling`` (the flow
    owner's delivery leg: exports and counts skip it, subject access returns it);
    None for a call through one process (``routing.decision.FlowRelay``)."""

    @property
    def in_progress(self) -> bool:
        """Whether this is an in-progress record (the call had not ended)."""
        return self.ended_by is None

    def extended_to(self, ended_at: dt.datetime, ended_by: EndedBy | None) -> CallDetailRecord:
        """This in-progress record, run on to ``ended_at``: an interim update
        (``ended_by`` None) or its closure (after a restart).

        Args:
            ended_at: the new end (never earlier than the record's own).
            ended_by: why it ended, or None while it is still in progress.

        Returns:
            The record with its end, durations and end reason replaced.
        """
        ended_at = max(ended_at, self.ended_at)
        answered = self.answered_at
        return dataclasses.replace(
            self,
            ended_at=ended_at,
            duration_seconds=(ended_at - self.started_at).total_seconds(),
            billable_seconds=(
                0 if answered is None else billable_seconds((ended_at - answered).total_seconds())
            ),
            ended_by=ended_by,
            hangup_side=HangupSide.GATEWAY,
        )

    def __post_init__(self) -> None:
        for name in TIMESTAMP_COLUMNS:
            value = getattr(self, name)
            # UTC first: every record the gateway builds is, and utcoffset() is a call.
            if value is not None and value.tzinfo is not dt.UTC and value.utcoffset() is None:
                # A naive timestamp would be read in the server's TimeZone and could
                # land in the wrong monthly partition.
                raise ValueError(f"CallDetailRecord.{name} must be timezone-aware")
        if self.ended_at < self.started_at:
            raise ValueError("CallDetailRecord.ended_at is before started_at")
        if self.duration_seconds < 0 or self.billable_seconds < 0:
            raise ValueError("CallDetailRecord durations must not be negative")
        if math.isnan(self.duration_seconds) or (
            self.post_dial_delay_seconds is not None and math.isnan(self.post_dial_delay_seconds)
        ):
            # NaN is the CSV encoding's NULL (and no duration at all).
            raise ValueError("CallDetailRecord durations must be numbers, not NaN")
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
            None if self.ended_by is None else self.ended_by.value,
            None if self.location_source is None else self.location_source.value,
            self.callback_identity,
            self.presented_number,
            self.asserted_number,
            None if self.caller_id is None else self.caller_id.value,
            self.caller_id_reason,
            None if self.flow_relay is None else self.flow_relay.value,
        )

    def as_csv_line(self) -> str:
        """Returns the record as one line of a CSV batch (:func:`encode_csv_batch`).

        Written by hand rather than with ``csv.writer``: the C writer examines every
        character for quoting and costs ~9 µs per record, this ~4 µs, and the format
        is fixed (text quoted with quotes doubled, numbers bare, NULL a bare ``nan``).
        Spelled out field by field like :meth:`as_row` (it runs for every call);
        ``test_csv_batch_roundtrip`` pins the column order against :data:`COLUMNS`.
        """
        text = _csv_text
        micros = _csv_micros
        return (
            f'"{self.call_uuid.hex}",{(self.started_at - _EPOCH) // _MICROSECOND},'
            f"{text(self.call_id)},{text(self.customer)},{text(self.caller)},"
            f"{text(self.callee_dialled)},{text(self.callee_routed)},"
            f'{text(self.p_asserted_identity)},"{self.call_class}",'
            f"{text(self.device_kind)},{text(self.site)},"
            f'"{_ip_text(self.source_address)}",{text(self.user_agent)},'
            f"{1 if self.emergency else 0},"
            f"{text(self.emergency_centre)},{text(self.emergency_policy)},"
            f'"{self.recording_notice}",{text(self.recording_notice_language)},'
            f"{micros(self.recording_notice_played_at)},{micros(self.ringing_at)},"
            f"{micros(self.answered_at)},{(self.ended_at - _EPOCH) // _MICROSECOND},"
            f"{_csv_number(self.post_dial_delay_seconds)},{self.duration_seconds!r},"
            f"{self.billable_seconds},{self.final_status},{text(self.final_reason)},"
            f'"{self.disposition}","{self.hangup_side}",{text(self.gateway_instance)},'
            f"{text(self.ended_by)},{text(self.location_source)},"
            f"{_csv_bool(self.callback_identity)},{text(self.presented_number)},"
            f"{text(self.asserted_number)},{text(self.caller_id)},{text(self.caller_id_reason)},"
            f"{text(self.flow_relay)}\n"
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
        for name in TIMESTAMP_COLUMNS:
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
            kwargs = {
                name: _DECODERS.get(name, _identity)(obj[name])
                for name in COLUMNS
                if name in obj or name not in _MAY_LACK
            }
        except KeyError as exc:
            raise ValueError(f"CDR JSON is missing field {exc}") from None
        except (TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"CDR JSON has an invalid field: {exc}") from None
        return cls(**_derive_missing(kwargs))

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> CallDetailRecord:
        """Decodes a row of the ``cdr`` table as asyncpg returns it.

        Args:
            row: a record with every column of :data:`COLUMNS`.

        Returns:
            The record.
        """
        kwargs = {name: row[name] for name in COLUMNS}
        for name, decode in _ROW_DECODERS.items():
            kwargs[name] = decode(kwargs[name])
        return cls(**kwargs)


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _identity(value: Any) -> Any:
    return value


def _opt_datetime(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


#: Column names in table order; the dataclass field order is the table's column order.
COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(CallDetailRecord))

#: Timestamp columns (``timestamptz`` in the table, Unix seconds in a CSV batch).
TIMESTAMP_COLUMNS = (
    "started_at",
    "recording_notice_played_at",
    "ringing_at",
    "answered_at",
    "ended_at",
)

CALL_RECORD_CONDITION = f"flow_relay IS DISTINCT FROM '{FlowRelay.FROM_SIBLING.value}'"
"""SQL condition of the rows that are their call's record: all but the flow owner's
leg of a call relayed to it (``routing.decision.FlowRelay`` says why that one).
Itemization, the in-progress count and the monthly roll-up count calls with it."""

DERIVED_COLUMNS = frozenset({"ended_by"})
"""Columns a record spooled by an older gateway may lack: derived on reading it
(:func:`_derive_missing`; the writer does the same in SQL for such a batch)."""

OPTIONAL_COLUMNS = frozenset(
    {
        "location_source",
        "callback_identity",
        "presented_number",
        "asserted_number",
        "caller_id",
        "caller_id_reason",
        "flow_relay",
    }
)
"""Columns a record spooled by an older gateway may lack and that stay NULL (the
location columns, the caller-ID policy and the flow relay's mark did not exist:
nothing was recorded)."""


def _derive_missing(fields: dict[str, Any]) -> dict[str, Any]:
    """Fills the columns an older spool record lacks: ``ended_by`` from ``hangup_side``
    (an older gateway wrote only finished calls, and knew only those three ends)."""
    if "ended_by" not in fields:
        fields["ended_by"] = EndedBy(fields["hangup_side"])
    return fields


_MAY_LACK = DERIVED_COLUMNS | OPTIONAL_COLUMNS

CSV_NULL = "nan"
"""NULL in a CSV batch (PostgreSQL's ``NULL`` option): the bare text a NaN float writes as."""


def encode_csv_batch(records: Iterable[CallDetailRecord]) -> bytes:
    """Encodes records as one CSV batch (see the module docstring for the format).

    Args:
        records: the records, in order.

    Returns:
        UTF-8 CSV: a header line naming :data:`COLUMNS`, then one line per record.
    """
    return (_CSV_HEADER + "".join([record.as_csv_line() for record in records])).encode()


_CSV_HEADER = ",".join(f'"{name}"' for name in COLUMNS) + "\n"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def _csv_text(value: str | None) -> str:
    """A text field: quoted with quotes doubled, or a bare ``nan`` for NULL.

    NUL becomes U+FFFD: PostgreSQL text cannot hold it, and one record it rejects
    would hold up every record behind it (a User-Agent header may carry a NUL).
    """
    if value is None:
        return CSV_NULL
    if '"' in value:
        value = value.replace('"', '""')
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    return f'"{value}"'


def _csv_micros(value: dt.datetime | None) -> str | int:
    """A timestamp field: integer microseconds since the Unix epoch (exact), or NULL."""
    return CSV_NULL if value is None else (value - _EPOCH) // _MICROSECOND


def _csv_bool(value: bool | None) -> str:
    """A nullable boolean field: ``1``/``0`` as ``emergency`` is written, or NULL."""
    if value is None:
        return CSV_NULL
    return "1" if value else "0"


def _csv_number(value: float | None) -> str:
    return CSV_NULL if value is None else repr(value)


@functools.lru_cache(maxsize=4096)
def _ip_text(address: IPAddress) -> str:
    # str() of an ipaddress object is pure Python (~0.9 µs); callers repeat.
    return str(address)


def csv_batch_columns(payload: bytes | memoryview) -> tuple[tuple[str, ...], int]:
    """Returns the columns a CSV batch names and the offset of its first row.

    Raises:
        ValueError: the payload has no header line of known column names.
    """
    end = bytes(payload[:4096]).find(b"\n")
    if end < 0:
        raise ValueError("CDR CSV batch has no header line")
    try:
        header = next(csv.reader([bytes(payload[:end]).decode()]))
    except (UnicodeDecodeError, csv.Error, StopIteration) as exc:
        raise ValueError(f"CDR CSV batch header is malformed: {exc}") from None
    unknown = set(header) - set(COLUMNS)
    if unknown or len(set(header)) != len(header) or not header:
        raise ValueError(f"CDR CSV batch names unknown or repeated columns: {header}")
    return tuple(header), end + 1


def decode_csv_batch(payload: bytes) -> list[CallDetailRecord]:
    """Decodes :func:`encode_csv_batch` output (for replay tooling and tests).

    Raises:
        ValueError: the batch is malformed or lacks a column without a default.
    """
    columns, _ = csv_batch_columns(payload)
    try:
        rows = list(csv.reader(io.StringIO(payload.decode()), quoting=csv.QUOTE_NONNUMERIC))[1:]
    except (UnicodeDecodeError, csv.Error, ValueError) as exc:
        raise ValueError(f"CDR CSV batch is malformed: {exc}") from None
    records = []
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"CDR CSV row has {len(row)} fields for {len(columns)} columns")
        fields = dict(zip(columns, row, strict=True))
        try:
            kwargs = {
                name: _CSV_DECODERS.get(name, _csv_nullable)(fields[name])
                for name in COLUMNS
                if name in fields or name not in _MAY_LACK
            }
            kwargs = _derive_missing(kwargs)
        except KeyError as exc:
            raise ValueError(f"CDR CSV batch is missing column {exc}") from None
        except (TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"CDR CSV batch has an invalid field: {exc}") from None
        records.append(CallDetailRecord(**kwargs))
    return records


def decode_spool_payload(payload: bytes) -> list[CallDetailRecord]:
    """Decodes one spool payload of either encoding: a CSV batch or a v1 JSON record.

    Raises:
        ValueError: the payload is neither.
    """
    if payload[:1] == b"{":
        return [CallDetailRecord.from_json(payload)]
    return decode_csv_batch(payload)


def _is_null(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _csv_nullable(value: Any) -> Any:
    return None if _is_null(value) else value


def _csv_timestamp(value: Any) -> dt.datetime | None:
    return None if _is_null(value) else _EPOCH + int(value) * _MICROSECOND


_CSV_DECODERS: dict[str, Any] = {
    "call_uuid": lambda value: uuid.UUID(hex=value),
    "source_address": ipaddress.ip_address,
    "emergency": bool,
    "call_class": CallClass,
    "recording_notice": RecordingNotice,
    "disposition": Disposition,
    "hangup_side": HangupSide,
    "ended_by": lambda value: None if _is_null(value) else EndedBy(value),
    "caller_id": lambda value: None if _is_null(value) else CallerId(value),
    "flow_relay": lambda value: None if _is_null(value) else FlowRelay(value),
    "location_source": lambda value: None if _is_null(value) else LocationSource(value),
    "callback_identity": lambda value: None if _is_null(value) else bool(value),
    "billable_seconds": int,  # the reader gives every bare number as a float
    "final_status": int,
    **{name: _csv_timestamp for name in TIMESTAMP_COLUMNS},
}

_DECODERS: dict[str, Any] = {
    "call_uuid": uuid.UUID,
    "source_address": ipaddress.ip_address,
    "call_class": CallClass,
    "recording_notice": RecordingNotice,
    "disposition": Disposition,
    "hangup_side": HangupSide,
    "ended_by": lambda value: None if value is None else EndedBy(value),
    "caller_id": lambda value: None if value is None else CallerId(value),
    "flow_relay": lambda value: None if value is None else FlowRelay(value),
    "location_source": lambda value: None if value is None else LocationSource(value),
    **{name: _opt_datetime for name in TIMESTAMP_COLUMNS},
}

_ROW_DECODERS: dict[str, Any] = {
    "call_class": CallClass,
    "recording_notice": RecordingNotice,
    "disposition": Disposition,
    "hangup_side": HangupSide,
    "ended_by": lambda value: None if value is None else EndedBy(value),
    "caller_id": lambda value: None if value is None else CallerId(value),
    "flow_relay": lambda value: None if value is None else FlowRelay(value),
    "location_source": lambda value: None if value is None else LocationSource(value),
    # inet comes back as an address, or as an interface when it has a prefix
    "source_address": lambda value: getattr(value, "ip", value),
}
