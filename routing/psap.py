"""Which emergency centre (PSAP) serves an address, and in which order to fail over.

Finland's emergency response centres (Hätäkeskus) serve areas defined by
municipality, so the municipality of the civic address (RFC 5139 ``A3``) is tried
first. The postal code is the fallback for an address without a known municipality
(or spelled in the other national language, unless both names are listed): the
longest configured prefix of the postal code wins. The order of targets is:

1. the centre serving the address (the primary),
2. the primary's secondary centre (the one that takes its calls when it is down),
3. the national default centre;

with duplicates removed. An address no centre serves (or no address: a nomadic call)
gets the national default and then the national default's secondary.

The lookups sit behind :class:`PsapDirectory` so tests can pass plain dicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from routing.model import CivicAddress, EmergencyCentre

MUNICIPALITY = "municipality"
POSTAL_CODE = "postal-code"
NATIONAL_DEFAULT = "national-default"


class PsapDirectory(Protocol):
    """Read-only view of the emergency centres and the areas they serve."""

    @property
    def centres(self) -> Mapping[str, EmergencyCentre]:
        """Centres by id."""
        ...

    @property
    def municipalities(self) -> Mapping[str, str]:
        """Centre id by municipality name normalised with :func:`normalise_municipality`."""
        ...

    @property
    def postal_prefixes(self) -> Mapping[str, str]:
        """Centre id by postal code prefix (digits, no spaces)."""
        ...

    @property
    def national_default_id(self) -> str | None:
        """Id of the national default centre, if any."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class PsapRoute:
    """The answer of :func:`lookup_psap`."""

    targets: tuple[EmergencyCentre, ...]
    """Centres to try, in order; empty only when the directory has no usable centre."""
    matched_by: str
    """"municipality", "postal-code" or "national-default"."""
    reason: str


def normalise_municipality(name: str) -> str:
    """Normalises a municipality name for comparison ("  ESPOO " -> "espoo")."""
    return " ".join(name.split()).casefold()


def normalise_postal_code(code: str) -> str:
    """Removes spaces from a postal code ("021 30" -> "02130")."""
    return "".join(code.split())


@dataclass(frozen=True, slots=True, kw_only=True)
class InMemoryPsapDirectory:
    """A :class:`PsapDirectory` held in dicts, built from a list of centres."""

    centres: Mapping[str, EmergencyCentre]
    municipalities: Mapping[str, str]
    postal_prefixes: Mapping[str, str]
    national_default_id: str | None

    @classmethod
    def build(cls, centres: Iterable[EmergencyCentre]) -> InMemoryPsapDirectory:
        """Indexes centres by the municipalities and postal prefixes they serve.

        Args:
            centres: the centres, in any order.

        Returns:
            The directory.

        Raises:
            ValueError: on a duplicate id, an area claimed by two centres, more than
                one national default, or a secondary that does not exist; any of
                these would make the answer depend on input order.
        """
        by_id: dict[str, EmergencyCentre] = {}
        municipalities: dict[str, str] = {}
        postal: dict[str, str] = {}
        default_id: str | None = None
        for centre in sorted(centres, key=lambda c: c.id):
            if centre.id in by_id:
                raise ValueError(f"emergency centre {centre.id!r} is listed twice")
            by_id[centre.id] = centre
            for name in centre.municipalities:
                key = normalise_municipality(name)
                if (other := municipalities.setdefault(key, centre.id)) != centre.id:
                    raise ValueError(
                        f"municipality {name!r} is served by {other!r} and {centre.id!r}"
                    )
            for prefix in centre.postal_prefixes:
                key = normalise_postal_code(prefix)
                if (other := postal.setdefault(key, centre.id)) != centre.id:
                    raise ValueError(
                        f"postal prefix {prefix!r} is served by {other!r} and {centre.id!r}"
                    )
            if centre.national_default:
                if default_id is not None:
                    raise ValueError(f"national default is both {default_id!r} and {centre.id!r}")
                default_id = centre.id
        for centre in by_id.values():
            if centre.secondary_id is not None and centre.secondary_id not in by_id:
                raise ValueError(
                    f"emergency centre {centre.id!r}: secondary {centre.secondary_id!r} is unknown"
                )
        return cls(
            centres=by_id,
            municipalities=municipalities,
            postal_prefixes=postal,
            national_default_id=default_id,
        )


def lookup_psap(address: CivicAddress | None, directory: PsapDirectory) -> PsapRoute:
    """Finds the centres for an address, in failover order.

    Args:
        address: the registered civic address of the caller's site, or None when the
            caller's location is unknown (nomadic).
        directory: the centres and their areas.

    Returns:
        The centres to try and how the first one was chosen.
    """
    centres = directory.centres
    primary_id: str | None = None
    matched_by = NATIONAL_DEFAULT
    why = "no address" if address is None else f"no centre serves {address.one_line()!r}"
    if address is not None:
        municipality = normalise_municipality(address.a3)
        if municipality and (cid := directory.municipalities.get(municipality)) is not None:
            primary_id, matched_by, why = cid, MUNICIPALITY, f"municipality {address.a3!r}"
        else:
            code = normalise_postal_code(address.pc)
            for end in range(len(code), 0, -1):
                if (cid := directory.postal_prefixes.get(code[:end])) is not None:
                    primary_id, matched_by = cid, POSTAL_CODE
                    why = f"postal code {address.pc!r} (prefix {code[:end]!r})"
                    break
    chain: list[str | None] = []
    if primary_id is not None and primary_id in centres:
        chain = [primary_id, centres[primary_id].secondary_id, directory.national_default_id]
    else:
        default_id = directory.national_default_id
        default = centres.get(default_id) if default_id is not None else None
        chain = [default_id, default.secondary_id if default is not None else None]
    seen: set[str] = set()
    targets: list[EmergencyCentre] = []
    for cid in chain:
        if cid is not None and cid not in seen and cid in centres:
            seen.add(cid)
            targets.append(centres[cid])
    if targets:
        names = " > ".join(t.id for t in targets)
        reason = (
            f"{why} -> {names}"
            if matched_by != NATIONAL_DEFAULT
            else f"{why}; national default -> {names}"
        )
    else:
        reason = f"{why}; no emergency centre configured"
    return PsapRoute(targets=tuple(targets), matched_by=matched_by, reason=reason)
