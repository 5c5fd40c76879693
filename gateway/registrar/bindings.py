"""REGISTER processing as pure functions: RFC 3261 section 10.3 steps 5 to 8.

Theory of operation
-------------------

:func:`parse_register` reads a REGISTER into a :class:`RegisterUpdate`: the canonical
address-of-record (step 5), and either the wildcard or each Contact with the expiry it
asks for (step 6). Syntax problems raise :class:`RegisterError` with the status to
answer (400, 416); they are checked *before* authentication because they reveal nothing
about users (RFC 4475 3.3.6 unksm2: a To that is not a SIP URI gets a 400).

:func:`check_min_expires` applies the registrar's minimum (step 6, 423 Interval Too
Brief) once the request is authenticated.

:func:`plan_update` is step 7: given the AoR's current bindings and the update, it
decides which bindings to delete, update and insert, or raises :class:`RegisterError`
when the Call-ID/CSeq rules say the request is out of order. The store runs the plan in
one transaction under a per-AoR lock, so the decision sees a consistent set.

:func:`format_contact` renders a binding for the 200 OK (step 8): the contact URI in
``<>`` exactly as registered (escaped URI headers and URI parameters stay inside the
URI, RFC 4475 3.1.2.x regescrt/cparam02), its header parameters after it (cparam01),
and ``expires`` with the seconds left.

Path (RFC 3327): :func:`parse_register` also reads the Path header fields an edge
proxy (Kamailio's path module) put in front of the REGISTER, and whether the UA said
``Supported: path``; the binding keeps the vector (:mod:`gateway.registrar.path`
routes calls through it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final

from gateway.sip.errors import ParseError
from gateway.sip.events import Endpoint
from gateway.sip.headers import (
    NameAddress,
    all_contacts,
    parse_contacts,
    parse_cseq,
    parse_int_header,
    parse_name_address,
    parse_option_tags,
    quote_string,
    unquote_string,
)
from gateway.sip.message import Request
from gateway.sip.uri import Params, SipUri, Uri, parse_uri, uri_equal

#   qvalue  =  ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )     (RFC 3261 25.1)
_QVALUE_RE: Final = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
#   reg-id  =  "reg-id" EQUAL 1*DIGIT ; 1 to (2^31 - 1)            (RFC 5626 4.2)
MAX_REG_ID: Final = 2**31 - 1
#: RFC 3261 10.3 step 6: 423 is allowed only for intervals below one hour.
ONE_HOUR: Final = 3600

#: Header parameters the registrar interprets; the others are stored as they came.
_INTERPRETED: Final = frozenset({"expires"})


class RegisterError(Exception):
    """A REGISTER the registrar answers with an error status.

    Args:
        status: the status code.
        reason: the reason phrase (None: the RFC 3261 default).
        headers: extra header fields of the response (Min-Expires for 423).
    """

    def __init__(
        self, status: int, reason: str | None = None, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        super().__init__(f"{status} {reason or ''}".strip())
        self.status = status
        self.reason = reason
        self.headers = tuple(headers)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpiresPolicy:
    """Registration interval bounds, in seconds.

    Attributes:
        min_expires: shortest interval accepted (423 below it); at most 3600.
        max_expires: longest interval granted (longer requests are shortened).
        default_expires: interval when the request names none (RFC 3261 10.3 step 6
            suggests 3600).
    """

    min_expires: int = 60
    max_expires: int = 7200
    default_expires: int = 3600

    def __post_init__(self) -> None:
        if not 1 <= self.min_expires <= ONE_HOUR:
            raise ValueError("min_expires must be 1..3600 (RFC 3261 10.3 step 6)")
        if not self.min_expires <= self.default_expires <= self.max_expires:
            raise ValueError("need min_expires <= default_expires <= max_expires")


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactUpdate:
    """One Contact of a REGISTER.

    Attributes:
        uri: the contact URI text, as received (escaped headers and URI params kept).
        display_name: the display name, or None.
        params: header parameters other than ``expires``, in order.
        expires: requested interval in seconds (0 removes the binding).
        q: the ``q`` preference 0..1, or None.
        instance_id: RFC 5626 ``+sip.instance`` value unquoted ("<urn:uuid:...>"), or None.
        reg_id: RFC 5626 ``reg-id`` (only with an instance id), or None.
    """

    uri: str
    display_name: str | None = None
    params: Params = ()
    expires: int
    q: float | None = None
    instance_id: str | None = None
    reg_id: int | None = None

    @property
    def params_text(self) -> str:
        """The header parameters as written after the URI (``;q=0.5;+sip.instance=..``)."""
        return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in self.params)


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterUpdate:
    """What one REGISTER asks for.

    Attributes:
        aor: canonical address-of-record (:func:`canonical_aor`).
        aor_uri: the To URI parsed.
        call_id: the Call-ID.
        cseq: the CSeq number.
        wildcard: ``Contact: *`` (remove every binding).
        contacts: the contacts, in request order (empty for a query or wildcard).
        user_agent: the User-Agent header, or None.
        path: the Path header field values (RFC 3327), one name-addr each as
            received, topmost (the proxy nearest the registrar) first; empty without
            Path.
        path_supported: the UA listed ``path`` in Supported (RFC 3327 5.1), so the
            200 OK may echo the Path (RFC 3261 8.2.4).
    """

    aor: str
    aor_uri: SipUri
    call_id: str
    cseq: int
    wildcard: bool = False
    contacts: tuple[ContactUpdate, ...] = ()
    user_agent: str | None = None
    path: tuple[str, ...] = ()
    path_supported: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Binding:
    """A registered contact of an address-of-record, as stored.

    Attributes:
        id: row id.
        aor: canonical address-of-record.
        contact: contact URI text as registered.
        display_name: display name of the Contact, or None.
        params: header parameters as text (``;q=0.5;+sip.instance="<urn:..>"``).
        q: preference 0..1, or None.
        instance_id: RFC 5626 instance id, or None.
        reg_id: RFC 5626 reg-id, or None.
        call_id: Call-ID of the REGISTER that last refreshed it.
        cseq: its CSeq number.
        received: where that REGISTER came from (transport view, so NATed clients
            are reached at their public address).
        user_agent: its User-Agent, or None.
        registered_at: first registration time (wall clock, aware).
        expires_at: expiry time (wall clock, aware).
        expires: seconds left when read, rounded up.
        flow_owner: ``[cluster] sip_uri`` of the instance that took the REGISTER and
            so holds the flow (NAT mapping, connection) the device is reached over;
            None for bindings from before flows had owners (migration 0700).
        path: the Path vector of the REGISTER that last refreshed it (RFC 3327),
            topmost first; empty when the device reached this instance directly
            (migration 0720).
    """

    id: int
    aor: str
    contact: str
    display_name: str | None = None
    params: str = ""
    q: float | None = None
    instance_id: str | None = None
    reg_id: int | None = None
    call_id: str
    cseq: int
    received: Endpoint
    user_agent: str | None = None
    registered_at: datetime
    expires_at: datetime
    expires: int
    flow_owner: str | None = None
    path: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdatePlan:
    """Step 7's decision for one REGISTER.

    Attributes:
        delete: ids of bindings to remove.
        update: (binding id, contact) pairs to refresh in place.
        insert: new contacts to add.
    """

    delete: tuple[int, ...] = ()
    update: tuple[tuple[int, ContactUpdate], ...] = ()
    insert: tuple[ContactUpdate, ...] = ()


def canonical_aor(uri: SipUri) -> str:
    """Returns the index of an AoR's bindings (RFC 3261 10.3 step 5).

    "The address-of-record MUST be converted to canonical form: all URI parameters
    MUST be removed (including the user-param), and any escaped characters MUST be
    converted to their unescaped form." The scheme becomes ``sip``: RFC 5630 section
    3.1.3, sip: and sips: URIs differing only in scheme name the same resource.

    Args:
        uri: the To URI (or a Request-URI being routed).

    Returns:
        ``sip:user@host[:port]``, host lower-cased.
    """
    user = uri.user_unescaped
    return f"sip:{user}@{uri.host_port}" if user else f"sip:{uri.host_port}"


def parse_register(request: Request, *, policy: ExpiresPolicy) -> RegisterUpdate:
    """Reads a REGISTER (RFC 3261 10.2 and 10.3 steps 5 and 6, syntax only).

    Args:
        request: the REGISTER.
        policy: the interval bounds (default and cap; the minimum is checked by
            :func:`check_min_expires` after authentication).

    Returns:
        The update.

    Raises:
        RegisterError: 400 (To not a SIP URI, bad Contact, Expires, q or reg-id,
            ``*`` with other contacts or a non-zero expiry), 416 (Request-URI scheme).
    """
    try:
        request_uri = parse_uri(request.uri)
    except ParseError:
        raise RegisterError(400, "Bad Request-URI") from None
    if not isinstance(request_uri, SipUri):
        # RFC 3261 8.2.2.1: a scheme the UAS does not understand gets 416.
        raise RegisterError(416)
    aor_uri = _to_uri(request)
    try:
        call_id = request.headers.get("Call-ID") or ""
        cseq = parse_cseq(request.headers.get("CSeq") or "").seq
        expires_header = request.headers.get("Expires")
        header_expires = (
            None if expires_header is None else parse_int_header(expires_header, "Expires")
        )
        contacts = all_contacts(request.headers)
        supported = [
            tag.lower()
            for line in request.headers.get_lines("Supported")
            for tag in parse_option_tags(line)
        ]
    except ParseError as exc:
        raise RegisterError(400, _reason(exc)) from None
    user_agent = request.headers.get("User-Agent")
    base = RegisterUpdate(
        aor=canonical_aor(aor_uri),
        aor_uri=aor_uri,
        call_id=call_id,
        cseq=cseq,
        user_agent=user_agent,
        path=_path_vector(request),
        path_supported="path" in supported,
    )
    if contacts == "*":
        # RFC 3261 10.3 step 6: "If the request has additional Contact fields or a
        # registration duration other than zero, the request is invalid, and the
        # server MUST return a 400 (Invalid Request)."
        if header_expires != 0:
            raise RegisterError(400, "Wildcard Contact Needs Expires 0")
        return replace(base, wildcard=True)
    default = policy.default_expires if header_expires is None else header_expires
    updates = tuple(_contact_update(c, default, policy) for c in contacts)
    return replace(base, contacts=updates)


def _path_vector(request: Request) -> tuple[str, ...]:
    #   Path       = "Path" HCOLON path-value *( COMMA path-value )
    #   path-value = name-addr *( SEMI rr-param )                     (RFC 3327 4)
    # RFC 3327 5.3: the registrar stores the values "including their ordering";
    # several Path lines are one list in order (RFC 3261 7.3.1).
    vector: list[str] = []
    for line in request.headers.get_lines("Path"):
        try:
            entries = parse_contacts(line)
        except ParseError:
            raise RegisterError(400, "Bad Path") from None
        if entries == "*":
            raise RegisterError(400, "Bad Path")
        for entry in entries:
            try:
                uri = entry.parsed_uri()
            except ParseError:
                raise RegisterError(400, "Bad Path") from None
            if not isinstance(uri, SipUri):
                # A Path URI is where calls are sent (a Route entry): SIP or SIPS.
                raise RegisterError(400, "Path Is Not A SIP URI")
            vector.append(str(entry))
    return tuple(vector)


def _to_uri(request: Request) -> SipUri:
    try:
        to = parse_name_address(request.headers.get("To") or "")
        uri: Uri = to.parsed_uri()
    except ParseError:
        raise RegisterError(400, "Bad To") from None
    if not isinstance(uri, SipUri):
        # RFC 4475 3.3.6 (unksm2): "a registrar ... rejects the request with a 400
        # Bad Request since the To header field does not contain a SIP or SIPS URI."
        raise RegisterError(400, "To Is Not A SIP URI")
    return uri


def _reason(exc: ParseError) -> str:
    # The parse error names the field; keep the phrase short and printable.
    text = str(exc).split(":", 1)[0]
    return text[:60].strip().capitalize() or "Bad Request"


def _contact_update(contact: NameAddress, default: int, policy: ExpiresPolicy) -> ContactUpdate:
    try:
        parse_uri(contact.uri)
    except ParseError:
        raise RegisterError(400, "Bad Contact URI") from None
    expires_param = contact.param("expires")
    # RFC 3261 10.2.1.1: the expires parameter overrides the Expires header field.
    requested = default if expires_param is None else int(expires_param)
    expires = min(requested, policy.max_expires) if requested else 0
    q_text = contact.param("q")
    q: float | None = None
    if q_text is not None:
        if _QVALUE_RE.fullmatch(q_text) is None:
            raise RegisterError(400, "Bad q Value")
        q = float(q_text)
    instance = contact.param("+sip.instance")
    instance_id = unquote_string(instance) if instance else None
    reg_id: int | None = None
    reg_text = contact.param("reg-id")
    if reg_text is not None and instance_id is not None:
        # RFC 5626 5.2: reg-id only means something together with +sip.instance.
        if not reg_text.isascii() or not reg_text.isdigit() or not 1 <= int(reg_text) <= MAX_REG_ID:
            raise RegisterError(400, "Bad reg-id")
        reg_id = int(reg_text)
    return ContactUpdate(
        uri=contact.uri,
        display_name=contact.display_name,
        params=tuple((n, v) for n, v in contact.params if n.lower() not in _INTERPRETED),
        expires=expires,
        q=q,
        instance_id=instance_id,
        reg_id=reg_id,
    )


def check_min_expires(update: RegisterUpdate, policy: ExpiresPolicy) -> None:
    """Rejects intervals below the registrar's minimum (RFC 3261 10.3 step 6).

    "If and only if the requested expiration interval is greater than zero AND smaller
    than one hour AND less than a registrar-configured minimum, the registrar MAY
    reject the registration with a response of 423 (Interval Too Brief)."

    Args:
        update: the parsed REGISTER.
        policy: the bounds.

    Raises:
        RegisterError: 423 with a Min-Expires header field (RFC 3261 20.23).
    """
    for contact in update.contacts:
        if 0 < contact.expires < min(policy.min_expires, ONE_HOUR):
            raise RegisterError(423, headers=(("Min-Expires", str(policy.min_expires)),))


def _same_binding(binding: Binding, contact: ContactUpdate) -> bool:
    # RFC 5626 6: with outbound, instance id and reg-id together identify the flow's
    # binding even when the contact URI changed (a NAT rebinding gave a new port).
    if (
        contact.instance_id is not None
        and contact.reg_id is not None
        and binding.instance_id == contact.instance_id
        and binding.reg_id == contact.reg_id
    ):
        return True
    # RFC 3261 10.3 step 7: "searches the list of current bindings using the URI
    # comparison rules."
    try:
        return uri_equal(parse_uri(binding.contact), parse_uri(contact.uri))
    except ParseError:
        return binding.contact == contact.uri


def _in_order(binding: Binding, update: RegisterUpdate) -> bool:
    # RFC 3261 10.3 step 7: a different Call-ID always wins; the same Call-ID must
    # come with a higher CSeq, else "the update MUST be aborted and the request fails".
    return binding.call_id != update.call_id or update.cseq > binding.cseq


def plan_update(current: Sequence[Binding], update: RegisterUpdate) -> UpdatePlan:
    """Decides how a REGISTER changes an AoR's bindings (RFC 3261 10.3 step 7).

    Args:
        current: the AoR's unexpired bindings.
        update: the parsed, authenticated REGISTER.

    Returns:
        The bindings to delete, update and insert.

    Raises:
        RegisterError: 400 when a matching binding was refreshed by a later CSeq of
            the same Call-ID (an out-of-order or replayed REGISTER; the status follows
            Kamailio's "Invalid CSeq number", as RFC 3261 names none).
    """
    if update.wildcard:
        # "If [the Call-ID] does agree, it MUST remove the binding only if the CSeq in
        # the request is higher than the value stored for that binding. Otherwise, the
        # update MUST be aborted and the request fails."
        if not all(_in_order(b, update) for b in current):
            raise RegisterError(400, "Invalid CSeq Number")
        return UpdatePlan(delete=tuple(b.id for b in current))
    delete: dict[int, None] = {}
    update_rows: dict[int, ContactUpdate] = {}
    inserts: list[ContactUpdate] = []
    for contact in update.contacts:
        match = next((b for b in current if _same_binding(b, contact)), None)
        if match is None:
            # A repeated contact in the same request replaces the earlier one.
            inserts = [c for c in inserts if not _same_new(c, contact)]
            if contact.expires > 0:
                inserts.append(contact)
            continue
        if not _in_order(match, update):
            raise RegisterError(400, "Invalid CSeq Number")
        if contact.expires == 0:
            update_rows.pop(match.id, None)
            delete[match.id] = None
        else:
            delete.pop(match.id, None)
            update_rows[match.id] = contact
    return UpdatePlan(
        delete=tuple(delete),
        update=tuple(update_rows.items()),
        insert=tuple(inserts),
    )


def _same_new(a: ContactUpdate, b: ContactUpdate) -> bool:
    if (
        a.instance_id is not None
        and a.reg_id is not None
        and (a.instance_id, a.reg_id) == (b.instance_id, b.reg_id)
    ):
        return True
    try:
        return uri_equal(parse_uri(a.uri), parse_uri(b.uri))
    except ParseError:
        return a.uri == b.uri


def format_contact(binding: Binding) -> str:
    """Renders a binding as a Contact value of the 200 OK (RFC 3261 10.3 step 8).

    Args:
        binding: the binding.

    Returns:
        ``["name"] <uri>;params;expires=N``.
    """
    display = "" if binding.display_name is None else quote_string(binding.display_name) + " "
    return f"{display}<{binding.contact}>{binding.params};expires={binding.expires}"
