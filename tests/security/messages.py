"""Raw SIP requests for guard tests (bytes as they arrive, never parsed first)."""

from __future__ import annotations

import itertools

_counter = itertools.count(1)


def request(
    method: str = "INVITE",
    uri: str = "sip:0501234567@gw.example.fi",
    *,
    to: str | None = None,
    user_agent: str | None = "Yealink SIP-T46S 66.86.0.15",
    extra: tuple[str, ...] = (),
    compact: bool = False,
) -> bytes:
    """One request with fresh Call-ID and branch; ``to`` is the whole To value."""
    n = next(_counter)
    to_value = to if to is not None else f"<{uri}>"
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{n}",
        "Max-Forwards: 70",
        f"From: <sip:alice@gw.example.fi>;tag=a{n}",
        f"{'t' if compact else 'To'}: {to_value}",
        f"Call-ID: c{n}@192.0.2.10",
        f"CSeq: 1 {method}",
        *([f"User-Agent: {user_agent}"] if user_agent is not None else []),
        *extra,
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def response(status: int = 200, method: str = "INVITE") -> bytes:
    return (
        f"SIP/2.0 {status} Whatever\r\n"
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx\r\n"
        "From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: r\r\n"
        f"CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
