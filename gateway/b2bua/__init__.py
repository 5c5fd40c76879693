"""Back-to-back user agent: every inbound INVITE becomes an A leg and a B leg."""

from __future__ import annotations

from gateway.b2bua.core import B2bua
from gateway.b2bua.events import (
    Announcement,
    CallAnswered,
    CallEnded,
    EndedBy,
    LocalAnswer,
    MediaAnswered,
    MediaNeeded,
    MessageDone,
    Reject,
    Route,
    RouteNeeded,
    ServiceRequest,
)

__all__ = [
    "Announcement",
    "B2bua",
    "CallAnswered",
    "CallEnded",
    "EndedBy",
    "LocalAnswer",
    "MediaAnswered",
    "MediaNeeded",
    "MessageDone",
    "Reject",
    "Route",
    "RouteNeeded",
    "ServiceRequest",
]
