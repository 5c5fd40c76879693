"""Cutting a TCP/TLS byte stream into SIP messages (RFC 3261 18.3, RFC 5626 3.5.1).

Theory of operation. A stream carries messages back to back; each one is a header
section ended by CRLFCRLF, then exactly Content-Length body octets (RFC 3261 18.3:
Content-Length "MUST be used with stream oriented transports"). Between messages a
peer may send keep-alives (RFC 5626 3.5.1):

* the flow's client sends a double CRLF, the "ping"; a server "MUST immediately
  respond with a single CRLF";
* the server's single CRLF answer is the "pong".

So the framer needs to know which side of the flow it is on: on the accepting side
(``initiator=False``, the default) every CRLFCRLF between messages counts as a ping
and a lone CRLF is ignored as RFC 3261 7.5 asks; on the connecting side
(``initiator=True``) every CRLF between messages counts as a pong. The adapter
reads the counts with :meth:`StreamFramer.pop_pings` / :meth:`StreamFramer.pop_pongs`
after each :meth:`StreamFramer.feed` and answers each ping with ``b"\\r\\n"``.

A ParseError from :meth:`StreamFramer.next_message` means the stream cannot be
framed any more (the next message boundary is unknown): the connection must be
closed. The framer stays failed and raises the same error again.

The framer only finds boundaries; :func:`gateway.sip.parser.parse_message` with
``stream=True`` checks the message itself.
"""

from __future__ import annotations

import re
from typing import Final

from gateway.sip.errors import ParseError, d
from gateway.sip.limits import MAX_HEAD_SIZE, MAX_MESSAGE_SIZE, STATUS_TOO_LARGE

#: The pong a server sends for each ping (RFC 5626 3.5.1).
PONG: Final = b"\r\n"
#: The ping a flow's client sends (RFC 5626 3.5.1).
PING: Final = b"\r\n\r\n"

#   Content-Length  =  ( "Content-Length" / "l" ) HCOLON 1*DIGIT
# Matched at a line start inside the header section; a folded value (CRLF then
# whitespace) is allowed before the digits.
_CONTENT_LENGTH_RE = re.compile(
    rb"\r\n(?:[Cc][Oo][Nn][Tt][Ee][Nn][Tt]-[Ll][Ee][Nn][Gg][Tt][Hh]|[Ll])[ \t]*+:"
    rb"(?:[ \t]|\r\n[ \t])*+([^\r\n]*)"
)


class StreamFramer:
    """Reassembles SIP messages from stream chunks.

    Args:
        initiator: True on the side that opened the connection (it sends pings
            and receives pongs), False on the accepting side.
        max_message_size: largest message accepted, in bytes.
    """

    __slots__ = ("_buffer", "_error", "_initiator", "_max", "_pending", "_pings", "_pongs", "_scan")

    def __init__(
        self, *, initiator: bool = False, max_message_size: int = MAX_MESSAGE_SIZE
    ) -> None:
        self._buffer = bytearray()
        self._initiator = initiator
        self._max = max_message_size
        # Total length of the message at the buffer start, once its head is known.
        self._pending: int | None = None
        # Where to resume the search for CRLFCRLF, so byte-at-a-time input stays
        # linear.
        self._scan = 0
        self._pings = 0
        self._pongs = 0
        self._error: ParseError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned, in bytes."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        """Appends bytes read from the stream.

        Args:
            data: the next chunk, any size (may be empty).
        """
        self._buffer += data

    def pop_pings(self) -> int:
        """Returns how many pings arrived since the last call (answer each with PONG)."""
        self._skip_keepalives()
        count, self._pings = self._pings, 0
        return count

    def pop_pongs(self) -> int:
        """Returns how many pongs arrived since the last call (``initiator=True``)."""
        self._skip_keepalives()
        count, self._pongs = self._pongs, 0
        return count

    def next_message(self) -> bytes | None:
        """Returns the next complete message (header section and body), or None.

        Call it until it returns None after each :meth:`feed`.

        Returns:
            The message bytes, starting at its start line; None when more bytes
            are needed.

        Raises:
            ParseError: the header section exceeds the size limit, or its
                Content-Length is missing, repeated or invalid. Close the connection.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next_message()
        except ParseError as exc:
            self._error = exc
            raise

    def _skip_keepalives(self) -> None:
        if self._pending is not None or self._error is not None:
            return
        buf = self._buffer
        i = 0
        while buf.startswith(b"\r\n", i):
            i += 2
        if i == 0:
            return
        pairs = i // 2
        if self._initiator:
            self._pongs += pairs
        else:
            # A lone CRLF at the very end may be the first half of a ping still on
            # its way: keep it until the next byte decides.
            more_may_follow = i >= len(buf) - 1
            self._pings += pairs // 2
            if more_may_follow and pairs % 2:
                i -= 2
        if i:
            del buf[:i]
            self._scan = 0

    def _next_message(self) -> bytes | None:
        self._skip_keepalives()
        buf = self._buffer
        if self._pending is None:
            head_end = buf.find(b"\r\n\r\n", self._scan)
            if head_end < 0:
                if len(buf) > MAX_HEAD_SIZE:
                    raise ParseError(
                        f"header section exceeds {MAX_HEAD_SIZE} bytes",
                        status_hint=STATUS_TOO_LARGE,
                    )
                self._scan = max(0, len(buf) - 3)
                return None
            if head_end > MAX_HEAD_SIZE:
                raise ParseError(
                    f"header section exceeds {MAX_HEAD_SIZE} bytes", status_hint=STATUS_TOO_LARGE
                )
            length = _content_length(bytes(buf[: head_end + 2]))
            total = head_end + 4 + length
            if total > self._max:
                raise ParseError(
                    f"message of {total} bytes exceeds {self._max}", status_hint=STATUS_TOO_LARGE
                )
            self._pending = total
        total = self._pending
        if len(buf) < total:
            return None
        message = bytes(buf[:total])
        del buf[:total]
        self._pending = None
        self._scan = 0
        return message


def _content_length(head: bytes) -> int:
    values = _CONTENT_LENGTH_RE.findall(head)
    if not values:
        # RFC 3261 18.3: without it the end of the body cannot be found.
        raise ParseError("missing Content-Length on a stream transport")
    if len(values) > 1:
        # RFC 4475 3.3.9: with two values the message end is unknowable.
        raise ParseError(f"{len(values)} Content-Length headers on a stream transport")
    text = values[0].strip(b" \t")
    if not text.isdigit() or len(text) > 10:
        raise ParseError(f"invalid Content-Length {d(text)}")
    return int(text)
