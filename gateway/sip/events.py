"""Events the transaction layer hands to the transaction user (the B2BUA).

Each is a frozen value. Which event a received message becomes is decided by
:mod:`gateway.sip.transaction_layer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gateway.sip.message import Request, Response


# __init__, __eq__ and __hash__ written out: compiled, unlike the ones dataclass()
# generates (gateway.ops.native). Endpoints and transaction keys are dict keys looked
# up on every message; the generated pair ran interpreted, a tuple built per call.
@dataclass(init=False, slots=True, eq=False)
class Endpoint:
    """A transport address of a peer or of ourselves.

    Attributes:
        transport: "UDP", "TCP" or "TLS".
        host: IP address (IPv6 without brackets).
        port: port number.
    """

    transport: Final[str]
    host: Final[str]
    port: Final[int]

    def __init__(self, transport: str, host: str, port: int) -> None:
        self.transport = transport
        self.host = host
        self.port = port

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Endpoint)
            and self.port == other.port
            and self.host == other.host
            and self.transport == other.transport
        )

    def __hash__(self) -> int:
        return hash((self.transport, self.host, self.port))

    @property
    def reliable(self) -> bool:
        """True for stream transports (RFC 3261 uses "reliable" for TCP/TLS/SCTP)."""
        return self.transport != "UDP"

    @property
    def host_port(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class SharedEndpoints:
    """One :class:`Endpoint` object per address, for what is kept long.

    Behind a proxy or a PBX every call comes from one address and answers go to one
    next hop, but each message gives its own Endpoint object; a call or a lingering
    transaction that keeps one is an object more per call to hold and for the cyclic
    garbage collector to walk. Bounded (addresses come from the network): past
    ``limit`` addresses an endpoint is returned as it came.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._shared: dict[Endpoint, Endpoint] = {}

    def get(self, endpoint: Endpoint) -> Endpoint:
        """The shared object equal to ``endpoint`` (``endpoint`` itself the first time)."""
        shared = self._shared.get(endpoint)
        if shared is None:
            shared = endpoint
            if len(self._shared) < self.limit:
                self._shared[endpoint] = endpoint
        return shared


# __init__, __eq__ and __hash__ written out, as for Endpoint.
@dataclass(init=False, slots=True, eq=False)
class TransactionKey:
    """Identifies a transaction (RFC 3261 17.1.3 / 17.2.3).

    Attributes:
        branch: Via branch (with the magic cookie) or an RFC 2543 composite key.
        sent_by: top Via sent-by "host:port" (server side), "" on the client side.
        method: request method, with ACK folded into INVITE.
        server: True for server transactions.
    """

    branch: Final[str]
    sent_by: Final[str]
    method: Final[str]
    server: Final[bool]

    def __init__(self, branch: str, sent_by: str, method: str, server: bool) -> None:
        self.branch = branch
        self.sent_by = sent_by
        self.method = method
        self.server = server

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TransactionKey)
            and self.branch == other.branch
            and self.sent_by == other.sent_by
            and self.method == other.method
            and self.server == other.server
        )

    def __hash__(self) -> int:
        # The branch alone: unique per transaction but for an INVITE's CANCEL and
        # ACK, and a str caches its hash, where a tuple of the four fields was built
        # and hashed on every lookup. __eq__ still compares all four.
        return hash(self.branch)


# __init__ written out: compiled, unlike the one dataclass() generates (gateway.ops.native)
@dataclass(init=False, slots=True, unsafe_hash=True, kw_only=True)
class RequestReceived:
    """A new request for the TU.

    Attributes:
        request: the parsed request.
        source: where it came from (the transport's view, not the Via's claim).
        transaction: the server transaction created for it; None for an ACK to a 2xx
            (which is not part of any transaction, RFC 3261 17.2.3) and other
            requests that bypass transactions.
    """

    request: Final[Request]
    source: Final[Endpoint]
    transaction: Final[TransactionKey | None]

    def __init__(
        self, *, request: Request, source: Endpoint, transaction: TransactionKey | None
    ) -> None:
        self.request = request
        self.source = source
        self.transaction = transaction


# __init__ written out: compiled, unlike the one dataclass() generates (gateway.ops.native)
@dataclass(init=False, slots=True, unsafe_hash=True, kw_only=True)
class ResponseReceived:
    """A response for one of our client transactions, or a stray 2xx to an INVITE.

    Attributes:
        response: the parsed response.
        source: where it came from.
        transaction: the client transaction it matched; None for a 2xx retransmission
            that arrived after the transaction ended (the UA core must re-ACK it).
    """

    response: Final[Response]
    source: Final[Endpoint]
    transaction: Final[TransactionKey | None]

    def __init__(
        self, *, response: Response, source: Endpoint, transaction: TransactionKey | None
    ) -> None:
        self.response = response
        self.source = source
        self.transaction = transaction


# __init__ written out: compiled, unlike the one dataclass() generates (gateway.ops.native)
@dataclass(init=False, slots=True, unsafe_hash=True, kw_only=True)
class CancelReceived:
    """A CANCEL matched a pending INVITE server transaction; 200 was already sent.

    RFC 3261 9.2: the TU should now answer the INVITE with 487.
    """

    cancel: Final[Request]
    invite_transaction: Final[TransactionKey]

    def __init__(self, *, cancel: Request, invite_transaction: TransactionKey) -> None:
        self.cancel = cancel
        self.invite_transaction = invite_transaction


# __init__ written out: compiled, unlike the one dataclass() generates (gateway.ops.native)
@dataclass(init=False, slots=True, unsafe_hash=True, kw_only=True)
class TransactionTimedOut:
    """Timer B, F (no final response) or H (no ACK) fired.

    Attributes:
        transaction: the transaction that timed out.
        request: the request that started it.
        timer: "B", "F" or "H".
    """

    transaction: Final[TransactionKey]
    request: Final[Request]
    timer: Final[str]

    def __init__(self, *, transaction: TransactionKey, request: Request, timer: str) -> None:
        self.transaction = transaction
        self.request = request
        self.timer = timer


# __init__ written out: compiled, unlike the one dataclass() generates (gateway.ops.native)
@dataclass(init=False, slots=True, unsafe_hash=True, kw_only=True)
class TransportFailed:
    """The transport could not deliver a request of a client transaction."""

    transaction: Final[TransactionKey]
    request: Final[Request]

    def __init__(self, *, transaction: TransactionKey, request: Request) -> None:
        self.transaction = transaction
        self.request = request


# __init__ written out: compiled, unlike the one dataclass() generates (gateway.ops.native)
@dataclass(init=False, slots=True, unsafe_hash=True, kw_only=True)
class TransactionTerminated:
    """A transaction reached TERMINATED and was forgotten (for bookkeeping)."""

    transaction: Final[TransactionKey]

    def __init__(self, *, transaction: TransactionKey) -> None:
        self.transaction = transaction


SipEvent = (
    RequestReceived
    | ResponseReceived
    | CancelReceived
    | TransactionTimedOut
    | TransportFailed
    | TransactionTerminated
)
