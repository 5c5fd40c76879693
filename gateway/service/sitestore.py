"""Loading and storing the routing data model in PostgreSQL (tables of migration 0100).

The sites file is the whole truth: :func:`import_sites` replaces every routing row in
one transaction, so readers see either the old data or the new, never a mix, and a
failing import (a constraint, a lost connection) leaves the old data untouched.
Validation happens before, in :func:`routing.sites_file.parse_sites`; the table
constraints are a second line of defence.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import asyncpg

from cdr.db import bounded_by_connection
from routing.config import DevicePatterns
from routing.directory import Directory
from routing.model import (
    CIVIC_FIELDS,
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
)
from routing.numbers import NumberRange
from routing.sites_file import SitesData

#: Advisory lock taken by an import so two imports do not interleave their deletes.
IMPORT_LOCK_KEY = 0x766F6970_6777_0100

# Children first, so the deletes never trip a foreign key.
_TABLES = (
    "routing_declared_location_networks",
    "routing_declared_locations",
    "routing_number_ranges",
    "routing_devices",
    "routing_subscribers",
    "routing_site_networks",
    "routing_sites",
    "routing_customers",
    "routing_centre_municipalities",
    "routing_centre_postal_prefixes",
    "routing_emergency_centres",
)
_SITE_COLUMNS = ("id", "customer_id", "name", *CIVIC_FIELDS, "lang")
_DECLARED_COLUMNS = ("id", "sip_user", "name", *CIVIC_FIELDS, "lang")


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportSummary:
    """Row counts written by :func:`import_sites`."""

    customers: int
    sites: int
    networks: int
    subscribers: int
    devices: int
    centres: int
    number_ranges: int = 0


async def import_sites(conn: asyncpg.Connection, data: SitesData) -> ImportSummary:
    """Replaces all routing data with ``data`` in one transaction.

    Args:
        conn: a connection (not inside a transaction the caller wants to keep
            separate: this opens its own, or a savepoint inside the caller's).
        data: validated data from :func:`routing.sites_file.parse_sites`.

    Returns:
        How many rows of each kind were written.

    Raises:
        asyncpg.PostgresError: a constraint failed; nothing was changed.
        asyncpg.ConnectionDoesNotExistError: the connection was lost; nothing was
            changed.
    """
    # A large import is COPYs that asyncpg would leave waiting for ever if PostgreSQL
    # went in the middle (cdr.db.bounded_by_connection); no time bound: an import
    # takes what it takes.
    return await bounded_by_connection(conn, _replace_all(conn, data.sorted()), within=None)


async def _replace_all(conn: asyncpg.Connection, data: SitesData) -> ImportSummary:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", IMPORT_LOCK_KEY)
        for table in _TABLES:
            await conn.execute(f"DELETE FROM {table}")
        await conn.copy_records_to_table(
            "routing_customers",
            columns=("id", "company", "state", "language", "security_desk"),
            records=[
                (c.id, c.company, c.state.value, c.language.value, c.security_desk)
                for c in data.customers
            ],
        )
        await conn.copy_records_to_table(
            "routing_sites",
            columns=_SITE_COLUMNS,
            records=[
                (
                    s.id,
                    s.customer_id,
                    s.name,
                    *(getattr(s.address, f) for f in CIVIC_FIELDS),
                    s.address.lang,
                )
                for s in data.sites
            ],
        )
        networks = [(s.id, n.cidr, n.kind.value) for s in data.sites for n in s.networks]
        await conn.copy_records_to_table(
            "routing_site_networks", columns=("site_id", "network", "kind"), records=networks
        )
        await conn.copy_records_to_table(
            "routing_subscribers",
            columns=(
                "e164", "sip_user", "customer_id", "site_id", "presentation", "display_name",
                "state",
            ),
            records=[
                (u.e164, u.sip_user, u.customer_id, u.site_id, u.presentation.value,
                 u.display_name, u.state.value)
                for u in data.subscribers
            ],
        )  # fmt: skip
        await conn.copy_records_to_table(
            "routing_devices",
            columns=("id", "kind", "sip_user", "instance_id", "user_agent_pattern"),
            records=[
                (d.id, d.kind.value, d.sip_user, d.instance_id, d.user_agent_pattern)
                for d in data.devices
            ],
        )
        await conn.copy_records_to_table(
            "routing_emergency_centres",
            columns=("id", "name", "sip_uri", "uri_style", "secondary_id", "national_default"),
            records=[
                (e.id, e.name, e.sip_uri, e.uri_style.value, e.secondary_id, e.national_default)
                for e in data.centres
            ],
        )
        await conn.copy_records_to_table(
            "routing_centre_municipalities",
            columns=("centre_id", "municipality", "position"),
            records=[(e.id, m, i) for e in data.centres for i, m in enumerate(e.municipalities)],
        )
        await conn.copy_records_to_table(
            "routing_centre_postal_prefixes",
            columns=("centre_id", "prefix", "position"),
            records=[(e.id, p, i) for e in data.centres for i, p in enumerate(e.postal_prefixes)],
        )
        await conn.copy_records_to_table(
            "routing_declared_locations",
            columns=_DECLARED_COLUMNS,
            records=[
                (d.id, d.sip_user, d.name, *(getattr(d.address, f) for f in CIVIC_FIELDS),
                 d.address.lang)
                for d in data.declared
            ],
        )  # fmt: skip
        await conn.copy_records_to_table(
            "routing_declared_location_networks",
            columns=("location_id", "network"),
            records=[(d.id, n) for d in data.declared for n in d.networks],
        )
        await conn.copy_records_to_table(
            "routing_number_ranges",
            columns=("customer_id", "prefix", "wildcards", "roaming"),
            records=[(r.customer_id, r.prefix, r.wildcards, r.roaming) for r in data.number_ranges],
        )
        # Deferred foreign keys (centre secondaries) are checked here, inside the
        # transaction, so a failure still rolls everything back.
        await conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
    return ImportSummary(
        customers=len(data.customers),
        sites=len(data.sites),
        networks=len(networks),
        subscribers=len(data.subscribers),
        devices=len(data.devices),
        centres=len(data.centres),
        number_ranges=len(data.number_ranges),
    )


async def export_sites(conn: asyncpg.Connection) -> SitesData:
    """Reads all routing data (one consistent snapshot).

    Args:
        conn: a connection.

    Returns:
        The data in canonical order.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        customers = await conn.fetch("SELECT * FROM routing_customers ORDER BY id")
        sites = await conn.fetch("SELECT * FROM routing_sites ORDER BY id")
        networks = await conn.fetch(
            "SELECT site_id, network, kind FROM routing_site_networks ORDER BY site_id, network"
        )
        subscribers = await conn.fetch("SELECT * FROM routing_subscribers ORDER BY sip_user")
        devices = await conn.fetch("SELECT * FROM routing_devices ORDER BY id")
        centres = await conn.fetch("SELECT * FROM routing_emergency_centres ORDER BY id")
        ranges = await conn.fetch(
            "SELECT * FROM routing_number_ranges ORDER BY customer_id, prefix, wildcards"
        )
        municipalities = await conn.fetch(
            "SELECT centre_id, municipality FROM routing_centre_municipalities"
            " ORDER BY centre_id, position"
        )
        prefixes = await conn.fetch(
            "SELECT centre_id, prefix FROM routing_centre_postal_prefixes"
            " ORDER BY centre_id, position"
        )
        declared = await conn.fetch("SELECT * FROM routing_declared_locations ORDER BY id")
        declared_networks = await conn.fetch(
            "SELECT location_id, network FROM routing_declared_location_networks"
            " ORDER BY location_id, network"
        )
    nets_by_declared: dict[str, list[ipaddress.IPv4Network | ipaddress.IPv6Network]] = {}
    for r in declared_networks:
        nets_by_declared.setdefault(r["location_id"], []).append(_network(r["network"]))
    nets_by_site: dict[str, list[SiteNetwork]] = {}
    for r in networks:
        nets_by_site.setdefault(r["site_id"], []).append(
            SiteNetwork(cidr=_network(r["network"]), kind=NetworkKind(r["kind"]))
        )
    munis: dict[str, list[str]] = {}
    for r in municipalities:
        munis.setdefault(r["centre_id"], []).append(r["municipality"])
    pcs: dict[str, list[str]] = {}
    for r in prefixes:
        pcs.setdefault(r["centre_id"], []).append(r["prefix"])
    return SitesData(
        customers=tuple(
            Customer(
                id=r["id"],
                company=r["company"],
                state=CustomerState(r["state"]),
                language=Language(r["language"]),
                security_desk=r["security_desk"],
            )
            for r in customers
        ),
        sites=tuple(
            Site(
                id=r["id"],
                customer_id=r["customer_id"],
                name=r["name"],
                address=CivicAddress(**{f: r[f] for f in CIVIC_FIELDS}, lang=r["lang"]),
                networks=tuple(nets_by_site.get(r["id"], ())),
            )
            for r in sites
        ),
        subscribers=tuple(
            Subscriber(
                e164=r["e164"],
                sip_user=r["sip_user"],
                customer_id=r["customer_id"],
                site_id=r["site_id"],
                presentation=Presentation(r["presentation"]),
                display_name=r["display_name"],
                state=SubscriberState(r["state"]),
            )
            for r in subscribers
        ),
        devices=tuple(
            Device(
                id=r["id"],
                kind=DeviceKind(r["kind"]),
                sip_user=r["sip_user"],
                instance_id=r["instance_id"],
                user_agent_pattern=r["user_agent_pattern"],
            )
            for r in devices
        ),
        centres=tuple(
            EmergencyCentre(
                id=r["id"],
                name=r["name"],
                sip_uri=r["sip_uri"],
                uri_style=CentreUriStyle(r["uri_style"]),
                municipalities=tuple(munis.get(r["id"], ())),
                postal_prefixes=tuple(pcs.get(r["id"], ())),
                secondary_id=r["secondary_id"],
                national_default=r["national_default"],
            )
            for r in centres
        ),
        declared=tuple(
            DeclaredLocation(
                id=r["id"],
                sip_user=r["sip_user"],
                name=r["name"],
                address=CivicAddress(**{f: r[f] for f in CIVIC_FIELDS}, lang=r["lang"]),
                networks=tuple(nets_by_declared.get(r["id"], ())),
            )
            for r in declared
        ),
        number_ranges=tuple(
            NumberRange(
                customer_id=r["customer_id"],
                prefix=r["prefix"],
                wildcards=r["wildcards"],
                roaming=r["roaming"],
            )
            for r in ranges
        ),
    ).sorted()


async def load_directory(
    conn: asyncpg.Connection, device_patterns: DevicePatterns | None = None
) -> Directory:
    """Reads the routing data and indexes it for the classifier.

    Args:
        conn: a connection.
        device_patterns: User-Agent patterns from ``[routing.devices]``.

    Returns:
        A new :class:`Directory` (swap it in atomically on reload).
    """
    return (await export_sites(conn)).directory(device_patterns)


def _network(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    # asyncpg decodes cidr to ipaddress networks; accept text too (other codecs).
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    return ipaddress.ip_network(str(value))
