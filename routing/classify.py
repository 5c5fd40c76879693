"""Who calls from where: office or nomadic.

Rules, in the order they are applied (decisions marked *):

1. The only fact about where a call comes from is the address the packet came from
   (``CallContext.source``; through a trusted edge proxy, the address the proxy
   received it from, ``CallContext.edge_proxy`` naming the proxy). Via sent-by,
   Contact host and Geolocation are claims made by the device (a private address in
   them says nothing about which office it is in, and anyone can send any
   Geolocation); they are recorded in the reason and never change the class.
2. The source is looked up in every registered site network, longest prefix first
   (:mod:`routing.netindex`).
3. * Unknown caller (no authenticated subscriber): OFFICE at the site whose
   ``office-lan`` or ``trusted-nat`` network the packet came from (a visitor's phone,
   a reset desk phone: the network says where it is, whoever it is; issue 14 item 1),
   else NOMADIC. Where several sites register that network, :func:`routing.netindex.tie_key`
   decides (a VPN pool first, the cautious reading). The call has no callback identity;
   the policy says so.
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
7. * Off-site, but in a network of one of the caller's declared locations (a home
   office, :class:`routing.model.DeclaredLocation`): OFFICE use of that declared
   address, ``basis`` DECLARED. A site network of the caller's own customer is
   tried first (being at the office beats being at home on the same address).
8. Off-site (no network, a VPN pool, or another customer's network): NOMADIC; a desk
   phone or ATA there is ``misplaced`` (it was carried away from its registered
   address, which the operator should hear about); softphones, mobile apps and
   unknown devices are plain nomadic use.

Device kind: the device record matching the Contact's ``+sip.instance`` (RFC 5626),
else a User-Agent pattern device of that subscriber or of everyone, else the
configured User-Agent patterns, else UNKNOWN. The device kind never makes a call
OFFICE: a softphone on the office LAN is at the office.
"""

from __future__ import annotations

from routing.directory import Directory
from routing.model import (
    FIXED_DEVICE_KINDS,
    Basis,
    CallClass,
    CallContext,
    Classification,
    DeclaredLocation,
    DeviceKind,
    NetworkEntry,
    NetworkKind,
    normalise_instance_id,
)


def classify_call(ctx: CallContext, directory: Directory) -> Classification:
    """Classifies a call as OFFICE (at a registered site) or NOMADIC.

    Args:
        ctx: what the gateway knows of the call.
        directory: the routing data.

    Returns:
        The classification; its ``reason`` is rendered on demand. The answer depends
        only on the data, never on the order of sites or networks in it.
    """
    kind, source, device_id = device_kind(ctx, directory)
    entries = directory.networks.lookup(ctx.source)
    subscriber = ctx.subscriber
    if subscriber is None:
        entry = entries[0] if entries else None
        on_site = entry is not None and entry.kind is not NetworkKind.VPN_POOL
        return Classification(
            call_class=CallClass.OFFICE if on_site else CallClass.NOMADIC,
            site=entry.site if on_site and entry is not None else None,
            device_kind=kind,
            basis=Basis.UNKNOWN_CALLER,
            network=entries[0] if entries else None,
            device_source=source,
            device_id=device_id,
            ctx=ctx,
        )
    entry = _pick(entries, subscriber.customer_id)
    if entry is None:
        basis = Basis.OUTSIDE
    elif entry.site.customer_id != subscriber.customer_id:
        basis = Basis.OTHER_CUSTOMER
    elif entry.kind is NetworkKind.VPN_POOL:
        basis = Basis.VPN_POOL
    else:
        return Classification(
            call_class=CallClass.OFFICE,
            site=entry.site,
            device_kind=kind,
            basis=Basis.OFFICE,
            network=entry,
            device_source=source,
            device_id=device_id,
            ctx=ctx,
        )
    declared = declared_location(ctx, directory)
    if declared is not None:
        return Classification(
            call_class=CallClass.OFFICE,
            site=None,
            device_kind=kind,
            basis=Basis.DECLARED,
            declared=declared,
            network=entry,
            device_source=source,
            device_id=device_id,
            ctx=ctx,
        )
    return Classification(
        call_class=CallClass.NOMADIC,
        site=None,
        device_kind=kind,
        misplaced=kind in FIXED_DEVICE_KINDS,
        basis=basis,
        network=entry,
        device_source=source,
        device_id=device_id,
        ctx=ctx,
    )


def declared_location(ctx: CallContext, directory: Directory) -> DeclaredLocation | None:
    """The caller's declared location whose network holds the source, longest prefix
    first (ties: location id), or None.

    Args:
        ctx: the call (its authenticated subscriber and source).
        directory: the declared locations by SIP user.

    Returns:
        The declared location, or None.
    """
    if ctx.subscriber is None:
        return None
    best: tuple[int, str] | None = None
    found: DeclaredLocation | None = None
    source = ctx.source
    if source.version == 6 and source.ipv4_mapped is not None:
        source = source.ipv4_mapped
    for declared in directory.declared.get(ctx.subscriber.sip_user, ()):
        for network in declared.networks:
            if source.version == network.version and source in network:
                key = (-network.prefixlen, declared.id)
                if best is None or key < best:
                    best, found = key, declared
    return found


def device_kind(ctx: CallContext, directory: Directory) -> tuple[DeviceKind, str, str | None]:
    """Finds the kind of the calling device.

    Args:
        ctx: the call (instance-id, User-Agent, subscriber).
        directory: device records and configured User-Agent patterns.

    Returns:
        (kind, how it was found: "instance-id", "device-pattern", "user-agent" or "",
        the matching device record's id or None).
    """
    if ctx.instance_id:
        device = directory.devices_by_instance.get(normalise_instance_id(ctx.instance_id))
        if device is not None:
            return device.kind, "instance-id", device.id
    ua = ctx.user_agent
    if not ua:
        return DeviceKind.UNKNOWN, "", None
    user = ctx.subscriber.sip_user if ctx.subscriber is not None else None
    key = (user if user in directory.ua_devices else None, ua)
    cache = directory.ua_cache
    found = cache.get(key)
    if found is None:
        found = _match_user_agent(key[0], ua, directory)
        # A memo of a pure function of (user, User-Agent); bounded so that hostile
        # User-Agent strings cannot grow it without limit.
        if len(cache) >= UA_CACHE_SIZE:
            cache.clear()
        cache[key] = found
    return found[0], found[1], None


#: Distinct (user, User-Agent) answers remembered per directory.
UA_CACHE_SIZE = 4096


def _match_user_agent(user: str | None, ua: str, directory: Directory) -> tuple[DeviceKind, str]:
    for owner in (user, None) if user is not None else (None,):
        for regex, kind in directory.ua_devices.get(owner, ()):
            if regex.search(ua):
                return kind, "device-pattern"
    configured = directory.device_patterns.match(ua)
    if configured is not None:
        return configured, "user-agent"
    return DeviceKind.UNKNOWN, "user-agent"


def _pick(entries: tuple[NetworkEntry, ...], customer_id: str) -> NetworkEntry | None:
    for entry in entries:
        if entry.site.customer_id == customer_id:
            return entry
    return entries[0] if entries else None
