"""Settings of the routing layer, read from the ``[routing]`` TOML table.

Example (every key optional; these are the defaults unless marked)::

    [routing]
    default_next_hop = "sip:127.0.0.1:5080"      # required for ordinary calls
    nomadic_policy = "announce-then-route"       # or "announce-and-end", "route"
    resource_priority = "esnet.1"                # RFC 7135; "" sends none
    notification_webhook = "https://..."         # optional, told of every emergency call
    test_route = "sip:echo@127.0.0.1:5099"       # where emergency TEST calls go; optional
    max_call_duration = 14400                    # seconds from answer; default: no limit

    [routing.max_call_duration_by_customer]      # per-customer override (0: no limit)
    acme = 3600

    [routing.emergency]
    numbers = ["112"]                            # add "911", "999" where wanted
    outside_line_prefixes = ["0", "9"]           # PBX habits: 0112 and 9112 are 112
    country_codes = ["358"]                      # tel:+358112 is 112 (see emergency.py)
    test_numbers = []                            # e.g. ["10112"]: a TEST call, not 112

    [routing.provider]                           # RFC 7852 ProviderInfo (PIDF-LO, Call-Info)
    name = "Setera Communications Oy"
    id = "setera.fi"                             # a domain name
    contact = "tel:+358201500800"                # sip:, sips: or tel:
    languages = ["fi"]                           # ISO 639-1: what the operator's staff speak

    [routing.additional_data]                    # RFC 7852 blocks on emergency INVITEs
    enabled = true
    subscriber_info = "send"                     # or "unless-restricted", "never"

    [routing.location]                           # the device's own location (RFC 6442)
    office = "network-first"                     # which goes first to the centre
    nomadic = "device-first"
    max_device_pidf_bytes = 8192                 # larger device PIDF-LOs are ignored
    [routing.location.customers.setera]          # per customer, either key
    office = "device-first"

    [routing.caller_id]                          # routing/callerid.py; OPERATIONS.md
    outbound = "replace"                         # or "reject": a number the customer does not hold
    outbound_reject_status = 403
    international_finnish = "remove"             # or "block": +358 from an international peer
    international_block_status = 403

    [routing.devices]                            # User-Agent regexes, case-insensitive
    desk_phone = "Yealink|Polycom|Cisco|snom|Grandstream GXP|Fanvil|Gigaset"
    softphone = "Zoiper|Linphone|MicroSIP|baresip|Bria|X-Lite|Jitsi|PhonerLite"
    mobile_app = "iOS|Android|Setera Mobile|Groundwire|Acrobits"
    ata = "Grandstream HT|Cisco ATA|Linksys PAP|SPA[0-9]{3}|OBi"
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from routing.configfields import ConfigError, Table
from routing.decision import LocationPrecedence
from routing.device_location import DEFAULT_MAX_PIDF_BYTES, MAX_BODY_BYTES
from routing.model import DeviceKind

_T = TypeVar("_T")


class NomadicPolicy(StrEnum):
    """What to do with an emergency call the gateway cannot place at a registered site."""

    ANNOUNCE_THEN_ROUTE = "announce-then-route"
    """Play the warning ("use a mobile phone"), then route to the national default."""
    ANNOUNCE_AND_END = "announce-and-end"
    """Play the warning and end the call."""
    ROUTE = "route"
    """Route to the national default without a warning."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EmergencyConfig:
    """How emergency dial strings are recognised (see :mod:`routing.emergency`)."""

    numbers: tuple[str, ...] = ("112",)
    outside_line_prefixes: tuple[str, ...] = ("0", "9")
    country_codes: tuple[str, ...] = ("358",)
    test_numbers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("numbers", "outside_line_prefixes", "country_codes", "test_numbers"):
            for value in getattr(self, name):
                if not value.isdigit() or not value.isascii():
                    raise ValueError(f"{name}: expected digits only, got {value!r}")
        if not self.numbers:
            raise ValueError("numbers: at least one emergency number is required")
        if clash := set(self.numbers) & set(self.test_numbers):
            raise ValueError(f"test_numbers: {sorted(clash)} are also emergency numbers")

    @classmethod
    def from_table(cls, table: Table) -> EmergencyConfig:
        """Reads ``[routing.emergency]``.

        Args:
            table: the table view.

        Returns:
            The settings.

        Raises:
            ConfigError: naming the bad field.
        """
        values = {
            name: table.str_list(name, getattr(cls(), name))
            for name in ("numbers", "outside_line_prefixes", "country_codes", "test_numbers")
        }
        table.reject_unknown()
        try:
            return cls(**values)
        except ValueError as exc:
            name, _, problem = str(exc).partition(": ")
            raise ConfigError(table.field(name), problem) from None


DEFAULT_DEVICE_PATTERNS: tuple[tuple[DeviceKind, str], ...] = (
    # Order matters only where one User-Agent matches two kinds: ATAs from desk-phone
    # vendors ("Grandstream HT", "Cisco ATA") must be tried before the vendor name.
    (DeviceKind.ATA, r"Grandstream HT|Cisco ATA|Linksys PAP|SPA[0-9]{3}\b|OBi[0-9]"),
    (DeviceKind.MOBILE_APP, r"Setera Mobile|Groundwire|Acrobits|\biOS\b|\bAndroid\b"),
    (DeviceKind.SOFTPHONE, r"Zoiper|Linphone|MicroSIP|baresip|Bria|X-Lite|Jitsi|PhonerLite"),
    (DeviceKind.DESK_PHONE, r"Yealink|Polycom|Poly\b|Cisco|snom|Grandstream|Fanvil|Gigaset"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DevicePatterns:
    """User-Agent regexes per device kind, tried in order; the first match wins."""

    patterns: tuple[tuple[DeviceKind, str], ...] = DEFAULT_DEVICE_PATTERNS
    _compiled: tuple[tuple[DeviceKind, re.Pattern[str]], ...] = field(
        default=(), init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        compiled = []
        for kind, pattern in self.patterns:
            try:
                compiled.append((kind, re.compile(pattern, re.IGNORECASE)))
            except re.error as exc:
                raise ValueError(f"{kind.value}: bad regex: {exc}") from None
        object.__setattr__(self, "_compiled", tuple(compiled))

    def match(self, user_agent: str) -> DeviceKind | None:
        """Returns the kind of the first listed pattern found in ``user_agent``, or None.

        Args:
            user_agent: the User-Agent header value.

        Returns:
            The device kind, or None when no pattern matches.
        """
        for kind, regex in self._compiled:
            if regex.search(user_agent):
                return kind
        return None

    @classmethod
    def from_table(cls, table: Table) -> DevicePatterns:
        """Reads ``[routing.devices]``: keys desk_phone, softphone, mobile_app, ata.

        A key that is present replaces that kind's default pattern; ``""`` disables it.

        Raises:
            ConfigError: naming the bad field.
        """
        defaults = dict(DEFAULT_DEVICE_PATTERNS)
        result = []
        for kind, _ in DEFAULT_DEVICE_PATTERNS:
            key = kind.value.replace("-", "_")
            pattern = table.str(key, defaults[kind])
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(table.field(key), f"bad regex: {exc}") from None
            if pattern:
                result.append((kind, pattern))
        table.reject_unknown()
        return cls(patterns=tuple(result))


#: RFC 7852 4.1.7 ContactURI: "a SIP URI, tel URI, or sips URI" the centre can call.
_CONTACT_URI_RE = re.compile(r"(?i)(sips?:\S+@?\S*|tel:\+?[0-9][0-9().-]*)")
#: RFC 7852 4.1.4 ProviderIDSeries "domain": the ID is a fully qualified domain name.
_DOMAIN_RE = re.compile(r"(?i)(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
#: RFC 7852 4.1.8 Language: "alpha 2-letter language codes from ISO 639-1".
_LANGUAGE_RE = re.compile(r"[a-z]{2}")


class OutboundCallerId(StrEnum):
    """What to do with a call from a device presenting a number its customer does not hold."""

    REPLACE = "replace"
    """Assert the subscriber's own number instead, and say so (header, CDR)."""
    REJECT = "reject"
    """Refuse the call with ``outbound_reject_status``."""


class InternationalFinnish(StrEnum):
    """Regulation 28's two options for a call from abroad presenting a Finnish number."""

    REMOVE = "remove"
    """Deliver the call with the number removed and presentation marked."""
    BLOCK = "block"
    """Refuse the call with ``international_block_status``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallerIdConfig:
    """The caller-ID policy (``[routing.caller_id]``; routing/callerid.py applies it)."""

    outbound: OutboundCallerId = OutboundCallerId.REPLACE
    outbound_reject_status: int = 403
    """SIP status for a refused number (RFC 3261 21.4.4 403: authorization will not help)."""
    international_finnish: InternationalFinnish = InternationalFinnish.REMOVE
    international_block_status: int = 403

    @classmethod
    def from_table(cls, table: Table) -> CallerIdConfig:
        """Reads ``[routing.caller_id]``.

        Raises:
            ConfigError: naming the bad field.
        """
        default = cls()
        outbound = table.choice(
            "outbound", tuple(p.value for p in OutboundCallerId), default.outbound
        )
        international = table.choice(
            "international_finnish",
            tuple(p.value for p in InternationalFinnish),
            default.international_finnish,
        )
        # RFC 3261 7.2: a final failure is 4xx, 5xx or 6xx.
        statuses = {
            key: table.int(key, getattr(default, key), min=400, max=699)
            for key in ("outbound_reject_status", "international_block_status")
        }
        table.reject_unknown()
        return cls(
            outbound=OutboundCallerId(outbound),
            international_finnish=InternationalFinnish(international),
            **statuses,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderInfo:
    """The operator as data provider (RFC 7852 section 4.1): in the PIDF-LO's
    provided-by and in the ProviderInfo block of every emergency INVITE."""

    name: str = "Setera Communications Oy"
    """DataProviderString: the operator's name as a centre reads it."""
    id: str = "setera.fi"
    """ProviderID, a domain name (ProviderIDSeries "domain")."""
    contact: str = "tel:+358201500800"
    """ContactURI: where the centre reaches the operator (sip:, sips: or tel:)."""
    languages: tuple[str, ...] = ("fi",)
    """Language: the languages the operator's own staff speak (ISO 639-1)."""

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("name: must not be empty")
        if not _DOMAIN_RE.fullmatch(self.id):
            raise ValueError(f"id: expected a domain name, got {self.id!r}")
        if not _CONTACT_URI_RE.fullmatch(self.contact):
            raise ValueError(f"contact: expected a sip:, sips: or tel: URI, got {self.contact!r}")
        if not self.languages:
            raise ValueError("languages: at least one language is required")
        for language in self.languages:
            if not _LANGUAGE_RE.fullmatch(language):
                raise ValueError(f"languages: expected ISO 639-1 codes, got {language!r}")

    @classmethod
    def from_table(cls, table: Table) -> ProviderInfo:
        """Reads ``[routing.provider]``.

        Raises:
            ConfigError: naming the bad field.
        """
        default = cls()
        values = {
            "name": table.str("name", default.name),
            "id": table.str("id", default.id),
            "contact": table.str("contact", default.contact),
            "languages": table.str_list("languages", default.languages),
        }
        table.reject_unknown()
        return _construct(cls, table, values)


class SubscriberInfoPolicy(StrEnum):
    """When the RFC 7852 SubscriberInfo block (who the caller is) goes to the centre."""

    SEND = "send"
    """Always for a known subscriber; ``privacyRequested`` says whether she restricts
    presentation (the centre still gets her identity, as with P-Asserted-Identity)."""
    UNLESS_RESTRICTED = "unless-restricted"
    """Only for subscribers who do not restrict presentation."""
    NEVER = "never"


@dataclass(frozen=True, slots=True, kw_only=True)
class AdditionalDataConfig:
    """RFC 7852 Additional Data on emergency INVITEs (``[routing.additional_data]``)."""

    enabled: bool = True
    """Send ProviderInfo, ServiceInfo, DeviceInfo (and SubscriberInfo) by value."""
    subscriber_info: SubscriberInfoPolicy = SubscriberInfoPolicy.SEND

    @classmethod
    def from_table(cls, table: Table) -> AdditionalDataConfig:
        """Reads ``[routing.additional_data]``.

        Raises:
            ConfigError: naming the bad field.
        """
        default = cls()
        enabled = table.bool("enabled", default.enabled)
        policy = SubscriberInfoPolicy(
            table.choice(
                "subscriber_info",
                tuple(p.value for p in SubscriberInfoPolicy),
                default.subscriber_info,
            )
        )
        table.reject_unknown()
        return cls(enabled=enabled, subscriber_info=policy)


def _construct(cls: type[_T], table: Table, values: dict[str, Any]) -> _T:
    """``cls(**values)``, its ``"field: problem"`` ValueError named in the table."""
    try:
        return cls(**values)
    except ValueError as exc:
        name, _, problem = str(exc).partition(": ")
        raise ConfigError(table.field(name), problem) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class LocationPrecedences:
    """Which location goes first for a customer's office and nomadic calls."""

    office: LocationPrecedence = LocationPrecedence.NETWORK_FIRST
    """Office calls (site or declared address): the network's, which the operator
    vouches for, first by default."""
    nomadic: LocationPrecedence = LocationPrecedence.DEVICE_FIRST
    """Nomadic calls: the network knows nothing, so the device's own first by default."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LocationConfig:
    """The ``[routing.location]`` table: device-provided locations (RFC 6442)."""

    default: LocationPrecedences = LocationPrecedences()
    customers: tuple[tuple[str, LocationPrecedences], ...] = ()
    """Customer id -> its own precedences (a tuple of pairs: hashable, frozen)."""
    max_device_pidf_bytes: int = DEFAULT_MAX_PIDF_BYTES
    """Largest device PIDF-LO forwarded, in bytes; larger ones are ignored, counted."""

    def precedence(self, customer_id: str, *, office: bool) -> LocationPrecedence:
        """The precedence for a call of ``customer_id`` ("" for an unknown caller)."""
        chosen = dict(self.customers).get(customer_id, self.default)
        return chosen.office if office else chosen.nomadic

    @classmethod
    def from_table(cls, table: Table) -> LocationConfig:
        """Reads ``[routing.location]``.

        Raises:
            ConfigError: naming the bad field.
        """
        choices = tuple(p.value for p in LocationPrecedence)
        default = _precedences(table, LocationPrecedences(), choices, whole_table=False)
        limit = table.int("max_device_pidf_bytes", DEFAULT_MAX_PIDF_BYTES, min=256,
                          max=MAX_BODY_BYTES)  # fmt: skip
        ctable = table.table("customers")
        customers = tuple(
            (customer, _precedences(ctable.table(customer), default, choices, whole_table=True))
            for customer in sorted(ctable.data)
        )
        ctable.reject_unknown()
        table.reject_unknown()
        return cls(default=default, customers=customers, max_device_pidf_bytes=limit)


def _precedences(
    table: Table, base: LocationPrecedences, choices: tuple[str, ...], *, whole_table: bool
) -> LocationPrecedences:
    office = table.choice("office", choices, base.office.value)
    nomadic = table.choice("nomadic", choices, base.nomadic.value)
    if whole_table:
        table.reject_unknown()
    return LocationPrecedences(
        office=LocationPrecedence(office), nomadic=LocationPrecedence(nomadic)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutingConfig:
    """Settings of the routing layer (the ``[routing]`` table)."""

    default_next_hop: str = "sip:127.0.0.1:5080"
    """Next hop for ordinary calls (a SIP URI)."""
    nomadic_policy: NomadicPolicy = NomadicPolicy.ANNOUNCE_THEN_ROUTE
    resource_priority: str = "esnet.1"
    """Resource-Priority for emergency calls (RFC 7135 "esnet" namespace); "" for none."""
    notification_webhook: str | None = None
    test_route: str | None = None
    """Where emergency TEST calls (urn:service:test.sos, test numbers) go; None rejects."""
    emergency: EmergencyConfig = EmergencyConfig()
    devices: DevicePatterns = DevicePatterns()
    provider: ProviderInfo = ProviderInfo()
    max_call_duration: float | None = None
    """Seconds after the answer when the gateway ends an ordinary call; None: no
    limit. Never applied to emergency calls."""
    max_call_duration_by_customer: dict[str, float] = field(default_factory=dict)
    """Per-customer override of ``max_call_duration`` (customer id -> seconds; 0 for
    no limit)."""

    def max_call_duration_for(self, customer_id: str) -> float | None:
        """The maximum duration of an ordinary call billed to ``customer_id``."""
        limit = self.max_call_duration_by_customer.get(customer_id, self.max_call_duration)
        return limit or None

    additional_data: AdditionalDataConfig = AdditionalDataConfig()
    location: LocationConfig = LocationConfig()
    caller_id: CallerIdConfig = CallerIdConfig()

    @classmethod
    def from_table(cls, table: Table) -> RoutingConfig:
        """Reads the ``[routing]`` table.

        Args:
            table: the table view (``Table(data["routing"], "routing")``).

        Returns:
            The settings.

        Raises:
            ConfigError: naming the first bad field ("routing.emergency.numbers[0]: ...").
        """
        default = cls()
        next_hop = table.str("default_next_hop", default.default_next_hop)
        _check_uri(table, "default_next_hop", next_hop)
        policy = NomadicPolicy(
            table.choice(
                "nomadic_policy", tuple(p.value for p in NomadicPolicy), default.nomadic_policy
            )
        )
        rp = table.str("resource_priority", default.resource_priority)
        if rp and not re.fullmatch(r"[A-Za-z0-9-]+\.[A-Za-z0-9-]+", rp):
            raise ConfigError(
                table.field("resource_priority"), f"expected namespace.priority, got {rp!r}"
            )
        webhook = table.opt_str("notification_webhook")
        if webhook is not None and not webhook.startswith(("http://", "https://")):
            raise ConfigError(
                table.field("notification_webhook"), f"expected an http(s) URL, got {webhook!r}"
            )
        test_route = table.opt_str("test_route")
        if test_route is not None:
            _check_uri(table, "test_route", test_route)
        emergency = EmergencyConfig.from_table(table.table("emergency"))
        devices = DevicePatterns.from_table(table.table("devices"))
        location = LocationConfig.from_table(table.table("location"))
        provider = ProviderInfo.from_table(table.table("provider"))
        additional_data = AdditionalDataConfig.from_table(table.table("additional_data"))
        max_duration = table.float("max_call_duration", 0, min=0)
        by_customer_table = table.table("max_call_duration_by_customer")
        by_customer = {
            customer: by_customer_table.float(customer, min=0)
            for customer in by_customer_table.data
        }
        by_customer_table.reject_unknown()
        caller_id = CallerIdConfig.from_table(table.table("caller_id"))
        table.reject_unknown()
        return cls(
            max_call_duration=max_duration or None,
            max_call_duration_by_customer=by_customer,
            default_next_hop=next_hop,
            nomadic_policy=policy,
            resource_priority=rp,
            notification_webhook=webhook,
            test_route=test_route,
            emergency=emergency,
            devices=devices,
            provider=provider,
            additional_data=additional_data,
            location=location,
            caller_id=caller_id,
        )


def _check_uri(table: Table, key: str, value: str) -> None:
    if not re.match(r"(?i)sips?:", value):
        raise ConfigError(table.field(key), f"expected a sip: or sips: URI, got {value!r}")
