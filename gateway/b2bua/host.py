"""What the B2BUA's parts (announce, reliable, relay) use from the assembled
:class:`gateway.b2bua.core.B2bua`: declarations for the type checker only, in one
place. At run time this class is empty."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.b2bua.call import Call, Relay, Side
    from gateway.b2bua.events import B2buaEvent
    from gateway.sip.events import Endpoint, TransactionKey
    from gateway.sip.message import Request, Response
    from gateway.sip.transaction_layer import TransactionLayer


class B2buaHost:
    """Base of the B2BUA's mixins."""

    if TYPE_CHECKING:
        layer: TransactionLayer
        calls: dict[str, Call]
        _events: deque[B2buaEvent]
        _relays: dict[TransactionKey, Relay]

        def _send(self, key: TransactionKey, response: Response, now: float) -> None: ...
        def _respond(
            self,
            key: TransactionKey,
            request: Request,
            status: int,
            now: float,
            *,
            headers: tuple[tuple[str, str], ...] = (),
        ) -> None: ...
        def _fail_a(
            self,
            call: Call,
            status: int,
            reason: str | None,
            now: float,
            *,
            headers: tuple[tuple[str, str], ...] = (),
            body: bytes = b"",
        ) -> None: ...
        def _try_next_target(self, call: Call, now: float) -> None: ...
        def _arm(self, call: Call, name: str, delay: float, now: float, token: object) -> None: ...
        def _disarm(self, call: Call, name: str) -> None: ...
        def _send_a(self, call: Call, out: Response, now: float) -> None: ...
        def _leg_endpoint(self, call: Call, side: Side) -> Endpoint: ...
