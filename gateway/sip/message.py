"""SIP requests and responses as data (RFC 3261 section 7), and their serialization.

Header values are kept as ``str`` decoded from UTF-8 with ``surrogateescape``: SIP text
is UTF-8 (RFC 3261 section 7.3.1), and the error handler lets any other byte survive a
parse/serialize round trip unchanged. Typed views of the values (Via, CSeq, name-addr,
URIs) live in :mod:`gateway.sip.headers` and :mod:`gateway.sip.uri` and are computed
only when a layer needs them.

Header names are stored in their canonical long form ("v" and "VIA" both become
"Via"), so lookups are exact string matches; RFC 3261 section 7.3.3 makes the compact
and long forms equivalent.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

SIP_VERSION = "SIP/2.0"

#: RFC 3261 section 7.3.3 and the IANA registry's other compact forms.
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

# Spellings that title-casing would get wrong.
_SPECIAL_SPELLINGS = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "p-asserted-identity": "P-Asserted-Identity",
    "p-preferred-identity": "P-Preferred-Identity",
    "min-se": "Min-SE",
    "rack": "RAck",
    "rseq": "RSeq",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
}
_canonical_cache: dict[str, str] = {}

#: Headers whose values may be comma-separated lists (RFC 3261 section 7.3.1: only
#: those whose grammar is a comma-separated list may be combined). Authorization-like
#: headers are deliberately absent: their parameters are comma-separated too.
LIST_HEADERS = frozenset(
    {
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Call-Info",
        "Contact",
        "Content-Encoding",
        "Content-Language",
        "Error-Info",
        "In-Reply-To",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Privacy",
        "Proxy-Require",
        "Reason",
        "Record-Route",
        "Require",
        "Route",
        "Supported",
        "Unsupported",
        "Via",
        "Warning",
        "Geolocation",
        "Resource-Priority",
    }
)


def canonical_name(name: str) -> str:
    """Returns the canonical spelling of a header name (compact forms expanded)."""
    cached = _canonical_cache.get(name)
    if cached is not None:
        return cached
    lower = name.lower()
    if len(lower) == 1 and lower in COMPACT_FORMS:
        result = COMPACT_FORMS[lower]
    elif lower in _SPECIAL_SPELLINGS:
        result = _SPECIAL_SPELLINGS[lower]
    else:
        result = "-".join(part.capitalize() for part in lower.split("-"))
    if len(_canonical_cache) < 4096:  # bounded: names come from the network
        _canonical_cache[name] = result
    return result


def split_list_value(value: str) -> list[str]:
    """Splits a header value at top-level commas (not inside quotes or <...>).

    RFC 3261 section 7.3.1: ``field-name: value1, value2`` is equivalent to two header
    lines. Commas inside a quoted-string or an angle-bracketed URI are part of the value.
    """
    if "," not in value:
        stripped = value.strip()
        return [stripped] if stripped else []
    parts: list[str] = []
    start = 0
    in_quotes = False
    in_angle = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if in_quotes:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            part = value[start:i].strip()
            if part:
                parts.append(part)
            start = i + 1
        i += 1
    part = value[start:].strip()
    if part:
        parts.append(part)
    return parts


class Headers:
    """Ordered, case-insensitive multi-map of header fields.

    Keeps the order of header lines as received (RFC 3261 section 7.3.1: the relative
    order of same-named fields is significant; Via and Route are ordered lists).
    """

    __slots__ = ("_fields",)

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self._fields: list[tuple[str, str]] = [(canonical_name(n), v) for n, v in fields]

    @classmethod
    def from_canonical(cls, fields: list[tuple[str, str]]) -> Headers:
        """Wraps fields whose names are already canonical (the parser's output),
        skipping a second canonicalisation of every name: this is per message on the
        hot path. The list is taken over, not copied."""
        # cls() rather than cls.__new__(cls): mypyc's native classes have no __new__.
        headers = cls()
        headers._fields = fields
        return headers

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = canonical_name(name)
        return any(n == key for n, _ in self._fields)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._fields == other._fields

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"

    def copy(self) -> Headers:
        new = Headers()
        new._fields = list(self._fields)
        return new

    def get(self, name: str, default: str | None = None) -> str | None:
        """Returns the first line's value of a header, or ``default``."""
        key = _canonical_cache.get(name) or canonical_name(name)
        for n, v in self._fields:
            if n == key:
                return v
        return default

    def get_lines(self, name: str) -> list[str]:
        """Returns every line's raw value for a header, in order."""
        key = canonical_name(name)
        return [v for n, v in self._fields if n == key]

    def values(self, name: str) -> list[str]:
        """Returns the header's values in order, splitting comma-separated lists.

        Only headers in :data:`LIST_HEADERS` are split; for others this is
        :meth:`get_lines`.
        """
        key = _canonical_cache.get(name) or canonical_name(name)
        lines = [v for n, v in self._fields if n == key]
        if key not in LIST_HEADERS:
            return lines
        result: list[str] = []
        for line in lines:
            result.extend(split_list_value(line))
        return result

    def count(self, name: str) -> int:
        key = canonical_name(name)
        return sum(1 for n, _ in self._fields if n == key)

    def add(self, name: str, value: str) -> None:
        """Appends a header line after all existing ones."""
        self._fields.append((_canonical_cache.get(name) or canonical_name(name), value))

    def prepend(self, name: str, value: str) -> None:
        """Inserts a header line before the first line of the same name (or at the top).

        Used for Via and Record-Route, whose topmost value is the newest hop.
        """
        key = canonical_name(name)
        for i, (n, _) in enumerate(self._fields):
            if n == key:
                self._fields.insert(i, (key, value))
                return
        self._fields.insert(0, (key, value))

    def set(self, name: str, value: str) -> None:
        """Replaces all lines of a header by one line, kept at the first one's place."""
        key = canonical_name(name)
        for i, (n, _) in enumerate(self._fields):
            if n == key:
                self._fields[i] = (key, value)
                self._fields = [f for j, f in enumerate(self._fields) if j <= i or f[0] != key]
                return
        self._fields.append((key, value))

    def remove(self, name: str) -> int:
        """Removes every line of a header; returns how many were removed."""
        key = canonical_name(name)
        before = len(self._fields)
        self._fields = [f for f in self._fields if f[0] != key]
        return before - len(self._fields)

    def pop_first_value(self, name: str) -> str | None:
        """Removes and returns the topmost value of a list header (e.g. one Via).

        A line holding several comma-separated values loses only its first value.
        """
        key = canonical_name(name)
        for i, (n, v) in enumerate(self._fields):
            if n == key:
                parts = split_list_value(v) if key in LIST_HEADERS else [v]
                if len(parts) <= 1:
                    del self._fields[i]
                else:
                    self._fields[i] = (key, ", ".join(parts[1:]))
                return parts[0] if parts else v
        return None


# __init__ written out: compiled, unlike the one dataclass() generates (gateway.ops.native)
@dataclass(init=False, slots=True, kw_only=True)
class Request:
    """A SIP request (RFC 3261 section 7.1).

    Attributes:
        method: request method, case-sensitive ("INVITE", "BYE" ...).
        uri: Request-URI exactly as on the wire (parse with ``gateway.sip.uri``).
        headers: header fields in wire order.
        body: message body, bytes.
        version: protocol version from the request line.
    """

    method: str
    uri: str
    headers: Headers
    body: bytes
    version: str

    def __init__(
        self,
        *,
        method: str,
        uri: str,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        self.method = method
        self.uri = uri
        self.headers = Headers() if headers is None else headers
        self.body = body
        self.version = version

    def serialize(self) -> bytes:
        """Returns the wire form, with Content-Length set from the body."""
        return _serialize(f"{self.method} {self.uri} {self.version}", self.headers, self.body)

    def __bytes__(self) -> bytes:
        return self.serialize()

    def copy(self) -> Request:
        return Request(
            method=self.method,
            uri=self.uri,
            headers=self.headers.copy(),
            body=self.body,
            version=self.version,
        )


# __init__ written out: compiled, unlike the one dataclass() generates (gateway.ops.native)
@dataclass(init=False, slots=True, kw_only=True)
class Response:
    """A SIP response (RFC 3261 section 7.2).

    Attributes:
        status: status code, 100-699.
        reason: reason phrase (may be empty, may be UTF-8).
        headers: header fields in wire order.
        body: message body, bytes.
        version: protocol version from the status line.
    """

    status: int
    reason: str
    headers: Headers
    body: bytes
    version: str

    def __init__(
        self,
        *,
        status: int,
        reason: str,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = Headers() if headers is None else headers
        self.body = body
        self.version = version

    def serialize(self) -> bytes:
        """Returns the wire form, with Content-Length set from the body."""
        return _serialize(f"{self.version} {self.status} {self.reason}", self.headers, self.body)

    def __bytes__(self) -> bytes:
        return self.serialize()

    def copy(self) -> Response:
        return Response(
            status=self.status,
            reason=self.reason,
            headers=self.headers.copy(),
            body=self.body,
            version=self.version,
        )


Message = Request | Response


def _serialize(start_line: str, headers: Headers, body: bytes) -> bytes:
    lines = [start_line]
    for name, value in headers:
        if name == "Content-Length":
            continue
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(body)}")
    head = "\r\n".join(lines) + "\r\n\r\n"
    return head.encode("utf-8", "surrogateescape") + body


#: RFC 3261 section 21 reason phrases used when the core builds a response.
REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",  # RFC 4028 6
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


def reason_phrase(status: int) -> str:
    """Returns the RFC 3261 reason phrase of a status code (or a class default)."""
    return REASON_PHRASES.get(status) or REASON_PHRASES.get(status // 100 * 100, "Unknown")
