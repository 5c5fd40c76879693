"""Safeguards on the addresses the gateway sends to emergency centres (issue 14 item 5).

A centre dispatches help to the civic address in the PIDF-LO. An address without a
street, a house number, a postal code or a municipality sends responders searching;
a municipality no centre is configured for is routed by postal code or to the
national default, not to the centre that serves it. :func:`address_problems` names
what is missing for one address; :func:`sites_address_problems` goes over every site
and declared location, for ``voipgw sites check`` and the
``voipgw_site_address_problems`` gauge (Prometheus alert ``VoipgwSiteAddressIncomplete``).
These are warnings, never refusals: an incomplete address is still better than none,
and refusing a sites file over it would keep a correct one out too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from routing.model import CivicAddress, DeclaredLocation, Site
from routing.psap import normalise_municipality


class AddressProblem(StrEnum):
    """What an address lacks for a centre (label ``problem`` of the gauge)."""

    MISSING_STREET = "missing-street"
    """No ``RD`` (RFC 5139 road)."""
    MISSING_HOUSE_NUMBER = "missing-house-number"
    """No ``HNO``."""
    MISSING_POSTAL_CODE = "missing-postal-code"
    """No ``PC``."""
    MISSING_MUNICIPALITY = "missing-municipality"
    """No ``A3`` (the municipality: the key of Finnish centre areas)."""
    UNKNOWN_MUNICIPALITY = "unknown-municipality"
    """An ``A3`` no configured centre serves."""


#: Each problem as the RFC 5139 element a reader should fill in.
ELEMENT_OF: Mapping[AddressProblem, str] = {
    AddressProblem.MISSING_STREET: "RD",
    AddressProblem.MISSING_HOUSE_NUMBER: "HNO",
    AddressProblem.MISSING_POSTAL_CODE: "PC",
    AddressProblem.MISSING_MUNICIPALITY: "A3",
    AddressProblem.UNKNOWN_MUNICIPALITY: "A3",
}


def address_problems(
    address: CivicAddress, municipalities: Mapping[str, str]
) -> tuple[AddressProblem, ...]:
    """What ``address`` lacks for a centre.

    Args:
        address: the civic address.
        municipalities: centre id by normalised municipality (the PSAP directory's).

    Returns:
        The problems, in :class:`AddressProblem` order (empty: complete).
    """
    problems = []
    if not address.rd.strip():
        problems.append(AddressProblem.MISSING_STREET)
    if not address.hno.strip():
        problems.append(AddressProblem.MISSING_HOUSE_NUMBER)
    if not address.pc.strip():
        problems.append(AddressProblem.MISSING_POSTAL_CODE)
    if not address.a3.strip():
        problems.append(AddressProblem.MISSING_MUNICIPALITY)
    elif normalise_municipality(address.a3) not in municipalities:
        problems.append(AddressProblem.UNKNOWN_MUNICIPALITY)
    return tuple(problems)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaceProblems:
    """The problems of one site or declared location's address."""

    kind: str
    """"site" or "declared location"."""
    id: str
    address: CivicAddress
    problems: tuple[AddressProblem, ...]

    def describe(self) -> str:
        """One line: "site setera-espoo: missing-house-number (HNO), ..."."""
        what = ", ".join(f"{p.value} ({ELEMENT_OF[p]})" for p in self.problems)
        where = (
            f" {self.address.a3!r}" if AddressProblem.UNKNOWN_MUNICIPALITY in self.problems else ""
        )
        return f"{self.kind} {self.id}: address lacks what a centre needs: {what}{where}"


def sites_address_problems(
    sites: Iterable[Site],
    declared: Iterable[DeclaredLocation],
    municipalities: Mapping[str, str],
) -> list[PlaceProblems]:
    """Every site and declared location whose address has a problem, in id order."""
    places = [("site", s.id, s.address) for s in sites]
    places += [("declared location", d.id, d.address) for d in declared]
    found = []
    for kind, place_id, address in sorted(places, key=lambda p: (p[0] != "site", p[1])):
        problems = address_problems(address, municipalities)
        if problems:
            found.append(PlaceProblems(kind=kind, id=place_id, address=address, problems=problems))
    return found


def problem_counts(found: Iterable[PlaceProblems]) -> dict[AddressProblem, int]:
    """How many places have each problem (every problem present, 0 when none has it)."""
    counts = dict.fromkeys(AddressProblem, 0)
    for place in found:
        for problem in place.problems:
            counts[problem] += 1
    return counts
