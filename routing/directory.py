"""The routing data as the classifier and the policy read it, indexed once.

A :class:`Directory` is built from the rows of the data model (customers, sites with
their networks, subscribers, devices, emergency centres) and never changes; a reload
builds a new one and swaps the reference, so a call in progress sees one consistent
snapshot.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from routing.config import DevicePatterns
from routing.model import (
    Customer,
    DeclaredLocation,
    Device,
    DeviceKind,
    EmergencyCentre,
    Site,
    Subscriber,
    normalise_instance_id,
)
from routing.netindex import NetworkIndex
from routing.numbers import EMPTY_NUMBER_INDEX, NumberIndex, NumberRange
from routing.psap import InMemoryPsapDirectory

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Directory:
    """Indexed routing data (read-only)."""

    customers: Mapping[str, Customer]
    sites: Mapping[str, Site]
    subscribers: Mapping[str, Subscriber]
    """By SIP user name."""
    subscribers_by_e164: Mapping[str, Subscriber]
    devices_by_instance: Mapping[str, Device]
    """By normalised instance-id (:func:`routing.model.normalise_instance_id`)."""
    ua_devices: Mapping[str | None, tuple[tuple[re.Pattern[str], DeviceKind], ...]]
    """User-Agent pattern devices by bound SIP user (None: any user), in device id order."""
    networks: NetworkIndex
    psap: InMemoryPsapDirectory
    device_patterns: DevicePatterns
    declared: Mapping[str, tuple[DeclaredLocation, ...]] = field(default_factory=dict)
    """Declared locations (home offices) by the SIP user who declared them."""
    numbers: NumberIndex = EMPTY_NUMBER_INDEX
    """The customers' number ranges (routing/callerid.py)."""
    ua_cache: dict[tuple[str | None, str], tuple[DeviceKind, str]] = field(
        default_factory=dict, compare=False, repr=False
    )
    """Memo of User-Agent matching (see :func:`routing.classify.device_kind`)."""

    @classmethod
    def build(
        cls,
        *,
        customers: Iterable[Customer] = (),
        sites: Iterable[Site] = (),
        subscribers: Iterable[Subscriber] = (),
        devices: Iterable[Device] = (),
        centres: Iterable[EmergencyCentre] = (),
        device_patterns: DevicePatterns | None = None,
        declared: Iterable[DeclaredLocation] = (),
        number_ranges: Iterable[NumberRange] = (),
    ) -> Directory:
        """Indexes the data.

        Args:
            customers: customers.
            sites: sites with their networks.
            subscribers: subscribers.
            devices: known devices.
            centres: emergency centres.
            device_patterns: User-Agent patterns from the config (defaults if None).
            declared: subscribers' declared locations.
            number_ranges: the customers' number ranges.

        Returns:
            The directory.

        Raises:
            ValueError: on duplicate keys (the file importer reports these per row
                before a directory is ever built).
        """
        customer_map = _unique(customers, lambda c: c.id, "customer")
        site_list = list(sites)
        site_map = _unique(site_list, lambda s: s.id, "site")
        sub_list = list(subscribers)
        by_user = _unique(sub_list, lambda s: s.sip_user, "subscriber sip_user")
        by_e164 = _unique(sub_list, lambda s: s.e164, "subscriber e164")
        device_list = sorted(devices, key=lambda d: d.id)
        _unique(device_list, lambda d: d.id, "device")
        by_instance = _unique(
            (d for d in device_list if d.instance_id is not None),
            lambda d: normalise_instance_id(d.instance_id or ""),
            "device instance_id",
        )
        ua: dict[str | None, list[tuple[re.Pattern[str], DeviceKind]]] = {}
        for device in device_list:
            if device.user_agent_pattern is not None and device.instance_id is None:
                regex = re.compile(device.user_agent_pattern, re.IGNORECASE)
                ua.setdefault(device.sip_user, []).append((regex, device.kind))
        by_declarer: dict[str, list[DeclaredLocation]] = {}
        for location in sorted(declared, key=lambda d: d.id):
            by_declarer.setdefault(location.sip_user, []).append(location)
        return cls(
            declared={user: tuple(items) for user, items in by_declarer.items()},
            customers=customer_map,
            sites=site_map,
            subscribers=by_user,
            subscribers_by_e164=by_e164,
            devices_by_instance=by_instance,
            ua_devices={user: tuple(items) for user, items in ua.items()},
            networks=NetworkIndex.build(site_list),
            psap=InMemoryPsapDirectory.build(centres),
            device_patterns=device_patterns if device_patterns is not None else DevicePatterns(),
            numbers=NumberIndex.build(number_ranges),
        )


def _unique(items: Iterable[T], key: Callable[[T], str], what: str) -> dict[str, T]:
    result: dict[str, T] = {}
    for item in items:
        k = key(item)
        if k in result:
            raise ValueError(f"duplicate {what} {k!r}")
        result[k] = item
    return result
