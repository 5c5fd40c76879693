"""Dialog state (RFC 3261 section 12): identity, CSeq, remote target and route set.

A dialog is pure data plus the rules that build in-dialog requests and check the
ones received. A B2BUA call holds two: the UAS dialog towards the caller (A leg) and
the UAC dialog towards the callee (B leg).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gateway.sip.errors import RemoteProtocolError
from gateway.sip.headers import NameAddress, parse_contacts, parse_cseq, parse_name_address
from gateway.sip.message import Headers, Request, Response
from gateway.sip.uri import SipUri, parse_uri


# __init__ written out: compiled, unlike the one dataclass() generates (gateway.ops.native)
@dataclass(init=False, slots=True, unsafe_hash=True)
class DialogId:
    """RFC 3261 12: "A dialog is identified [...] by a Call-ID, a local tag and a
    remote tag"."""

    call_id: Final[str]
    local_tag: Final[str]
    remote_tag: Final[str]

    def __init__(self, call_id: str, local_tag: str, remote_tag: str) -> None:
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag


# __init__ written out: compiled, unlike the one dataclass() generates (gateway.ops.native)
@dataclass(init=False, slots=True, kw_only=True)
class Dialog:
    """One side's view of a dialog.

    Attributes:
        call_id: Call-ID of the dialog.
        local_tag: our tag (From tag on requests we send).
        remote_tag: the peer's tag ("" until an early/confirmed response gives one).
        local_uri: our From value without tag parameters (name-addr text).
        remote_uri: the peer's URI (To value of our requests, without tag).
        local_cseq: last CSeq number we used.
        remote_cseq: last CSeq number the peer used (None before its first request).
        remote_target: the peer's Contact URI: Request-URI of our in-dialog requests.
        route_set: Route values for our requests, in order (Record-Route reversed
            for the UAC, as received for the UAS; RFC 3261 12.1.1 / 12.1.2).
        local_contact: our Contact value for target-refresh requests.
        confirmed: True once a 2xx established the dialog (False while early).
    """

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    local_cseq: int
    remote_cseq: int | None
    remote_target: str
    route_set: tuple[str, ...]
    local_contact: str
    confirmed: bool

    def __init__(
        self,
        *,
        call_id: str,
        local_tag: str,
        remote_tag: str,
        local_uri: str,
        remote_uri: str,
        local_cseq: int,
        remote_cseq: int | None,
        remote_target: str,
        route_set: tuple[str, ...] = (),
        local_contact: str = "",
        confirmed: bool = False,
    ) -> None:
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.local_cseq = local_cseq
        self.remote_cseq = remote_cseq
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_contact = local_contact
        self.confirmed = confirmed

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def as_uas(
        cls, request: Request, *, local_tag: str, local_contact: str, confirmed: bool = False
    ) -> Dialog:
        """Builds the dialog a UAS creates when it answers a request (RFC 3261 12.1.1).

        "The route set MUST be set to the list of URIs in the Record-Route header
        field from the request, taken in order [...] The remote target MUST be set
        to the URI from the Contact header field of the request."

        Raises:
            RemoteProtocolError: the request has no usable Contact (RFC 3261 8.1.1.8
                requires one in a dialog-creating request).
        """
        headers = request.headers
        from_ = parse_name_address(headers.get("From") or "")
        to = parse_name_address(headers.get("To") or "")
        cseq = parse_cseq(headers.get("CSeq") or "")
        return cls(
            call_id=headers.get("Call-ID") or "",
            local_tag=local_tag,
            remote_tag=from_.tag or "",
            local_uri=_bare(to),
            remote_uri=_bare(from_),
            local_cseq=0,
            remote_cseq=cseq.seq,
            remote_target=_contact_uri(headers),
            route_set=tuple(headers.values("Record-Route")),
            local_contact=local_contact,
            confirmed=confirmed,
        )

    @classmethod
    def as_uac(cls, request: Request, response: Response) -> Dialog:
        """Builds the dialog a UAC creates from a 101-299 response (RFC 3261 12.1.2).

        "The route set MUST be set to the list of URIs in the Record-Route header
        field from the response, taken in reverse order [...] The remote target
        MUST be set to the URI from the Contact header field of the response."
        """
        req_headers = request.headers
        from_ = parse_name_address(req_headers.get("From") or "")
        to = parse_name_address(response.headers.get("To") or "")
        cseq = parse_cseq(req_headers.get("CSeq") or "")
        return cls(
            call_id=req_headers.get("Call-ID") or "",
            local_tag=from_.tag or "",
            remote_tag=to.tag or "",
            local_uri=_bare(from_),
            remote_uri=_bare(to),
            local_cseq=cseq.seq,
            remote_cseq=None,
            remote_target=_contact_uri(response.headers, default=request.uri),
            route_set=tuple(reversed(response.headers.values("Record-Route"))),
            local_contact=req_headers.get("Contact") or "",
            confirmed=200 <= response.status < 300,
        )

    def create_request(self, method: str, *, cseq: int | None = None) -> Request:
        """Builds an in-dialog request (RFC 3261 12.2.1.1), without Via.

        The CSeq increments for every method but ACK and CANCEL, which reuse the
        number of the request they refer to (pass it as ``cseq``).
        """
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        headers = Headers()
        headers.add("Max-Forwards", "70")
        headers.add("From", _with_tag(self.local_uri, self.local_tag))
        headers.add("To", _with_tag(self.remote_uri, self.remote_tag))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{cseq} {method}")
        uri = self.remote_target
        routes = list(self.route_set)
        if routes and not _is_loose(routes[0]):
            # 12.2.1.1 strict routing: the first route becomes the Request-URI and
            # the remote target goes to the end of the Route list.
            uri = parse_name_address(routes[0]).uri
            routes = [*routes[1:], f"<{self.remote_target}>"]
        for route in routes:
            headers.add("Route", route)
        if self.local_contact and method in ("INVITE", "UPDATE", "SUBSCRIBE", "REFER"):
            headers.add("Contact", self.local_contact)
        return Request(method=method, uri=uri, headers=headers)

    def check_remote_request(self, request: Request) -> None:
        """Validates and records the CSeq of a request from the peer (RFC 3261 12.2.2).

        "If the remote sequence number was not empty, but the sequence number of the
        request is lower than the remote sequence number, the request is out of
        order and MUST be rejected with a 500 (Server Internal Error) response."

        Raises:
            RemoteProtocolError: with status_hint 500 when out of order.
        """
        cseq = parse_cseq(request.headers.get("CSeq") or "")
        if request.method in ("ACK", "CANCEL"):
            return
        if self.remote_cseq is not None and cseq.seq < self.remote_cseq:
            raise RemoteProtocolError(
                f"CSeq {cseq.seq} lower than {self.remote_cseq}", status_hint=500
            )
        if self.remote_cseq is None or cseq.seq > self.remote_cseq:
            self.remote_cseq = cseq.seq

    def refresh_target(self, message: Request | Response) -> None:
        """Updates the remote target from a target-refresh request or its 2xx (12.2)."""
        contact = _contact_uri(message.headers, default="")
        if contact:
            self.remote_target = contact

    def confirm(self, response: Response) -> None:
        """Moves an early dialog to confirmed on a 2xx (RFC 3261 13.2.2.4: "the route
        set for the dialog MUST be recomputed based on the 2xx response")."""
        self.confirmed = True
        self.route_set = tuple(reversed(response.headers.values("Record-Route")))
        self.refresh_target(response)


def _contact_uri(headers: Headers, default: str | None = None) -> str:
    value = headers.get("Contact")
    if value is not None:
        contacts = parse_contacts(value)
        if isinstance(contacts, list) and contacts:
            return contacts[0].uri
    if default is not None:
        return default
    raise RemoteProtocolError("dialog-creating message without Contact", status_hint=400)


def _with_tag(name_addr: str, tag: str) -> str:
    return f"{name_addr};tag={tag}" if tag else name_addr


def _is_loose(route: str) -> bool:
    uri = parse_uri(parse_name_address(route).uri)
    return not isinstance(uri, SipUri) or any(name.lower() == "lr" for name, _ in uri.params)


def _bare(address: NameAddress) -> str:
    """The name-addr without header parameters (the tag is kept separately)."""
    return str(NameAddress(address.display_name, address.uri))
