"""Who calls from where: office or nomadic.

Rules, in the order they are applied (decisions marked *):

1. The only fact about where a call comes from is the address the packet came from
   (``CallContext.source``). Via sent-by, Contact host and Geolocation are claims made
   by the device (a private address in them says nothing about which office it is in,
   and anyone can send any Geolocation); they are recorded in the reason and never
   change the class.
2. The source is looked up in every registered site network, longest prefix first
   (:mod:`routing.netindex`).
3. Unknown caller (no authenticated subscriber): NOMADIC, no site.
4. * The call is OFFICE only when the matched network is an ``office-lan`` or
   ``trusted-nat`` network of a site that belongs to the caller's own customer. A
   network of another customer does not make the call OFFICE: network ranges are
   asserted by each customer for its own users only, the contract's "registered
   office address" is the caller's customer's, and honouring another customer's data
   would let one customer's (possibly wrong) provisioning place another's calls.
   When several entries are registered for the same longest network, one of the
   caller's customer is preferred, then :func:`routing.netindex.tie_key` order.
5. * A caller of the customer at *another* site of the same customer (a visitor from
   the Helsinki office in Espoo) is OFFICE at the site whose network the call came
   from: that is where the caller is.
6. A ``vpn-pool`` network is never on-site: the VPN client can be anywhere.
7. Off-site (no network, a VPN pool, or another customer's network): NOMADIC; a desk
   phone or ATA there is ``misplaced`` (it was carried away from its registered
   address, which the operator should hear about); softphones, mobile apps and
   unknown devices are plain nomadic use.

Device kind: the device record matching the Contact's ``+sip.instance`` (RFC 5626),
else a User-Agent pattern device of that subscriber or of everyone, else the
configured User-Agent patterns, else UNKNOWN. The device kind never makes a call
OFFICE: a softphone on the office LAN is at the office.
"""

from __future__ import annotations

import ipaddress

from routing.directory import Directory
from routing.model import (
    FIXED_DEVICE_KINDS,
    CallClass,
    CallContext,
    Classification,
    DeviceKind,
    NetworkKind,
    normalise_instance_id,
)
from routing.netindex import NetworkEntry


def classify_call(ctx: CallContext, directory: Directory) -> Classification:
    """Classifies a call as OFFICE (at a registered site) or NOMADIC.

    Args:
        ctx: what the gateway knows of the call.
        directory: the routing data.

    Returns:
        The classification with a human-readable reason. The answer depends only on
        the data, never on the order of sites or networks in it.
    """
    kind, kind_why = device_kind(ctx, directory)
    entries = directory.networks.lookup(ctx.source)
    subscriber = ctx.subscriber
    claims = _claims(ctx)
    if subscriber is None:
        where = _describe(ctx, entries[0]) if entries else _outside(ctx)
        return Classification(
            call_class=CallClass.NOMADIC,
            site=None,
            device_kind=kind,
            reason=f"unknown caller; {where}; {kind_why}{claims}",
        )
    entry = _pick(entries, subscriber.customer_id)
    if (
        entry is not None
        and entry.site.customer_id == subscriber.customer_id
        and entry.kind is not NetworkKind.VPN_POOL
    ):
        site = entry.site
        visiting = ""
        if subscriber.site_id is not None and subscriber.site_id != site.id:
            visiting = f" (visiting; home site {subscriber.site_id})"
        return Classification(
            call_class=CallClass.OFFICE,
            site=site,
            device_kind=kind,
            reason=f"{_describe(ctx, entry)}{visiting}; {kind_why}{claims}",
        )
    if entry is None:
        where = _outside(ctx)
    elif entry.kind is NetworkKind.VPN_POOL:
        where = f"{_describe(ctx, entry)}, a VPN pool is not on-site"
    else:
        where = f"{_describe(ctx, entry)}, not the caller's customer {subscriber.customer_id}"
    misplaced = kind in FIXED_DEVICE_KINDS
    what = f"{kind.value} outside its sites (misplaced)" if misplaced else "nomadic use"
    return Classification(
        call_class=CallClass.NOMADIC,
        site=None,
        device_kind=kind,
        misplaced=misplaced,
        reason=f"{what}; {where}; {kind_why}{claims}",
    )


def device_kind(ctx: CallContext, directory: Directory) -> tuple[DeviceKind, str]:
    """Finds the kind of the calling device.

    Args:
        ctx: the call (instance-id, User-Agent, subscriber).
        directory: device records and configured User-Agent patterns.

    Returns:
        The kind and a short account of how it was found.
    """
    if ctx.instance_id:
        device = directory.devices_by_instance.get(normalise_instance_id(ctx.instance_id))
        if device is not None:
            return device.kind, f"{device.kind.value} by instance-id (device {device.id})"
    ua = ctx.user_agent
    if ua:
        user = ctx.subscriber.sip_user if ctx.subscriber is not None else None
        for owner in (user, None) if user is not None else (None,):
            for regex, kind in directory.ua_devices.get(owner, ()):
                if regex.search(ua):
                    return kind, f"{kind.value} by device pattern for User-Agent {_show(ua)}"
        found = directory.device_patterns.match(ua)
        if found is not None:
            return found, f"{found.value} by User-Agent {_show(ua)}"
        return DeviceKind.UNKNOWN, f"unknown device (User-Agent {_show(ua)})"
    return DeviceKind.UNKNOWN, "unknown device (no User-Agent)"


def _pick(entries: tuple[NetworkEntry, ...], customer_id: str) -> NetworkEntry | None:
    for entry in entries:
        if entry.site.customer_id == customer_id:
            return entry
    return entries[0] if entries else None


def _describe(ctx: CallContext, entry: NetworkEntry) -> str:
    site = entry.site
    return (
        f"source {ctx.source} in {entry.kind.value} {entry.network} of site {site.id}"
        f" ({site.customer_id})"
    )


def _outside(ctx: CallContext) -> str:
    return f"source {ctx.source} outside every registered site network"


def _claims(ctx: CallContext) -> str:
    """Notes the device's own claims about its location, which do not count."""
    notes = []
    claimed = [h for h in (*ctx.via_sent_by, ctx.contact_host or "") if _is_private(h)]
    if claimed:
        notes.append(f"private Via/Contact {', '.join(sorted(set(claimed)))} ignored")
    if ctx.geolocation:
        notes.append(f"device sent Geolocation {_show(ctx.geolocation[0])} (not used)")
    return "".join(f"; {n}" for n in notes)


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
