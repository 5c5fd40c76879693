"""Builds realistic call detail records for tests and the benchmark."""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid

from cdr.record import (
    CallClass,
    CallDetailRecord,
    Disposition,
    EndedBy,
    HangupSide,
    RecordingNotice,
)


def make_record(
    *,
    started_at: dt.datetime | None = None,
    customer: str = "acme",
    caller: str = "+358401234567",
    callee: str = "+358501112222",
    pai: str | None = None,
    answered: bool = True,
    duration: float = 61.5,
    emergency: bool = False,
    call_uuid: uuid.UUID | None = None,
    ended_at: dt.datetime | None = None,
) -> CallDetailRecord:
    """Returns a plausible record; every argument overrides one aspect."""
    start = started_at or dt.datetime(2026, 10, 5, 12, 0, tzinfo=dt.UTC)
    ringing = start + dt.timedelta(seconds=1.2)
    answer = start + dt.timedelta(seconds=4) if answered else None
    end = ended_at or (answer + dt.timedelta(seconds=duration) if answer else ringing)
    return CallDetailRecord(
        call_uuid=call_uuid or uuid.uuid4(),
        started_at=start,
        call_id=f"{uuid.uuid4().hex}@192.0.2.10",
        customer=customer,
        caller=caller,
        callee_dialled=callee,
        callee_routed=callee if not emergency else "sip:psap@192.0.2.99",
        p_asserted_identity=pai or caller,
        call_class=CallClass.OFFICE,
        device_kind="desk-phone",
        site="hq",
        source_address=ipaddress.ip_address("192.0.2.10"),
        user_agent="Yealink T46U",
        emergency=emergency,
        emergency_centre="112-helsinki" if emergency else None,
        emergency_policy="fi-default" if emergency else None,
        recording_notice=RecordingNotice.PLAYED,
        recording_notice_language="fi",
        recording_notice_played_at=ringing,
        ringing_at=ringing,
        answered_at=answer,
        ended_at=end,
        post_dial_delay_seconds=1.2,
        duration_seconds=duration if answered else 0.0,
        billable_seconds=int(duration + 0.999) if answered else 0,
        final_status=200 if answered else 486,
        final_reason=None if answered else "Busy Here",
        disposition=Disposition.ANSWERED if answered else Disposition.BUSY,
        hangup_side=HangupSide.CALLER,
        gateway_instance="gw-test",
        ended_by=EndedBy.CALLER,
    )
