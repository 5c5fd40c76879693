"""Build REGISTER requests and answer our challenges like a client would."""

from __future__ import annotations

import itertools
from pathlib import Path

from gateway.b2bua.events import ServiceRequest
from gateway.registrar.config import RegistrarConfig
from gateway.registrar.digest import Algorithm, compute_ha1, digest_response
from gateway.sip.events import Endpoint, TransactionKey
from gateway.sip.headers import format_auth, parse_auth
from gateway.sip.message import Request, Response
from gateway.sip.parser import parse_message

RFC4475 = Path(__file__).parents[2] / ".." / "shared" / "conformance" / "rfc4475"
REALM = "voip.example.fi"
SECRET = b"registrar-test-secret-0123456789"
SOURCE = Endpoint("UDP", "127.0.0.1", 40000)

_branches = itertools.count(1)


class Clock:
    """A wall clock the test advances by hand (``clock.now += 31``)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def config(**overrides: object) -> RegistrarConfig:
    """A registrar config; these tests offer SHA-256 first and refuse RFC 2069
    credentials unless they say otherwise (the product's defaults, MD5 alone and RFC
    2069 accepted, are for interoperability: tests/registrar/test_auth_failures.py)."""
    options: dict[str, object] = {
        "realm": REALM,
        "secret": SECRET,
        "min_expires": 60,
        "algorithms": (Algorithm.SHA_256, Algorithm.MD5),
        "accept_rfc2069": False,
    }
    options.update(overrides)
    return RegistrarConfig(**options)  # type: ignore[arg-type]


def register(
    user: str = "alice",
    *,
    domain: str = REALM,
    contacts: tuple[str, ...] = ("<sip:alice@192.0.2.10:5070>",),
    expires: int | None = 600,
    call_id: str = "call-1",
    cseq: int = 1,
    extra: tuple[tuple[str, str], ...] = (),
    via: str = "192.0.2.10:5070",
) -> Request:
    lines = [
        f"REGISTER sip:{domain} SIP/2.0",
        f"Via: SIP/2.0/UDP {via};branch=z9hG4bK{next(_branches)}",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{domain}>;tag=f1",
        f"To: <sip:{user}@{domain}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        *(f"Contact: {c}" for c in contacts),
        *(f"{n}: {v}" for n, v in extra),
    ]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    data = ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def load_rfc4475(name: str) -> Request:
    message = parse_message((RFC4475 / name).read_bytes())
    assert isinstance(message, Request)
    return message


def event(request: Request, source: Endpoint = SOURCE) -> ServiceRequest:
    via = request.headers.get("Via") or ""
    return ServiceRequest(
        request=request,
        source=source,
        transaction=TransactionKey(via, "", "REGISTER", True),
    )


def authorize(
    request: Request,
    challenge: Response,
    *,
    username: str = "alice",
    password: str = "s3cret",
    algorithm: str = "SHA-256",
    nc: int = 1,
) -> Request:
    """Returns a copy of ``request`` with credentials answering ``challenge``."""
    for value in challenge.headers.get_lines("WWW-Authenticate"):
        _, params = parse_auth(value)
        if params["algorithm"] == algorithm:
            break
    else:
        raise AssertionError(f"no {algorithm} challenge in {challenge.headers!r}")
    algo = Algorithm(algorithm)
    ha1 = compute_ha1(username, params["realm"], password, algo)
    response = digest_response(
        ha1=ha1,
        algorithm=algo,
        method=request.method,
        uri=request.uri,
        nonce=params["nonce"],
        qop="auth",
        nc=f"{nc:08x}",
        cnonce="c0ffee",
    )
    out = request.copy()
    # A new request, so a new transaction: with the old branch the transaction layer
    # would take it for a retransmission and resend the 401.
    via = out.headers.get("Via") or ""
    out.headers.set("Via", via.split(";branch=")[0] + f";branch=z9hG4bK{next(_branches)}")
    out.headers.set(
        "Authorization",
        format_auth(
            "Digest",
            {
                "username": username,
                "realm": params["realm"],
                "nonce": params["nonce"],
                "uri": request.uri,
                "response": response,
                "algorithm": algorithm,
                "qop": "auth",
                "nc": f"{nc:08x}",
                "cnonce": "c0ffee",
                "opaque": params["opaque"],
            },
        ),
    )
    return out


def header_shape(response: Response) -> list[tuple[str, str]]:
    """Headers with the per-request or random parts (branch, To tag, nonce) blanked."""
    shape = []
    for name, value in response.headers:
        if name == "To":
            value = value.split(";tag=")[0]
        if name == "Via":
            value = value.split(";branch=")[0]
        if name == "WWW-Authenticate":
            value = "nonce-independent:" + str(sorted(k for k in parse_auth(value)[1]))
        shape.append((name, value))
    return shape
