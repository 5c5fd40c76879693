"""Typed data of the routing layer: who calls, from where, and what the gateway decides.

Everything here is a frozen, slotted, keyword-only dataclass or a ``StrEnum`` whose
values are the tokens used in the sites file, the database and the logs, so one
spelling travels from a CSV cell to a ``X-Voipgw-Class`` header unchanged.

The rule the routing layer implements is the IMPORTANT NOTICE of the operator's
delivery terms: "VoIP calls made in the registered office address are routed to
nearest Emergency service centre. VoIP calls in nomadic use made with Mobile App or
Softphone outside registered office address are NOT routed to nearest Emergency
service centre." A call is therefore classified :attr:`CallClass.OFFICE` (at a
registered site: its civic address is known and is sent as PIDF-LO) or
:attr:`CallClass.NOMADIC` (anywhere else: the gateway does not know where the caller
is and must not pretend it does).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum

from routing.device_location import DeviceLocationReading
from routing.geolocation import GeolocationRouting

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# E.164: "+" then at most 15 digits, no leading zero in the country code (ITU-T E.164).
E164_RE = re.compile(r"\+[1-9][0-9]{1,14}")


class CustomerState(StrEnum):
    """Contract state of a customer (delivery terms section 13)."""

    ACTIVE = "active"
    CLOSED = "closed"
    SUSPENDED = "suspended"
    BARRED = "barred"
    FRAUD_LOCKED = "fraud-locked"


class Language(StrEnum):
    """Language of prompts and notices for a customer (Finland: fi, sv; or en)."""

    FI = "fi"
    SV = "sv"
    EN = "en"


class NetworkKind(StrEnum):
    """What a network registered for a site means for the caller's location."""

    OFFICE_LAN = "office-lan"
    """Addresses inside the office (routed directly, no NAT)."""
    TRUSTED_NAT = "trusted-nat"
    """The office's public NAT address(es): traffic from there left the office LAN."""
    VPN_POOL = "vpn-pool"
    """Addresses handed to remote VPN clients: the caller may be anywhere, NOT on-site."""


class Presentation(StrEnum):
    """Calling line identity presentation (RFC 3323 privacy when restricted)."""

    ALLOWED = "allowed"
    RESTRICTED = "restricted"


class SubscriberState(StrEnum):
    """State of one number/user (a subscriber can be barred while the customer is not)."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    BARRED = "barred"
    CLOSED = "closed"


class DeviceKind(StrEnum):
    """Kind of SIP device; decides whether an off-site call is nomadic use or a misplaced phone."""

    DESK_PHONE = "desk-phone"
    SOFTPHONE = "softphone"
    MOBILE_APP = "mobile-app"
    ATA = "ata"
    UNKNOWN = "unknown"


#: Devices that belong on a desk at a registered site; seen elsewhere they are misplaced.
FIXED_DEVICE_KINDS = frozenset({DeviceKind.DESK_PHONE, DeviceKind.ATA})


class CallClass(StrEnum):
    """Where the call comes from, as far as the gateway can vouch for it (PostgreSQL
    enum ``cdr_call_class``: the one class of a call, from routing to its CDR).

    ``unknown`` is for calls the classifier never saw (inbound calls from a trusted
    peer, calls refused before routing): their record must still be written.
    """

    OFFICE = "office"
    NOMADIC = "nomadic"
    UNKNOWN = "unknown"


class CentreUriStyle(StrEnum):
    """How an emergency centre expects the Request-URI of an emergency INVITE."""

    URN = "urn"
    """Request-URI is the service URN (RFC 5031); the centre's URI is the next hop (RFC 6881)."""
    SIP = "sip"
    """Request-URI is the centre's own SIP URI (a legacy 112 trunk)."""


#: (attribute, RFC 5139 element name) in the schema's sequence order, which the
#: PIDF-LO builder must follow (RFC 5139 section 4, civicAddress xs:sequence).
CIVIC_ELEMENTS: tuple[tuple[str, str], ...] = (
    ("country", "country"),
    ("a1", "A1"),
    ("a2", "A2"),
    ("a3", "A3"),
    ("a4", "A4"),
    ("a5", "A5"),
    ("a6", "A6"),
    ("prm", "PRM"),
    ("prd", "PRD"),
    ("rd", "RD"),
    ("sts", "STS"),
    ("pod", "POD"),
    ("pom", "POM"),
    ("rdsec", "RDSEC"),
    ("rdbr", "RDBR"),
    ("rdsubbr", "RDSUBBR"),
    ("hno", "HNO"),
    ("hns", "HNS"),
    ("lmk", "LMK"),
    ("loc", "LOC"),
    ("flr", "FLR"),
    ("nam", "NAM"),
    ("pc", "PC"),
    ("bld", "BLD"),
    ("unit", "UNIT"),
    ("room", "ROOM"),
    ("seat", "SEAT"),
    ("plc", "PLC"),
    ("pcn", "PCN"),
    ("pobox", "POBOX"),
    ("addcode", "ADDCODE"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CivicAddress:
    """A civic address with the RFC 5139 element set (PIDF-LO civicAddr).

    Empty strings mean "absent". Finnish usage: ``a1`` region (maakunta), ``a3``
    municipality (kunta, the key for emergency centre areas), ``rd`` street, ``hno``
    house number, ``hns`` staircase letter, ``pc`` postal code, ``pcn`` postal
    community name.
    """

    country: str
    """ISO 3166-1 alpha-2 code, upper case (RFC 5139 section 3.1)."""
    a1: str = ""
    a2: str = ""
    a3: str = ""
    a4: str = ""
    a5: str = ""
    a6: str = ""
    prm: str = ""
    prd: str = ""
    rd: str = ""
    sts: str = ""
    pod: str = ""
    pom: str = ""
    rdsec: str = ""
    rdbr: str = ""
    rdsubbr: str = ""
    hno: str = ""
    hns: str = ""
    lmk: str = ""
    loc: str = ""
    flr: str = ""
    nam: str = ""
    pc: str = ""
    bld: str = ""
    unit: str = ""
    room: str = ""
    seat: str = ""
    plc: str = ""
    pcn: str = ""
    pobox: str = ""
    addcode: str = ""
    lang: str = "fi"
    """Language of the text values (xml:lang on civicAddress, RFC 5139 section 3.3)."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Z]{2}", self.country):
            raise ValueError(f"country must be two upper-case letters, got {self.country!r}")

    def elements(self) -> list[tuple[str, str]]:
        """Returns the non-empty (RFC 5139 element name, value) pairs in schema order."""
        return [(name, v) for attr, name in CIVIC_ELEMENTS if (v := getattr(self, attr))]

    def one_line(self) -> str:
        """Returns a short human-readable form for logs ("Street 12 B, 02130 Espoo, FI")."""
        street = " ".join(p for p in (self.rd, self.sts, self.hno, self.hns) if p)
        town = " ".join(p for p in (self.pc, self.a3 or self.pcn) if p)
        return ", ".join(p for p in (street, town, self.country) if p)


#: Every CivicAddress field name except ``lang``, for file and database mapping.
CIVIC_FIELDS: tuple[str, ...] = tuple(a for a, _ in CIVIC_ELEMENTS)


# RFC 3261 25.1, narrowed to what a configured desk URI needs:
#   SIP-URI = "sip:" [ userinfo ] hostport uri-parameters [ headers ]
#   hostport = host [ ":" port ];  host = hostname / IPv4address / IPv6reference
# Headers ("?...") are refused: a URI from data must not add fields to a request.
_DESK_URI_RE = re.compile(
    r"(?i)sips?:"
    r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+@)?"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?"
    r"|\[[0-9A-Fa-f:.]+\])"
    r"(?::[0-9]{1,5})?"
    r"(?:;[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]+(?:=[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]*)?)*"
)


def desk_uri_problem(uri: str) -> str | None:
    """Why ``uri`` cannot be a security desk's address, or None when it can.

    Args:
        uri: a ``sip:`` or ``sips:`` URI (RFC 3261 19.1), without URI headers.

    Returns:
        The problem in a few words (for an error naming the field), or None.
    """
    if not re.match(r"(?i)sips?:", uri):
        return f"expected a sip: or sips: URI, got {uri!r}"
    if not _DESK_URI_RE.fullmatch(uri):
        return f"not a SIP URI (user@host[:port][;params], no headers): {uri!r}"
    port = re.search(r"(?<=[\]A-Za-z0-9.]):([0-9]+)(?=;|$)", uri.split("@")[-1])
    if port is not None and not 0 < int(port.group(1)) < 65536:
        return f"port out of range in {uri!r}"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Customer:
    """A business customer (one contract)."""

    id: str
    company: str
    state: CustomerState = CustomerState.ACTIVE
    language: Language = Language.FI
    security_desk: str | None = None
    """SIP URI told of each emergency call of the customer by a SIP MESSAGE (RFC 3428):
    the reception or security desk on site; None for none."""

    def __post_init__(self) -> None:
        if self.security_desk is not None:
            problem = desk_uri_problem(self.security_desk)
            if problem is not None:
                raise ValueError(f"security_desk: {problem}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteNetwork:
    """One address range registered for a site."""

    cidr: IPNetwork
    kind: NetworkKind


@dataclass(frozen=True, slots=True, kw_only=True)
class Site:
    """A registered office address of a customer and the networks that reach it."""

    id: str
    customer_id: str
    name: str
    address: CivicAddress
    networks: tuple[SiteNetwork, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class DeclaredLocation:
    """An address a subscriber declared for remote work (a home office), tied to the
    networks a call from there comes from (issue 14, item 3).

    A call of that subscriber from one of ``networks`` is office use of this
    address: routed to the centre serving it, the address sent marked as declared.
    The networks are the subscriber's own (a home connection's public address),
    never shared: a declared location applies to its subscriber only.
    """

    id: str
    sip_user: str
    """The subscriber who declared it."""
    name: str
    address: CivicAddress
    networks: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscriber:
    """A number and SIP user of a customer, with its home site (if any)."""

    e164: str
    """The number in E.164 with "+" (used as callback identity, RFC 3966 tel URI)."""
    sip_user: str
    """The SIP user name the device registers and authenticates with."""
    customer_id: str
    site_id: str | None = None
    presentation: Presentation = Presentation.ALLOWED
    display_name: str = ""
    state: SubscriberState = SubscriberState.ACTIVE

    def __post_init__(self) -> None:
        if not E164_RE.fullmatch(self.e164):
            raise ValueError(f"e164 must be '+' and 2-15 digits, got {self.e164!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Device:
    """A known device: identified by its RFC 5626 instance-id, or by a User-Agent regex.

    At least one of ``instance_id`` and ``user_agent_pattern`` is set. A pattern device
    bound to a ``sip_user`` applies to that subscriber only; an unbound one to everyone.
    """

    id: str
    kind: DeviceKind
    sip_user: str | None = None
    instance_id: str | None = None
    """``+sip.instance`` value, normalised by :func:`normalise_instance_id`."""
    user_agent_pattern: str | None = None
    """A Python regex searched (case-insensitively) in the User-Agent header."""

    def __post_init__(self) -> None:
        if self.instance_id is None and self.user_agent_pattern is None:
            raise ValueError(f"device {self.id!r}: needs instance_id or user_agent_pattern")
        if self.user_agent_pattern is not None:
            try:
                re.compile(self.user_agent_pattern)
            except re.error as exc:
                raise ValueError(f"device {self.id!r}: bad user_agent_pattern: {exc}") from None


def normalise_instance_id(value: str) -> str:
    """Normalises a ``+sip.instance`` value for comparison.

    RFC 5626 section 4.1 carries it quoted and in angle brackets
    (``"<urn:uuid:...>"``); URN comparison is case-insensitive for the NID and, for
    UUIDs, the hex digits (RFC 8141 section 3, RFC 4122 section 3).

    Args:
        value: the raw parameter value or a stored id.

    Returns:
        The bare URN in lower case.
    """
    return value.strip().strip('"').strip().removeprefix("<").removesuffix(">").lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class EmergencyCentre:
    """An emergency response centre (PSAP; in Finland a Hätäkeskus) and its area."""

    id: str
    name: str
    sip_uri: str
    """Where INVITEs for this centre go (next hop / Route)."""
    uri_style: CentreUriStyle = CentreUriStyle.SIP
    municipalities: tuple[str, ...] = ()
    """Municipality names (civic A3) the centre serves; compared case-insensitively."""
    postal_prefixes: tuple[str, ...] = ()
    """Postal code prefixes the centre serves; the longest matching prefix wins."""
    secondary_id: str | None = None
    """The centre that takes over when this one does not answer."""
    national_default: bool = False
    """Last resort for every call, and first target for nomadic emergency calls."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PresentedIdentity:
    """The identity a call arrived with: claims, until routing/callerid.py checks them.

    Numbers are as the sender wrote them (a SIP user part or tel number); the display
    name is kept apart and never read as a number (a device could otherwise smuggle
    one in front of its own URI).
    """

    from_user: str | None = None
    """The From URI's user part (SIP) or number (tel)."""
    from_host: str | None = None
    """The From SIP URI's host, kept when the gateway rewrites the From's user."""
    display_name: str = ""
    """The From display name."""
    preferred: str | None = None
    """The P-Preferred-Identity's user or number (RFC 3325 9.2), from devices."""
    asserted: str | None = None
    """The P-Asserted-Identity's user or number (RFC 3325 9.1), from trusted peers."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallContext:
    """What the gateway knows about an incoming call when it asks for a decision.

    Only ``source`` is a fact (the network delivered the packet from there, or a
    trusted edge proxy says it received it from there); Via sent-by, Contact and
    Geolocation are claims the device makes about itself and never decide the class
    of a call (RFC 3261 section 18.2.1 is why the gateway
    writes ``received=``: the sent-by is not trusted).
    """

    dialled: str
    """The Request-URI as received ("sip:112@gw;user=phone", "tel:112", "urn:service:sos")."""
    source: IPAddress
    """Address the device sent the request from: the transport source (what the
    gateway puts in Via ``received``), or, through a trusted edge proxy, the address
    that proxy received it from (gateway/edge/device_source.py)."""
    source_port: int = 0
    edge_proxy: IPAddress | None = None
    """The trusted edge proxy (``[sip] edge_proxies``) the request arrived from, whose
    word ``source`` is; None when the device sent it to the gateway itself."""
    via_sent_by: tuple[str, ...] = ()
    """Hosts of the Via sent-by values, top first (claims)."""
    contact_host: str | None = None
    """Host of the Contact URI (a claim; often a private address behind NAT)."""
    user_agent: str | None = None
    instance_id: str | None = None
    """``+sip.instance`` of the Contact (RFC 5626), raw."""
    subscriber: Subscriber | None = None
    """The authenticated caller, or None when the caller is unknown."""
    geolocation: tuple[str, ...] = ()
    """Geolocation header values the device sent (RFC 6442); never decide the class."""
    device_location: DeviceLocationReading | None = None
    """The location the device sent by value, checked (emergency calls only), or None
    when it sent none (:func:`routing.device_location.read_device_location`)."""
    geolocation_routing: GeolocationRouting | None = None
    """The device's Geolocation-Routing permission (RFC 6442 4.2), None when it sent
    no such header field (:func:`routing.geolocation.read_geolocation_routing`)."""
    call_id: str = ""
    dialled_user: str | None = None
    """The user ``dialled`` names (a SIP URI's user part, a tel URI's number), as the
    SIP parser read it; None when it names none."""
    emergency: EmergencyMatch | None = None
    """What ``dialled`` is as an emergency or test dial string, recognised once when
    the context is built (:meth:`routing.emergency.DialPlan.match`), or None."""
    presented: PresentedIdentity = PresentedIdentity()
    """Who the call says is calling (From, P-Preferred-Identity, P-Asserted-Identity)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkEntry:
    """One registered network and the site it belongs to (an entry of the network index)."""

    network: IPNetwork
    kind: NetworkKind
    site: Site


class Basis(StrEnum):
    """Why a call got its class (the first part of the reason)."""

    OFFICE = "office"
    """Source in an office LAN or trusted NAT network of the caller's customer."""
    UNKNOWN_CALLER = "unknown-caller"
    OUTSIDE = "outside"
    """Source outside every registered network."""
    VPN_POOL = "vpn-pool"
    OTHER_CUSTOMER = "other-customer"
    """Source in a network registered by another customer."""
    DECLARED = "declared"
    """Source in a network of one of the caller's declared locations (a home office)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Classification:
    """The answer of :func:`routing.classify.classify_call`.

    The facts are kept structured; :attr:`reason` renders them as one line only when
    someone reads it (a log line, a header), so classifying stays cheap.
    """

    call_class: CallClass
    site: Site | None
    """The registered site the call comes from (OFFICE only), else None."""
    device_kind: DeviceKind
    misplaced: bool = False
    """A desk phone or ATA seen outside every site of its customer."""
    basis: Basis = Basis.OUTSIDE
    declared: DeclaredLocation | None = None
    """The caller's declared location the call comes from (OFFICE by declaration)."""
    network: NetworkEntry | None = None
    """The longest registered network containing the source, if any."""
    device_source: str = ""
    """How the device kind was found: "instance-id", "device-pattern", "user-agent" or ""."""
    device_id: str | None = None
    ctx: CallContext | None = None
    """The call, for the reason's account of the device's own claims."""

    @property
    def reason(self) -> str:
        """Human-readable account of the decision, for logs and ``X-Voipgw-Reason``."""
        return render_reason(self)


def render_reason(c: Classification) -> str:
    """Renders a classification's facts as one line (see :attr:`Classification.reason`).

    It lives with the facts it renders, not with the rules of :mod:`routing.classify`
    that find them, so that the dependency runs one way (classify imports model).

    Args:
        c: the classification.

    Returns:
        E.g. "source 127.0.10.5 in office-lan 127.0.10.0/24 of site setera-espoo
        (setera); desk-phone by instance-id (device alice-desk)".
    """
    ctx = c.ctx
    entry = c.network
    source = str(ctx.source) if ctx is not None else "?"
    if ctx is not None and ctx.edge_proxy is not None:
        source = f"{source} (through edge proxy {ctx.edge_proxy})"
    if entry is not None:
        where = (
            f"source {source} in {entry.kind.value} {entry.network} of site {entry.site.id}"
            f" ({entry.site.customer_id})"
        )
    else:
        where = f"source {source} outside every registered site network"
    if c.basis is Basis.UNKNOWN_CALLER:
        head = f"unknown caller; {where}"
    elif c.basis is Basis.DECLARED and c.declared is not None:
        head = (
            f"source {source} in a network of declared location {c.declared.id}"
            f" ({c.declared.name}) of {c.declared.sip_user}"
        )
    elif c.basis is Basis.OFFICE:
        sub = ctx.subscriber if ctx is not None else None
        visiting = ""
        if c.site is not None and sub is not None and sub.site_id not in (None, c.site.id):
            visiting = f" (visiting; home site {sub.site_id})"
        head = where + visiting
    else:
        what = (
            f"{c.device_kind.value} outside its sites (misplaced)" if c.misplaced else "nomadic use"
        )
        if c.basis is Basis.VPN_POOL:
            where += ", a VPN pool is not on-site"
        elif c.basis is Basis.OTHER_CUSTOMER and ctx is not None and ctx.subscriber is not None:
            where += f", not the caller's customer {ctx.subscriber.customer_id}"
        head = f"{what}; {where}"
    ua = ctx.user_agent if ctx is not None else None
    if c.device_source == "instance-id":
        device = f"{c.device_kind.value} by instance-id (device {c.device_id})"
    elif c.device_source == "device-pattern" and ua:
        device = f"{c.device_kind.value} by device pattern for User-Agent {_show(ua)}"
    elif c.device_kind is not DeviceKind.UNKNOWN and ua:
        device = f"{c.device_kind.value} by User-Agent {_show(ua)}"
    elif ua:
        device = f"unknown device (User-Agent {_show(ua)})"
    else:
        device = "unknown device (no User-Agent)"
    return f"{head}; {device}{_claims(ctx) if ctx is not None else ''}"


def _claims(ctx: CallContext) -> str:
    """Notes the device's own claims about its location, which do not count."""
    notes = []
    claimed = [h for h in (*ctx.via_sent_by, ctx.contact_host or "") if _is_private(h)]
    if claimed:
        notes.append(f"private Via/Contact {', '.join(sorted(set(claimed)))} ignored")
    if ctx.geolocation:
        notes.append(f"device sent Geolocation {_show(ctx.geolocation[0])} (not used to classify)")
    return "".join(f"; {n}" for n in notes)


@functools.lru_cache(maxsize=1024)
def _is_private(host: str) -> bool:
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return addr.is_private


def _show(text: str, limit: int = 60) -> str:
    """Quotes untrusted header text for a reason line (ASCII, no CR/LF, bounded)."""
    shown = ascii(text[:limit])
    return shown if len(text) <= limit else shown[:-1] + "...'"


class EmergencyKind(StrEnum):
    """Whether a dialled string is a real emergency call or a test call."""

    EMERGENCY = "emergency"
    TEST = "test"


@dataclass(frozen=True, slots=True, kw_only=True)
class EmergencyMatch:
    """A recognised emergency (or emergency test) dial string."""

    kind: EmergencyKind
    service_urn: str
    """RFC 5031 service URN, lower case ("urn:service:sos", "urn:service:sos.fire", ...)."""
    number: str | None = None
    """The emergency or test number dialled, without prefixes ("112"), or None for a URN."""
    form: str = ""
    """How it was dialled: "digits", "sip", "tel" or "urn" (for logs)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Location:
    """The location the gateway conveys with an emergency call (input to PIDF-LO)."""

    address: CivicAddress | None
    """The registered address; None when the gateway does not know where the caller is."""
    verified: bool
    """True only for an office call (network at a registered site of the caller's customer)."""
    method: str = "Manual"
    """IANA method token (RFC 4119 section 9): "Manual" = provisioned by the operator."""
    note: str = ""
