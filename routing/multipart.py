"""multipart/mixed bodies of any number of parts (RFC 2046 section 5.1) for SIP INVITEs.

An emergency INVITE carries the SDP, the PIDF-LO (RFC 6442) and the RFC 7852
Additional Data blocks in one body; the parts referenced from headers carry a
Content-ID (RFC 2392) and ``Content-Disposition: by-reference;handling=optional``
(RFC 5621 section 3.2/9: the part is referenced from a header and a UA that does not
understand it may ignore it, so the call never fails over an unknown part).

Written by hand rather than with :mod:`email`: the email generator re-encodes and
folds parts and normalises line endings, and SDP and XML must go byte-exact.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

#: RFC 2046 section 5.1.1: boundary := 0*69<bchars> bcharsnospace
_BOUNDARY_RE = re.compile(r"[0-9A-Za-z'()+_,./:=?-]{0,69}[0-9A-Za-z'()+_,./:=?-]")
#: RFC 2392 content-id = addr-spec; a conservative subset ("local@domain").
_CONTENT_ID_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")
#: RFC 2045 section 5.1: type "/" subtype [";" parameter], printable ASCII.
_CONTENT_TYPE_RE = re.compile(r"[!-~]+/[!-~]+(;[ !-~]*)?")
#: A header value on one line: printable ASCII and spaces (no CR/LF injection).
_HEADER_VALUE_RE = re.compile(r"[ -~]+")

BY_REFERENCE = "by-reference;handling=optional"


@dataclass(frozen=True, slots=True, kw_only=True)
class BodyPart:
    """One part of a multipart/mixed body.

    Attributes:
        content_type: the part's media type.
        body: its bytes, sent unchanged.
        content_id: Content-ID without angle brackets, for parts a header names.
        disposition: Content-Disposition, or None for none.
    """

    content_type: str
    body: bytes
    content_id: str | None = None
    disposition: str | None = None

    def __post_init__(self) -> None:
        if not _CONTENT_TYPE_RE.fullmatch(self.content_type):
            raise ValueError(f"invalid Content-Type {self.content_type!r}")
        if self.content_id is not None and not _CONTENT_ID_RE.fullmatch(self.content_id):
            raise ValueError(f"invalid Content-ID {self.content_id!r}")
        if self.disposition is not None and not _HEADER_VALUE_RE.fullmatch(self.disposition):
            raise ValueError(f"invalid Content-Disposition {self.disposition!r}")


def build_mixed(parts: Sequence[BodyPart], boundary: str) -> tuple[str, bytes]:
    """Packs parts into one multipart/mixed body.

    Args:
        parts: the parts in order (the SDP first: RFC 3261 UAs look for it there).
        boundary: the MIME boundary; must occur in no part.

    Returns:
        (Content-Type header value, body bytes).

    Raises:
        ValueError: no parts, an invalid boundary, or a boundary found in a part.
    """
    if not parts:
        raise ValueError("a multipart body needs at least one part")
    if not _BOUNDARY_RE.fullmatch(boundary):
        raise ValueError(f"invalid MIME boundary {boundary!r}")
    delimiter = b"--" + boundary.encode("ascii")
    crlf = b"\r\n"
    out: list[bytes] = []
    for part in parts:
        # RFC 2046 5.1.1: the boundary "must not appear inside any of the
        # encapsulated parts".
        if delimiter in part.body:
            raise ValueError(f"boundary {boundary!r} occurs in a body part")
        out += [delimiter, crlf, b"Content-Type: ", part.content_type.encode("ascii"), crlf]
        if part.content_id is not None:
            out += [b"Content-ID: <", part.content_id.encode("ascii"), b">", crlf]
        if part.disposition is not None:
            out += [b"Content-Disposition: ", part.disposition.encode("ascii"), crlf]
        # RFC 2046 5.1.1: the CRLF before a delimiter belongs to the delimiter.
        out += [crlf, part.body, crlf]
    out += [delimiter, b"--", crlf]
    return f"multipart/mixed;boundary={boundary}", b"".join(out)
