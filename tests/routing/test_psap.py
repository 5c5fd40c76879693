"""PSAP lookup: municipality, postal prefix (longest wins), national default, failover order."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from routing.model import CivicAddress, EmergencyCentre
from routing.psap import InMemoryPsapDirectory, lookup_psap
from tests.routing.data import demo_directory


def _centre(cid: str, secondary: str | None = None, default: bool = False) -> EmergencyCentre:
    return EmergencyCentre(
        id=cid,
        name=cid,
        sip_uri=f"sip:112@{cid}.example",
        secondary_id=secondary,
        national_default=default,
    )


@dataclass
class DictDirectory:
    """A PsapDirectory made of plain dicts, as the Protocol promises."""

    centres: Mapping[str, EmergencyCentre]
    municipalities: Mapping[str, str] = field(default_factory=dict)
    postal_prefixes: Mapping[str, str] = field(default_factory=dict)
    national_default_id: str | None = None


CENTRES = {
    c.id: c
    for c in (
        _centre("north", secondary="south"),
        _centre("south", secondary="north"),
        _centre("east", secondary="national"),
        _centre("national", secondary="south", default=True),
    )
}
DIRECTORY = DictDirectory(
    centres=CENTRES,
    municipalities={"espoo": "south", "oulu": "north"},
    postal_prefixes={"0": "east", "02": "south", "021": "north", "9": "north"},
    national_default_id="national",
)


def _ids(address: CivicAddress | None) -> list[str]:
    return [c.id for c in lookup_psap(address, DIRECTORY).targets]


def test_municipality_first_then_secondary_then_national_default() -> None:
    route = lookup_psap(CivicAddress(country="FI", a3="Espoo", pc="02130"), DIRECTORY)
    assert [c.id for c in route.targets] == ["south", "north", "national"]
    assert route.matched_by == "municipality"


def test_municipality_is_case_and_space_insensitive() -> None:
    assert _ids(CivicAddress(country="FI", a3="  OULU ")) == ["north", "south", "national"]


def test_postal_prefix_longest_wins() -> None:
    assert _ids(CivicAddress(country="FI", pc="02130"))[0] == "north"  # "021"
    assert _ids(CivicAddress(country="FI", pc="02600"))[0] == "south"  # "02"
    assert _ids(CivicAddress(country="FI", pc="00100"))[0] == "east"  # "0"
    assert _ids(CivicAddress(country="FI", pc="021 30"))[0] == "north"  # spaces ignored
    route = lookup_psap(CivicAddress(country="FI", a3="Nowhere", pc="02130"), DIRECTORY)
    assert route.matched_by == "postal-code"


def test_secondary_that_is_the_national_default_is_not_repeated() -> None:
    assert _ids(CivicAddress(country="FI", pc="00100")) == ["east", "national"]


def test_unserved_address_and_no_address_go_to_national_default_and_its_secondary() -> None:
    assert _ids(CivicAddress(country="FI", a3="Nowhere", pc="55555")) == ["national", "south"]
    route = lookup_psap(None, DIRECTORY)
    assert [c.id for c in route.targets] == ["national", "south"]
    assert route.matched_by == "national-default"


def test_empty_directory_gives_no_targets() -> None:
    route = lookup_psap(CivicAddress(country="FI", a3="Espoo"), DictDirectory(centres={}))
    assert route.targets == ()
    assert "no emergency centre" in route.reason


def test_demo_data_espoo_goes_to_kerava() -> None:
    directory = demo_directory()
    site = directory.sites["setera-espoo"]
    ids = [c.id for c in lookup_psap(site.address, directory.psap).targets]
    assert ids == ["kerava", "turku", "national"]
    oulu = CivicAddress(country="FI", a3="Uleåborg")
    assert [c.id for c in lookup_psap(oulu, directory.psap).targets] == [
        "oulu",
        "kuopio",
        "national",
    ]


def test_in_memory_directory_rejects_ambiguous_data() -> None:
    a = EmergencyCentre(id="a", name="a", sip_uri="sip:a", municipalities=("Espoo",))
    b = EmergencyCentre(id="b", name="b", sip_uri="sip:b", municipalities=("ESPOO",))
    with pytest.raises(ValueError, match="served by"):
        InMemoryPsapDirectory.build([a, b])
    with pytest.raises(ValueError, match="national default"):
        InMemoryPsapDirectory.build([_centre("x", default=True), _centre("y", default=True)])
    with pytest.raises(ValueError, match="secondary"):
        InMemoryPsapDirectory.build([_centre("x", secondary="missing")])
    with pytest.raises(ValueError, match="twice"):
        InMemoryPsapDirectory.build([_centre("x"), _centre("x")])
