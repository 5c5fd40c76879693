"""One factory for the B2BUA's ``CallEnded`` in tests: an answered outbound call with
every field set, which a test changes only where its point lies.

``CallEnded`` is compiled (mypyc) with its ``__init__`` written out, so it has no
``dataclasses.replace`` that tests could rely on; ``call_ended`` and ``replaced`` are
that, once, instead of a 23-field constructor in every test module.
"""

from __future__ import annotations

from typing import Any

from gateway.b2bua.events import CallEnded, EndedBy
from gateway.sip.events import Endpoint
from routing.decision import NO_FACTS, RecordingNotice

_ANSWERED_CALL: dict[str, Any] = {
    "call_uuid": "0f8d2c1e6a4b4f4e9a3c2b1d0e9f8a7b",
    "call_id": "abc@192.0.2.10",
    "caller": "+358401234567",
    "callee_dialled": "+358501112222",
    "callee_routed": "sip:+358501112222@pbx.example",
    "p_asserted_identity": None,
    "source": Endpoint("UDP", "192.0.2.10", 5060),
    "user_agent": None,
    "setup_at": 100.0,
    "ringing_at": 100.5,
    "answered_at": 108.0,
    "ended_at": 169.4,
    "final_status": 200,
    "final_reason": "OK",
    "disposition": "answered",
    "hangup_side": "caller",
    "ended_by": EndedBy.CALLER,
    "emergency": False,
    "facts": NO_FACTS,
    "attempt": 0,
    "recording_notice": RecordingNotice.NONE,
    "recording_started_at": None,
}


def call_ended(**fields: Any) -> CallEnded:
    """An answered call's ``CallEnded``, with ``fields`` in place of the defaults."""
    unknown = fields.keys() - _ANSWERED_CALL.keys()
    assert not unknown, f"CallEnded has no field {sorted(unknown)}"
    return CallEnded(**{**_ANSWERED_CALL, **fields})


def replaced(event: CallEnded, **fields: Any) -> CallEnded:
    """``event`` with ``fields`` changed (``dataclasses.replace`` for the compiled class)."""
    return call_ended(**{**{f: getattr(event, f) for f in _ANSWERED_CALL}, **fields})
