"""Errors raised by the sans-IO SIP core.

The tree::

    SipError                      base of everything the core raises on purpose
    ├── ParseError                bytes that are not a SIP message (the only error
    │                             that may escape the parser); status_hint 400,
    │                             513 for oversized messages, 505 for a bad version
    ├── LocalProtocolError        we were asked to send something illegal
    ├── RemoteProtocolError       the peer sent a well-formed but unacceptable message
    └── TransportError            a message could not be handed to the transport

Every protocol error carries ``status_hint``: the SIP status a UAS should answer with
when the error was caused by a request (h11's ``error_status_hint``). Layers raise
inside and catch once at their boundary, where the error becomes an event, a response
or a dropped datagram.

A timeout is not an error here: timers are inputs of the sans-IO core, and Timer B, F,
H or L expiring comes out as a :class:`~gateway.sip.events.TransactionTimedOut` event.
"""

from __future__ import annotations

from mypy_extensions import mypyc_attr


# The resolver's ResolutionError (interpreted) subclasses TransportError: mypyc's native
# classes refuse interpreted subclasses unless told, down the whole chain.
@mypyc_attr(allow_interpreted_subclasses=True)
class SipError(Exception):
    """Base class of the errors raised by the SIP core.

    Args:
        msg: human-readable description; raw bytes in it go through :func:`d`.
        status_hint: SIP status code to answer a request that caused this error.
    """

    def __init__(self, msg: str, *, status_hint: int = 400) -> None:
        super().__init__(msg)
        self.msg = msg
        self.status_hint = status_hint

    def __str__(self) -> str:
        return self.msg


class ParseError(SipError):
    """The bytes are not a valid SIP message (RFC 3261 section 25 grammar or limits).

    ``partial`` holds whatever the parser had recovered before it failed (method,
    Call-ID, Via ...), so a UAS can still answer 400 statelessly when a Via exists.
    """

    def __init__(
        self,
        msg: str,
        *,
        status_hint: int = 400,
        partial: object | None = None,
    ) -> None:
        super().__init__(msg, status_hint=status_hint)
        self.partial = partial


class LocalProtocolError(SipError):
    """We tried to do something the protocol forbids (a bug in the caller of the core)."""


class RemoteProtocolError(SipError):
    """The peer sent a parsable message that violates the protocol."""


@mypyc_attr(allow_interpreted_subclasses=True)
class TransportError(SipError):
    """The transport could not carry a message (no route, connection refused ...)."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg, status_hint=503)


def d(data: bytes, limit: int = 80) -> str:
    """Shows raw wire bytes in an error message, escaping what is not printable."""
    shown = data[:limit].decode("utf-8", "backslashreplace")
    return repr(shown + ("..." if len(data) > limit else ""))
