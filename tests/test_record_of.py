"""record_of: the CDR the gateway writes for a finished call (B2BUA summary -> row)."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest

from cdr.call_record import InProgressRecord, in_progress_record_of, record_of
from cdr.record import CallClass, Disposition, RecordingNotice
from gateway.b2bua.events import CallEnded
from routing.decision import NO_FACTS, CallFacts, FlowRelay
from tests.call_events import call_ended, replaced

WALL_OFFSET = 1_790_000_000.0  # loop clock 0 = this Unix time


def ended(
    facts: CallFacts = NO_FACTS,
    *,
    recording_notice: RecordingNotice = RecordingNotice.NONE,
    recording_started_at: float | None = None,
) -> CallEnded:
    return call_ended(
        call_id="abc@192.0.2.10",
        p_asserted_identity="<sip:+358401234567@example.com>",
        user_agent="Yealink T46U",
        facts=facts,
        recording_notice=recording_notice,
        recording_started_at=recording_started_at,
    )


def at(loop_seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(WALL_OFFSET + loop_seconds, dt.UTC)


def test_answered_call_after_the_recording_notice() -> None:
    event = ended(
        CallFacts(
            call_class=CallClass.OFFICE,
            customer_id="setera",
            site_id="espoo-hq",
            recording_notice_language="fi",
        ),
        recording_notice=RecordingNotice.PLAYED,
        recording_started_at=100.7,
    )
    record = record_of(event, wall_offset=WALL_OFFSET, instance="gw-1")
    assert record.recording_notice is RecordingNotice.PLAYED
    assert record.recording_notice_language == "fi"
    assert record.recording_notice_played_at == at(100.7)
    assert record.started_at == at(100.0)
    assert record.answered_at == at(108.0)
    assert record.billable_seconds == 61  # from the answer, not from the notice
    assert record.post_dial_delay_seconds == 0.5
    assert record.call_class is CallClass.OFFICE
    assert record.disposition is Disposition.ANSWERED
    assert record.source_address == ipaddress.ip_address("192.0.2.10")
    assert record.gateway_instance == "gw-1"


def test_no_notice_time_without_a_recording_notice() -> None:
    # A nomadic warning also starts a prompt: it is not the recording notice.
    warned = ended(recording_started_at=100.7)
    record = record_of(warned, wall_offset=WALL_OFFSET, instance="gw-1")
    assert record.recording_notice is RecordingNotice.NONE
    assert record.recording_notice_played_at is None
    # G.729-only caller: the notice could not be played and never started.
    unplayable = ended(recording_notice=RecordingNotice.NOT_PLAYED)
    record = record_of(unplayable, wall_offset=WALL_OFFSET, instance="gw-1")
    assert record.recording_notice is RecordingNotice.NOT_PLAYED
    assert record.recording_notice_played_at is None


def test_database_url_in_the_log_line_hides_the_password() -> None:
    from gateway.service.app import _without_password

    assert _without_password("postgresql://voipgw:s3cret@db.example:5432/voipgw") == (
        "postgresql://voipgw:***@db.example:5432/voipgw"
    )
    assert _without_password("postgresql://voipgw@db.example/voipgw") == (
        "postgresql://voipgw@db.example/voipgw"
    )


def test_parties_are_stored_as_numbers_for_subject_access() -> None:
    # The privacy policy's right of access: cdr subject-access looks a number up in
    # caller, callee and PAI; URIs as the devices wrote them would hide the call.
    event = ended()
    event = replaced(
        event,
        callee_dialled="sip:+358501112222@gw.example;user=phone",
        p_asserted_identity='"Alice" <tel:+358-40-1234567>',
    )
    record = record_of(event, wall_offset=WALL_OFFSET, instance="gw-1")
    assert record.callee_dialled == "+358501112222"
    assert record.p_asserted_identity == "+358401234567"
    # What names no number stays as written.
    named = replaced(
        event,
        callee_dialled="sip:alice@voipgw.demo",
        p_asserted_identity="<sip:alice@voipgw.demo>",
    )
    record = record_of(named, wall_offset=WALL_OFFSET, instance="gw-1")
    assert record.callee_dialled == "sip:alice@voipgw.demo"
    assert record.p_asserted_identity == "<sip:alice@voipgw.demo>"


def test_in_progress_builder_builds_the_in_progress_record() -> None:
    answered = ended()
    clock = (WALL_OFFSET, "gw-1")
    built = InProgressRecord(answered, clock)()
    assert built == in_progress_record_of(answered, wall_offset=WALL_OFFSET, instance="gw-1")
    assert built.in_progress
    assert built.ended_at == at(answered.ended_at)
    assert built.gateway_instance == "gw-1"


def test_parties_are_numbers_however_long_and_however_often() -> None:
    # The numbers of short parties are kept for the next call (cdr.call_record): the
    # same party twice is the same number; a long one (a caller writes its From) is
    # worked out each time and never kept.
    long_user = "+358401234567;" + "x" * 300
    for _ in range(2):
        record = record_of(
            replaced(
                ended(),
                caller="sip:+358-40-1112222@pbx.example",
                callee_dialled=f"sip:{long_user}@gw",
            ),
            wall_offset=WALL_OFFSET,
            instance="gw-1",
        )
        assert record.caller == "+358401112222"
        assert record.callee_dialled == "+358401234567"


def test_an_outcome_the_cdr_does_not_know_is_refused() -> None:
    # The enums' own check, as before the outcomes were looked up in a table.
    with pytest.raises(ValueError, match="finished-somehow"):
        record_of(replaced(ended(), disposition="finished-somehow"), wall_offset=0.0, instance="x")


def test_a_relayed_call_s_records_carry_which_one_bills_it() -> None:
    # A call relayed to the process holding the callee's flow leaves a record in
    # each (routing.decision.FlowRelay): the relaying one's bills the call, and the
    # in-progress record written at the answer says so already.
    for relay in FlowRelay:
        event = ended(CallFacts(customer_id="setera", flow_relay=relay))
        assert record_of(event, wall_offset=WALL_OFFSET, instance="gw-1").flow_relay is relay
        in_progress = in_progress_record_of(event, wall_offset=WALL_OFFSET, instance="gw-1")
        assert in_progress.flow_relay is relay
    one_process = record_of(ended(), wall_offset=WALL_OFFSET, instance="gw-1")
    assert one_process.flow_relay is None
