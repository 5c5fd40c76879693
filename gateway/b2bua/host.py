"""What the B2BUA's parts (announce, reliable, relay) use from the assembled
:class:`gateway.b2bua.core.B2bua`, declared in one place.

The parts are mypyc *traits* (``mypy_extensions.trait``; a no-op when the package runs
interpreted): mypyc compiles a native class with one concrete base only, and traits
are its form of mixin. The attributes below are defined by ``B2bua.__init__`` and the
methods by ``B2bua``; the bodies here are never run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from mypy_extensions import trait

if TYPE_CHECKING:
    from gateway.b2bua.call import Call, Relay, Side
    from gateway.b2bua.events import B2buaEvent
    from gateway.sip.events import Endpoint, TransactionKey
    from gateway.sip.message import Request, Response
    from gateway.sip.session_timer import SessionTimer, SessionTimerPolicy
    from gateway.sip.transaction_layer import TransactionLayer


@trait
class B2buaHost:
    """Base of the B2BUA's mixins."""

    layer: TransactionLayer
    calls: dict[str, Call]
    _events: deque[B2buaEvent]
    _relays: dict[TransactionKey, Relay]
    #: session refreshes the gateway sent itself, by transaction
    _refreshes: dict[TransactionKey, tuple[Call, Side]]
    session_timers: SessionTimerPolicy | None
    new_token: Callable[[], str]
    contact_user: str
    #: MESSAGEs the gateway sent itself (message.py), by client transaction
    _messages: set[TransactionKey]

    def _send(self, key: TransactionKey, response: Response, now: float) -> None:
        raise NotImplementedError

    def _respond(
        self,
        key: TransactionKey,
        request: Request,
        status: int,
        now: float,
        *,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        raise NotImplementedError

    def _fail_a(
        self,
        call: Call,
        status: int,
        reason: str | None,
        now: float,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
    ) -> None:
        raise NotImplementedError

    def _try_next_target(self, call: Call, now: float) -> None:
        raise NotImplementedError

    def _end_call(
        self, call: Call, now: float, *, skip: Side | None = None, reason: str | None = None
    ) -> None:
        raise NotImplementedError

    def _arm(self, call: Call, name: str, delay: float, now: float) -> None:
        raise NotImplementedError

    def _disarm(self, call: Call, name: str) -> None:
        raise NotImplementedError

    def _send_a(self, call: Call, out: Response, now: float) -> None:
        raise NotImplementedError

    def _answered(self, call: Call, now: float) -> None:
        raise NotImplementedError

    def _a_answered(self, call: Call, out: Response, now: float) -> None:
        raise NotImplementedError

    def _peer_refreshed(
        self, call: Call, side: Side, timer: SessionTimer | None, out: Response, now: float
    ) -> None:
        raise NotImplementedError

    def _refreshed_by_gateway(self, call: Call, side: Side, response: Response, now: float) -> None:
        raise NotImplementedError

    def _timer_request_headers(self, call: Call, side: Side, request: Request) -> None:
        raise NotImplementedError

    def _note_offer(self, call: Call, body: bytes) -> None:
        raise NotImplementedError

    def _leg_endpoint(self, call: Call, side: Side) -> Endpoint:
        raise NotImplementedError
