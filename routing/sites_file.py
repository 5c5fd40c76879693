"""The sites file: customers, sites, networks, subscribers, devices and emergency centres.

Two formats carry the same data; both are read row by row, every error is collected
with the line and field it concerns, and a file with any error is rejected whole
(:class:`SitesFileError` lists them all), so an import never half-applies a file.

TOML (``deploy/demo/sites.toml`` is a complete example)::

    [[customers]]
    id = "setera"                       # [A-Za-z0-9][A-Za-z0-9._-]*
    company = "Setera Communications Oy"
    state = "active"                    # active|closed|suspended|barred|fraud-locked
    language = "fi"                     # fi|sv|en
    security_desk = "sip:desk@reception.setera.example"   # optional: SIP MESSAGE per 112 call

    [[sites]]
    id = "setera-espoo"
    customer = "setera"
    name = "Espoo head office"
    networks = [{ cidr = "127.0.10.0/24", kind = "office-lan" }]   # office-lan|trusted-nat|vpn-pool
    [sites.address]                     # RFC 5139 element names; country required
    country = "FI"
    A3 = "Espoo"
    RD = "Metsänneidonkuja"
    HNO = "12"
    PC = "02130"

    [[subscribers]]
    e164 = "+358401234567"
    sip_user = "alice"
    customer = "setera"
    site = "setera-espoo"               # optional home site
    presentation = "allowed"            # allowed|restricted
    display_name = "Alice"
    state = "active"                    # active|suspended|barred|closed

    [[devices]]
    id = "alice-desk"
    kind = "desk-phone"                 # desk-phone|softphone|mobile-app|ata|unknown
    sip_user = "alice"                  # optional
    instance_id = "urn:uuid:..."        # and/or
    user_agent = "Yealink SIP-T46S"     # a regex, case-insensitive

    [[centres]]
    id = "kerava"
    name = "Hätäkeskus Kerava"
    sip_uri = "sip:112@127.0.0.1:5091"
    uri_style = "sip"                   # sip|urn
    municipalities = ["Espoo", "Esbo"]
    postal_prefixes = ["02"]
    secondary = "turku"
    national_default = false

    [[declared_locations]]              # remote work: a subscriber's home office
    id = "alice-home"
    sip_user = "alice"                  # the subscriber who declared it
    name = "Alice, home office"
    networks = ["198.51.100.7/32"]      # where her calls from there come from
    [declared_locations.address]        # as a site's address
    country = "FI"
    A3 = "Vantaa"
    RD = "Kielotie"
    HNO = "5"
    PC = "01300"

    [[numbers]]                         # number ranges a customer holds (caller ID)
    customer = "setera"
    range = "+358 9 1234 xxxx"          # a block (trailing x digits) or one number
    roaming = false                     # mobile numbers that may call from abroad

A customer with number ranges must hold every one of its subscribers' numbers in
them; ranges of different customers never overlap (routing/callerid.py relies on it).

CSV: one header row naming the columns (``record`` first), then one row per record.
``record`` is customer, site, network, subscriber, device, centre, declared,
declared-network or number; each record uses the columns named as in TOML (a network row has
``site``, ``cidr``, ``kind``; a declared-network row ``declared``, ``cidr``; site and
declared rows have the address columns ``country``, ``A1`` ... ``ADDCODE``, ``lang``); columns
that do not belong to the record must be empty. Lists are ``|``-separated and
booleans ``true``/``false``. Lines starting with ``#`` are comments.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import ipaddress
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from routing.config import DevicePatterns
from routing.directory import Directory
from routing.model import (
    CIVIC_ELEMENTS,
    E164_RE,
    CentreUriStyle,
    CivicAddress,
    Customer,
    CustomerState,
    DeclaredLocation,
    Device,
    DeviceKind,
    EmergencyCentre,
    Language,
    NetworkKind,
    Presentation,
    Site,
    SiteNetwork,
    Subscriber,
    SubscriberState,
    desk_uri_problem,
    normalise_instance_id,
)
from routing.numbers import NumberIndex, NumberRange, parse_range
from routing.psap import normalise_municipality, normalise_postal_code

E = TypeVar("E", bound=StrEnum)

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ADDRESS_KEYS = (*(name for _, name in CIVIC_ELEMENTS), "lang")
_SECTIONS = (
    "customers",
    "sites",
    "subscribers",
    "devices",
    "centres",
    "declared_locations",
    "numbers",
)
_SECTION_RECORDS = ("customer", "site", "subscriber", "device", "centre", "declared", "number")
_RECORD_COLUMNS: dict[str, tuple[str, ...]] = {
    "customer": ("id", "company", "state", "language", "security_desk"),
    "site": ("id", "customer", "name", *_ADDRESS_KEYS),
    "network": ("site", "cidr", "kind"),
    "subscriber": (
        "e164", "sip_user", "customer", "site", "presentation", "display_name", "state",
    ),
    "device": ("id", "kind", "sip_user", "instance_id", "user_agent"),
    "centre": (
        "id", "name", "sip_uri", "uri_style", "municipalities", "postal_prefixes",
        "secondary", "national_default",
    ),
    "declared": ("id", "sip_user", "name", *_ADDRESS_KEYS),
    "declared-network": ("declared", "cidr"),
    "number": ("customer", "range", "roaming"),
}  # fmt: skip
CSV_COLUMNS: tuple[str, ...] = (
    "record",
    *dict.fromkeys(c for cols in _RECORD_COLUMNS.values() for c in cols),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SitesData:
    """The whole content of a sites file (or of the database tables)."""

    customers: tuple[Customer, ...] = ()
    sites: tuple[Site, ...] = ()
    subscribers: tuple[Subscriber, ...] = ()
    devices: tuple[Device, ...] = ()
    centres: tuple[EmergencyCentre, ...] = ()
    declared: tuple[DeclaredLocation, ...] = ()
    number_ranges: tuple[NumberRange, ...] = ()
    """The numbers each customer holds (single numbers and blocks)."""

    def directory(self, device_patterns: DevicePatterns | None = None) -> Directory:
        """Builds the classifier's :class:`Directory` from this data."""
        return Directory.build(
            customers=self.customers,
            sites=self.sites,
            subscribers=self.subscribers,
            devices=self.devices,
            centres=self.centres,
            device_patterns=device_patterns,
            declared=self.declared,
            number_ranges=self.number_ranges,
        )

    def sorted(self) -> SitesData:
        """Returns the same data in a canonical order (for comparison and export)."""
        return SitesData(
            customers=tuple(sorted(self.customers, key=lambda c: c.id)),
            sites=tuple(
                dataclasses.replace(s, networks=tuple(sorted(s.networks, key=_network_key)))
                for s in sorted(self.sites, key=lambda s: s.id)
            ),
            subscribers=tuple(sorted(self.subscribers, key=lambda s: s.sip_user)),
            devices=tuple(sorted(self.devices, key=lambda d: d.id)),
            centres=tuple(sorted(self.centres, key=lambda c: c.id)),
            declared=tuple(
                dataclasses.replace(d, networks=tuple(sorted(d.networks, key=_cidr_key)))
                for d in sorted(self.declared, key=lambda d: d.id)
            ),
            number_ranges=tuple(
                sorted(self.number_ranges, key=lambda r: (r.customer_id, r.prefix, r.wildcards))
            ),
        )


def _network_key(n: SiteNetwork) -> tuple[int, int, int, str]:
    return (*_cidr_key(n.cidr), n.kind.value)


def _cidr_key(cidr: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[int, int, int]:
    return (cidr.version, int(cidr.network_address), cidr.prefixlen)


@dataclass(frozen=True, slots=True)
class RowError:
    """One problem in a sites file."""

    line: int | None
    field: str
    problem: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.field}: {self.problem}"


class SitesFileError(ValueError):
    """A sites file has errors; nothing of it may be imported.

    Attributes:
        errors: every problem found, in file order.
    """

    def __init__(self, errors: list[RowError]) -> None:
        self.errors = tuple(errors)
        head = f"{len(errors)} error(s) in sites file, nothing imported"
        super().__init__(head + "".join(f"\n  {e}" for e in errors[:50]))


class _Row:
    """Typed, error-collecting reads of one record (a TOML table or a CSV row)."""

    def __init__(
        self,
        data: Mapping[str, Any],
        path: str,
        line: int | None,
        errors: list[RowError],
        locate: Callable[[str], int | None] | None = None,
    ) -> None:
        self.locate = locate
        self.data = data
        self.path = path
        self.line = line
        self.errors = errors
        self.used: set[str] = set()

    def error(self, key: str, problem: str) -> None:
        line = self.locate(key) if self.locate is not None and key else self.line
        self.errors.append(RowError(line, f"{self.path}.{key}" if key else self.path, problem))

    def text(self, key: str, *, required: bool = False, default: str = "") -> str:
        self.used.add(key)
        value = self.data.get(key, "")
        if not isinstance(value, str):
            self.error(key, f"expected a string, got {value!r}")
            return default
        if value == "":
            if required:
                self.error(key, "required field is missing")
            return default
        return value

    def opt(self, key: str) -> str | None:
        value = self.text(key)
        return value or None

    def ident(self, key: str, *, required: bool = True) -> str:
        value = self.text(key, required=required)
        if value and not _ID_RE.fullmatch(value):
            self.error(key, f"expected an id ([A-Za-z0-9][A-Za-z0-9._-]*), got {value!r}")
        return value

    def choice(self, key: str, enum: type[E], default: E) -> E:
        value = self.text(key)
        if not value:
            return default
        try:
            return enum(value)
        except ValueError:
            self.error(key, f"expected one of {', '.join(e.value for e in enum)}, got {value!r}")
            return default

    def str_list(self, key: str) -> tuple[str, ...]:
        self.used.add(key)
        value = self.data.get(key, [])
        if isinstance(value, str):  # CSV cell
            return tuple(v.strip() for v in value.split("|") if v.strip())
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.error(key, f"expected a list of strings, got {value!r}")
            return ()
        return tuple(value)

    def flag(self, key: str) -> bool:
        self.used.add(key)
        value = self.data.get(key, False)
        if isinstance(value, str):  # CSV cell
            if value.strip().lower() in ("", "false", "no"):
                return False
            if value.strip().lower() in ("true", "yes"):
                return True
        elif isinstance(value, bool):
            return value
        self.error(key, f"expected true or false, got {value!r}")
        return False

    def reject_unknown(self, allowed: tuple[str, ...] = ()) -> None:
        for key, value in self.data.items():
            if key not in self.used and key not in allowed and value not in ("", None):
                self.error(key, "unknown field")


def parse_sites(text: str, fmt: str) -> SitesData:
    """Parses and validates a sites file.

    Args:
        text: the file content.
        fmt: "toml" or "csv".

    Returns:
        The data.

    Raises:
        SitesFileError: listing every error (line and field) when there is any.
        ValueError: for an unknown format.
    """
    if fmt == "toml":
        return _validate(_toml_records(text))
    if fmt == "csv":
        return _validate(_csv_records(text))
    raise ValueError(f"unknown sites file format {fmt!r} (expected toml or csv)")


# A record before validation: (record type, path for messages, line, fields, and a
# function giving the line of one field, when the format can tell).
_Record = tuple[str, str, int | None, Mapping[str, Any], Callable[[str], int | None] | None]


def _toml_records(text: str) -> Iterator[_Record]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise SitesFileError(
            [RowError(int(match.group(1)) if match else None, "<file>", f"not TOML: {exc}")]
        ) from None
    # tomllib does not report positions. The n-th "[[sites]]" header starts the n-th
    # site, which runs to the next "[[" header; a field's line is found by its key
    # inside that span (see _locator).
    lines = text.splitlines()
    headers: dict[str, list[int]] = {}
    starts: list[int] = []
    for number, text_line in enumerate(lines, start=1):
        if m := re.match(r"\s*\[\[\s*([A-Za-z_]+)\s*\]\]", text_line):
            headers.setdefault(m.group(1), []).append(number)
            starts.append(number)
    starts.append(len(lines) + 1)

    def span(section: str, i: int) -> tuple[int | None, int]:
        found = headers.get(section, [])
        if i >= len(found):
            return None, 0
        start = found[i]
        return start, next(n for n in starts if n > start)

    for key in doc:
        if key not in _SECTIONS:
            yield ("unknown", key, headers.get(key, [None])[0], {}, None)
    for section, record in zip(_SECTIONS, _SECTION_RECORDS, strict=True):
        items = doc.get(section, [])
        if not isinstance(items, list):
            yield ("not-a-list", section, None, {}, None)
            continue
        for i, item in enumerate(items):
            line, end = span(section, i)
            path = f"{section}[{i}]"
            locate = _locator(lines, line, end)
            if not isinstance(item, dict):
                yield ("not-a-table", path, line, {}, None)
                continue
            if record == "declared":
                yield from _toml_declared(item, path, line, locate)
                continue
            if record != "site":
                yield (record, path, line, item, locate)
                continue
            site = dict(item)
            networks = site.pop("networks", [])
            address = site.pop("address", {})
            if not isinstance(address, dict):
                yield ("not-a-table", f"{path}.address", line, {}, None)
                address = {}
            fields = {**site, **{f"address.{k}": v for k, v in address.items()}}
            yield (record, path, line, fields, locate)
            if not isinstance(networks, list):
                yield ("not-a-list", f"{path}.networks", line, {}, None)
                continue
            for j, net in enumerate(networks):
                if not isinstance(net, dict):
                    yield ("not-a-table", f"{path}.networks[{j}]", line, {}, None)
                    continue
                net_line = _locator(lines, line, end, network=j)("")
                yield (
                    "network",
                    f"{path}.networks[{j}]",
                    net_line,
                    {**net, "site": site.get("id", "")},
                    None,
                )


def _toml_declared(
    item: dict[str, Any], path: str, line: int | None, locate: Callable[[str], int | None]
) -> Iterator[_Record]:
    """A ``[[declared_locations]]`` table as a declared record and its network records."""
    fields = dict(item)
    networks = fields.pop("networks", [])
    address = fields.pop("address", {})
    if not isinstance(address, dict):
        yield ("not-a-table", f"{path}.address", line, {}, None)
        address = {}
    yield ("declared", path, line, {**fields, **{f"address.{k}": v for k, v in address.items()}},
           locate)  # fmt: skip
    if not isinstance(networks, list):
        yield ("not-a-list", f"{path}.networks", locate("networks"), {}, None)
        return
    for j, cidr in enumerate(networks):
        yield (
            "declared-network",
            f"{path}.networks[{j}]",
            locate("networks"),
            {"declared": fields.get("id", ""), "cidr": cidr},
            None,
        )


def _locator(
    lines: list[str], start: int | None, end: int, network: int | None = None
) -> Callable[[str], int | None]:
    """Finds the line of a key inside a record's span (the header line if not found)."""

    def locate(key: str) -> int | None:
        if start is None:
            return None
        if network is not None:
            # One inline table per line is the usual layout: the j-th "{ ... }" line.
            found = [
                n for n in range(start, end) if re.search(r"\{.*\b(cidr|kind)\b", lines[n - 1])
            ]
            return found[network] if network < len(found) else start
        pattern = re.compile(rf"\s*{re.escape(key.removeprefix('address.'))}\s*=")
        return next((n for n in range(start, end) if pattern.match(lines[n - 1])), start)

    return locate


def _csv_records(text: str) -> Iterator[_Record]:
    rows = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    for row in rows:
        line = rows.line_num
        if not row or (row[0].lstrip().startswith("#")) or not any(c.strip() for c in row):
            continue
        if header is None:
            header = [c.strip() for c in row]
            unknown = [c for c in header if c not in CSV_COLUMNS]
            if header[0] != "record" or unknown:
                problem = (
                    "first column must be 'record'"
                    if header[0] != "record"
                    else f"unknown column(s) {', '.join(unknown)}"
                )
                raise SitesFileError([RowError(line, "<header>", problem)])
            continue
        if len(row) > len(header):
            yield ("too-long", f"row {line}", line, {}, None)
            continue
        cells = {name: cell.strip() for name, cell in zip(header, row)}
        record = cells.pop("record", "")
        if record in ("site", "declared"):
            for key in _ADDRESS_KEYS:
                if key in cells:
                    cells[f"address.{key}"] = cells.pop(key)
        yield (record, record or "row", line, cells, None)


def _validate(records: Iterator[_Record]) -> SitesData:
    errors: list[RowError] = []
    customers: dict[str, Customer] = {}
    sites: dict[str, tuple[_Row, dict[str, Any]]] = {}
    networks: dict[str, list[tuple[SiteNetwork, _Row]]] = {}
    subscribers: list[tuple[Subscriber, _Row]] = []
    devices: list[tuple[Device, _Row]] = []
    centres: list[tuple[EmergencyCentre, _Row]] = []
    declared: list[tuple[DeclaredLocation, _Row]] = []
    declared_networks: dict[str, list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, _Row]]]
    declared_networks = {}
    ranges: list[tuple[NumberRange, _Row]] = []
    for record, path, line, data, locate in records:
        row = _Row(data, path, line, errors, locate)
        if record == "number":
            _number(row, ranges)
            continue
        handler = _HANDLERS.get(record)
        if handler is None:
            problem = {
                "unknown": "unknown section",
                "not-a-list": "expected an array of tables",
                "not-a-table": "expected a table",
                "too-long": "more cells than header columns",
            }.get(record, f"unknown record type {record!r}")
            row.error("", problem)
            continue
        handler(
            row, customers, sites, networks, subscribers, devices, centres, declared,
            declared_networks,
        )  # fmt: skip
    result = _cross_check(errors, customers, sites, networks, subscribers, devices, centres)
    result = _check_declared(result, declared, declared_networks)
    result = dataclasses.replace(
        result, number_ranges=_check_ranges(customers, subscribers, ranges)
    )
    if errors:
        raise SitesFileError(errors)
    return result


def _customer(row: _Row, customers: dict[str, Customer], *_: Any) -> None:
    cid = row.ident("id")
    company = row.text("company", required=True)
    state = row.choice("state", CustomerState, CustomerState.ACTIVE)
    language = row.choice("language", Language, Language.FI)
    desk = row.opt("security_desk")
    if desk is not None and (problem := desk_uri_problem(desk)) is not None:
        row.error("security_desk", problem)
        desk = None
    row.reject_unknown()
    if cid in customers:
        row.error("id", f"duplicate customer id {cid!r}")
    elif cid:
        customers[cid] = Customer(
            id=cid, company=company, state=state, language=language, security_desk=desk
        )


def _site(row: _Row, _c: Any, sites: dict[str, tuple[_Row, dict[str, Any]]], *_: Any) -> None:
    sid = row.ident("id")
    values: dict[str, Any] = {"customer": row.ident("customer"), "name": row.text("name")}
    address: dict[str, str] = {}
    for attr, name in CIVIC_ELEMENTS:
        address[attr] = row.text(f"address.{name}", required=name == "country")
    address["lang"] = row.text("address.lang", default="fi")
    row.reject_unknown()
    try:
        values["address"] = CivicAddress(**address)
    except ValueError as exc:
        row.error("address.country", str(exc))
    if sid in sites:
        row.error("id", f"duplicate site id {sid!r}")
    elif sid:
        sites[sid] = (row, values)


def _network(
    row: _Row, _c: Any, _s: Any, networks: dict[str, list[tuple[SiteNetwork, _Row]]], *_: Any
) -> None:
    site_id = row.ident("site")
    text = row.text("cidr", required=True)
    kind = row.choice("kind", NetworkKind, NetworkKind.OFFICE_LAN)
    if not row.data.get("kind"):
        row.error("kind", "required field is missing")
    row.reject_unknown()
    if not text:
        return
    try:
        # strict: "127.0.10.5/24" is almost certainly a typo for a /32 or the /24.
        cidr = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        row.error("cidr", f"not an IP network: {exc}")
        return
    networks.setdefault(site_id, []).append((SiteNetwork(cidr=cidr, kind=kind), row))


def _subscriber(row: _Row, *args: Any) -> None:
    subscribers: list[tuple[Subscriber, _Row]] = args[3]
    e164 = row.text("e164", required=True)
    if e164 and not E164_RE.fullmatch(e164):
        row.error("e164", f"expected E.164 ('+' and 2-15 digits), got {e164!r}")
    sip_user = row.text("sip_user", required=True)
    customer_id = row.ident("customer")
    site_id = row.ident("site", required=False) or None
    presentation = row.choice("presentation", Presentation, Presentation.ALLOWED)
    display_name = row.text("display_name")
    state = row.choice("state", SubscriberState, SubscriberState.ACTIVE)
    row.reject_unknown()
    if E164_RE.fullmatch(e164) and sip_user and customer_id:
        subscriber = Subscriber(
            e164=e164,
            sip_user=sip_user,
            customer_id=customer_id,
            site_id=site_id,
            presentation=presentation,
            display_name=display_name,
            state=state,
        )
        subscribers.append((subscriber, row))


def _device(row: _Row, *args: Any) -> None:
    devices: list[tuple[Device, _Row]] = args[4]
    did = row.ident("id")
    kind = row.choice("kind", DeviceKind, DeviceKind.UNKNOWN)
    sip_user = row.opt("sip_user")
    instance_id = row.opt("instance_id")
    pattern = row.opt("user_agent")
    row.reject_unknown()
    if instance_id is None and pattern is None:
        row.error("instance_id", "a device needs instance_id or user_agent")
        return
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            row.error("user_agent", f"bad regex: {exc}")
            return
    if did:
        devices.append(
            (
                Device(
                    id=did,
                    kind=kind,
                    sip_user=sip_user,
                    instance_id=normalise_instance_id(instance_id) if instance_id else None,
                    user_agent_pattern=pattern,
                ),
                row,
            )
        )


def _centre(row: _Row, *args: Any) -> None:
    centres: list[tuple[EmergencyCentre, _Row]] = args[5]
    cid = row.ident("id")
    name = row.text("name", required=True)
    uri = row.text("sip_uri", required=True)
    if uri and not re.match(r"(?i)sips?:", uri):
        row.error("sip_uri", f"expected a sip: or sips: URI, got {uri!r}")
    style = row.choice("uri_style", CentreUriStyle, CentreUriStyle.SIP)
    municipalities = row.str_list("municipalities")
    prefixes = row.str_list("postal_prefixes")
    for p in prefixes:
        if not normalise_postal_code(p).isalnum():
            row.error("postal_prefixes", f"expected a postal code prefix, got {p!r}")
    secondary = row.ident("secondary", required=False) or None
    default = row.flag("national_default")
    row.reject_unknown()
    if cid:
        centre = EmergencyCentre(
            id=cid,
            name=name,
            sip_uri=uri,
            uri_style=style,
            municipalities=municipalities,
            postal_prefixes=tuple(normalise_postal_code(p) for p in prefixes),
            secondary_id=secondary,
            national_default=default,
        )
        centres.append((centre, row))


def _address(row: _Row) -> CivicAddress | None:
    """The ``address.*`` fields of a site or declared row (RFC 5139 names)."""
    address: dict[str, str] = {}
    for attr, name in CIVIC_ELEMENTS:
        address[attr] = row.text(f"address.{name}", required=name == "country")
    address["lang"] = row.text("address.lang", default="fi")
    try:
        return CivicAddress(**address)
    except ValueError as exc:
        row.error("address.country", str(exc))
        return None


def _declared(row: _Row, *args: Any) -> None:
    declared: list[tuple[DeclaredLocation, _Row]] = args[6]
    did = row.ident("id")
    sip_user = row.text("sip_user", required=True)
    name = row.text("name")
    address = _address(row)
    row.reject_unknown()
    if did and sip_user and address is not None:
        location = DeclaredLocation(id=did, sip_user=sip_user, name=name, address=address)
        declared.append((location, row))


def _declared_network(row: _Row, *args: Any) -> None:
    networks: dict[str, list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, _Row]]]
    networks = args[7]
    did = row.ident("declared")
    text = row.text("cidr", required=True)
    row.reject_unknown()
    if not text:
        return
    try:
        cidr = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        row.error("cidr", f"not an IP network: {exc}")
        return
    networks.setdefault(did, []).append((cidr, row))


def _check_declared(
    data: SitesData,
    declared: list[tuple[DeclaredLocation, _Row]],
    networks: dict[str, list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, _Row]]],
) -> SitesData:
    """Declared locations: unique ids, a known subscriber, at least one network each,
    and no network declared twice (two addresses for one network: which is true?)."""
    users = {s.sip_user for s in data.subscribers}
    result: list[DeclaredLocation] = []
    seen_ids: set[str] = set()
    owner: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, str] = {}
    for location, row in declared:
        if location.id in seen_ids:
            row.error("id", f"duplicate declared location id {location.id!r}")
            continue
        seen_ids.add(location.id)
        if location.sip_user not in users:
            row.error("sip_user", f"unknown sip_user {location.sip_user!r}")
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for cidr, nrow in networks.get(location.id, []):
            other = owner.setdefault(cidr, location.id)
            if other != location.id or cidr in nets:
                nrow.error("cidr", f"network {cidr} is already declared for {other!r}")
            else:
                nets.append(cidr)
        if not nets:
            row.error("networks", "a declared location needs at least one network")
        result.append(
            DeclaredLocation(
                id=location.id,
                sip_user=location.sip_user,
                name=location.name,
                address=location.address,
                networks=tuple(nets),
            )
        )
    for did, rows in networks.items():
        if did not in seen_ids:
            for _, nrow in rows:
                nrow.error("declared", f"unknown declared location {did!r}")
    return SitesData(
        customers=data.customers,
        sites=data.sites,
        subscribers=data.subscribers,
        devices=data.devices,
        centres=data.centres,
        declared=tuple(result),
    )


_HANDLERS: dict[str, Callable[..., None]] = {
    "declared": _declared,
    "declared-network": _declared_network,
    "customer": _customer,
    "site": _site,
    "network": _network,
    "subscriber": _subscriber,
    "device": _device,
    "centre": _centre,
}


def _cross_check(
    errors: list[RowError],
    customers: dict[str, Customer],
    site_rows: dict[str, tuple[_Row, dict[str, Any]]],
    networks: dict[str, list[tuple[SiteNetwork, _Row]]],
    subscribers: list[tuple[Subscriber, _Row]],
    devices: list[tuple[Device, _Row]],
    centres: list[tuple[EmergencyCentre, _Row]],
) -> SitesData:
    """Checks references and uniqueness across records; appends to ``errors``."""
    sites: dict[str, Site] = {}
    for site_id, (row, values) in site_rows.items():
        if values["customer"] and values["customer"] not in customers:
            row.error("customer", f"unknown customer {values['customer']!r}")
        if "address" in values:
            nets: list[SiteNetwork] = []
            for net, nrow in networks.get(site_id, []):
                if net in nets:
                    nrow.error("cidr", f"network {net.cidr} {net.kind.value} listed twice")
                else:
                    nets.append(net)
            sites[site_id] = Site(
                id=site_id,
                customer_id=values["customer"],
                name=values["name"],
                address=values["address"],
                networks=tuple(nets),
            )
    for site_id, rows in networks.items():
        if site_id not in site_rows:
            for _, nrow in rows:
                nrow.error("site", f"unknown site {site_id!r}")
    by_user: dict[str, Subscriber] = {}
    by_e164: set[str] = set()
    for sub, row in subscribers:
        if sub.customer_id not in customers:
            row.error("customer", f"unknown customer {sub.customer_id!r}")
        if sub.site_id is not None:
            site = sites.get(sub.site_id)
            if sub.site_id not in site_rows:
                row.error("site", f"unknown site {sub.site_id!r}")
            elif site is not None and site.customer_id != sub.customer_id:
                row.error("site", f"site {sub.site_id!r} belongs to customer {site.customer_id!r}")
        if sub.sip_user in by_user:
            row.error("sip_user", f"duplicate sip_user {sub.sip_user!r}")
        if sub.e164 in by_e164:
            row.error("e164", f"duplicate number {sub.e164!r}")
        by_user.setdefault(sub.sip_user, sub)
        by_e164.add(sub.e164)
    device_ids: set[str] = set()
    instances: set[str] = set()
    for device, row in devices:
        if device.id in device_ids:
            row.error("id", f"duplicate device id {device.id!r}")
        if device.instance_id is not None and device.instance_id in instances:
            row.error("instance_id", f"duplicate instance_id {device.instance_id!r}")
        if device.sip_user is not None and device.sip_user not in by_user:
            row.error("sip_user", f"unknown sip_user {device.sip_user!r}")
        device_ids.add(device.id)
        if device.instance_id is not None:
            instances.add(device.instance_id)
    _check_centres(centres)
    return SitesData(
        customers=tuple(customers.values()),
        sites=tuple(sites.values()),
        subscribers=tuple(s for s, _ in subscribers),
        devices=tuple(d for d, _ in devices),
        centres=tuple(c for c, _ in centres),
    )


def _check_centres(centres: list[tuple[EmergencyCentre, _Row]]) -> None:
    ids: dict[str, EmergencyCentre] = {}
    areas: dict[tuple[str, str], str] = {}
    defaults: list[str] = []
    for centre, row in centres:
        if centre.id in ids:
            row.error("id", f"duplicate centre id {centre.id!r}")
        ids.setdefault(centre.id, centre)
        if centre.national_default:
            defaults.append(centre.id)
            if len(defaults) > 1:
                row.error("national_default", f"national default is already {defaults[0]!r}")
        for kind, values, norm in (
            ("municipalities", centre.municipalities, normalise_municipality),
            ("postal_prefixes", centre.postal_prefixes, normalise_postal_code),
        ):
            for value in values:
                owner = areas.setdefault((kind, norm(value)), centre.id)
                if owner != centre.id:
                    row.error(kind, f"{value!r} is already served by {owner!r}")
    for centre, row in centres:
        if centre.secondary_id is not None and centre.secondary_id not in ids:
            row.error("secondary", f"unknown centre {centre.secondary_id!r}")
        elif centre.secondary_id == centre.id:
            row.error("secondary", "a centre cannot be its own secondary")
    if centres and not defaults:
        _, row = centres[0]
        row.error("national_default", "one centre must be the national default")


def _number(row: _Row, ranges: list[tuple[NumberRange, _Row]]) -> None:
    customer_id = row.ident("customer")
    text = row.text("range", required=True)
    roaming = row.flag("roaming")
    row.reject_unknown()
    if not text:
        return
    try:
        prefix, wildcards = parse_range(text)
        number_range = NumberRange(
            customer_id=customer_id, prefix=prefix, wildcards=wildcards, roaming=roaming
        )
    except ValueError as exc:
        row.error("range", str(exc))
        return
    ranges.append((number_range, row))


def _check_ranges(
    customers: dict[str, Customer],
    subscribers: list[tuple[Subscriber, _Row]],
    ranges: list[tuple[NumberRange, _Row]],
) -> tuple[NumberRange, ...]:
    """Ranges name known customers and never overlap; a customer with ranges holds
    its subscribers' numbers in them, and no subscriber's number lies in another
    customer's range (the caller-ID policy asserts numbers by these ranges)."""
    accepted: list[tuple[NumberRange, _Row]] = []
    for number_range, row in ranges:
        if number_range.customer_id not in customers:
            row.error("customer", f"unknown customer {number_range.customer_id!r}")
        clash = next(((r, o) for r, o in accepted if r.overlaps(number_range)), None)
        if clash is not None:
            other, other_row = clash
            other_line = other_row.locate("range") if other_row.locate else other_row.line
            where = f" (line {other_line})" if other_line is not None else ""
            row.error(
                "range",
                f"{number_range.text} overlaps {other.text} of customer"
                f" {other.customer_id!r}{where}",
            )
            continue
        accepted.append((number_range, row))
    index = NumberIndex.build(r for r, _ in accepted)
    holding = {r.customer_id for r, _ in accepted}
    for sub, row in subscribers:
        holder = index.range_of(sub.e164)
        if holder is not None and holder.customer_id != sub.customer_id:
            row.error(
                "e164",
                f"{sub.e164} is in range {holder.text} of customer {holder.customer_id!r},"
                f" not of {sub.customer_id!r}",
            )
        elif holder is None and sub.customer_id in holding:
            row.error(
                "e164", f"{sub.e164} is outside the number ranges of customer {sub.customer_id!r}"
            )
    return tuple(r for r, _ in accepted)
