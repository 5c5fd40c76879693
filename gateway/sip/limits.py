"""Size and count limits applied to incoming SIP messages.

Every limit here is checked before the work it bounds, so a peer cannot make the
parser allocate or loop more than these numbers allow. The status hints follow the
RFC where it names one:

* a message, header section or body over its limit is 513 Message Too Large
  (RFC 3261 21.5.14: "the message length exceeded its capabilities");
* a Request-URI over its limit is 414 Request-URI Too Long (RFC 3261 21.4.12);
* the other limits (line count, line length, values in one list header) have no
  status of their own in the RFC and give 400 Bad Request.

A TCP/TLS connection whose framer raised one of these must be closed: the stream can
no longer be cut into messages (RFC 3261 18.3).
"""

from __future__ import annotations

from typing import Final

#: Largest message (start line + headers + body), in bytes. A UDP datagram cannot be
#: longer (RFC 768 length field), and RFC 3261 18.1.1 expects far smaller ones; the
#: same figure bounds a message read from a stream.
MAX_MESSAGE_SIZE: Final = 65535

#: Largest header section (start line + headers + the empty line), in bytes.
MAX_HEAD_SIZE: Final = 32768

#: Largest message body, in bytes.
MAX_BODY_SIZE: Final = 65535

#: Most header lines in one message (after unfolding).
MAX_HEADER_LINES: Final = 256

#: Longest single header line (after unfolding), in characters.
MAX_LINE_LENGTH: Final = 8192

#: Longest start line, in characters.
MAX_START_LINE_LENGTH: Final = 8192

#: Longest Request-URI, in characters (answered with 414).
MAX_REQUEST_URI_LENGTH: Final = 4096

#: Most comma-separated values in one list header (Via, Contact, Route ...).
MAX_HEADER_VALUES: Final = 64

#: Largest value of a 32-bit unsigned scalar: Expires, Content-Length, Retry-After,
#: the Contact "expires" parameter (RFC 4475 3.1.2.4 treats larger values as
#: invalid).
MAX_DELTA_SECONDS: Final = 2**32 - 1

#: CSeq sequence numbers "MUST be less than 2**31" (RFC 3261 8.1.1.5).
MAX_CSEQ: Final = 2**31 - 1

#: Max-Forwards "is an integer in the range 0-255" (RFC 3261 20.22).
MAX_MAX_FORWARDS: Final = 255

#: Status hint for a message over a size limit (RFC 3261 21.5.14).
STATUS_TOO_LARGE: Final = 513

#: Status hint for a Request-URI over MAX_REQUEST_URI_LENGTH (RFC 3261 21.4.12).
STATUS_URI_TOO_LONG: Final = 414
