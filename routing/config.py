"""Settings of the routing layer, read from the ``[routing]`` TOML table.

Example (every key optional; these are the defaults unless marked)::

    [routing]
    default_next_hop = "sip:127.0.0.1:5080"      # required for ordinary calls
    nomadic_policy = "announce-then-route"       # or "announce-and-end", "route"
    resource_priority = "esnet.1"                # RFC 7135; "" sends none
    notification_webhook = "https://..."         # optional, told of every emergency call
    test_route = "sip:echo@127.0.0.1:5099"       # where emergency TEST calls go; optional

    [routing.emergency]
    numbers = ["112"]                            # add "911", "999" where wanted
    outside_line_prefixes = ["0", "9"]           # PBX habits: 0112 and 9112 are 112
    country_codes = ["358"]                      # tel:+358112 is 112 (see emergency.py)
    test_numbers = []                            # e.g. ["10112"]: a TEST call, not 112

    [routing.provider]                           # RFC 7852 ProviderInfo in PIDF-LO
    name = "Setera Communications Oy"
    id = "setera.fi"
    contact = "tel:+358201500800"

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

from routing.configfields import ConfigError, Table
from routing.model import DeviceKind


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
    """The operator as data provider (RFC 7852 section 4.1, in PIDF-LO provided-by)."""

    name: str = "Setera Communications Oy"
    id: str = "setera.fi"
    contact: str = "tel:+358201500800"


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
        ptable = table.table("provider")
        provider = ProviderInfo(
            name=ptable.str("name", default.provider.name),
            id=ptable.str("id", default.provider.id),
            contact=ptable.str("contact", default.provider.contact),
        )
        ptable.reject_unknown()
        caller_id = CallerIdConfig.from_table(table.table("caller_id"))
        table.reject_unknown()
        return cls(
            default_next_hop=next_hop,
            nomadic_policy=policy,
            resource_priority=rp,
            notification_webhook=webhook,
            test_route=test_route,
            emergency=emergency,
            devices=devices,
            provider=provider,
            caller_id=caller_id,
        )


def _check_uri(table: Table, key: str, value: str) -> None:
    if not re.match(r"(?i)sips?:", value):
        raise ConfigError(table.field(key), f"expected a sip: or sips: URI, got {value!r}")
